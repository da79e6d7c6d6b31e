import glob
import os
import re

import pytest
import yaml

from detectron2.config import get_cfg

from duda_d2 import add_duda_config
from helpers import REPO, config

CONFIGS = os.path.join(REPO, "configs")
ALL_CONFIGS = sorted(os.path.relpath(p, REPO)
                     for p in glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))
# Old paths kept as one-line entries (`_BASE_:` the new file) -> the file they moved to.
MOVED = {
    **{f"configs/duda_{b}.yaml": f"configs/{b}/duda.yaml"
       for b in ("gta2cs", "syn2cs", "cs2acdc", "cs2darkzurich")},
    **{f"configs/baselines/{m}_{b}.yaml": f"configs/{b}/{m}.yaml"
       for b in ("gta2cs", "syn2cs", "cs2acdc", "cs2darkzurich")
       for m in ("self_training", "self_training_b0")},
    **{f"configs/baselines/{m}_synthetic.yaml": f"configs/synthetic/{m}.yaml"
       for m in ("self_training", "source_only", "target_oracle")},
    "configs/demo/duda_synthetic.yaml": "configs/synthetic/duda.yaml",
    "configs/demo/duda_synthetic_panoptic.yaml": "configs/synthetic_panoptic/duda.yaml",
    **{f"configs/students/{s}.yaml": f"configs/gta2cs/students/{s}.yaml"
       for s in ("mit_b1", "mit_b2", "deeplabv2_r101", "mobilenetv3")},
    "configs/Base-MiT-B5-DAFormer.yaml": "configs/networks/mit_b5_daformer.yaml",
    "configs/Base-MiT-B0-SegFormer.yaml": "configs/networks/mit_b0_segformer.yaml",
    "configs/Base-DeepLabV2-R101.yaml": "configs/networks/deeplabv2_r101.yaml",
    "configs/Base-DUDA.yaml": "configs/methods/duda.yaml",
    "configs/Base-Synthetic.yaml": "configs/synthetic/Base-SYNTHETIC.yaml",
}
REAL_CONFIGS = [p for p in ALL_CONFIGS if p not in MOVED]
ROOT = "configs/Base-Segmentation.yaml"


def _base(path: str):
    """The repository-relative file ``path`` names as ``_BASE_`` (None at the root)."""
    with open(os.path.join(REPO, path)) as f:
        base = (yaml.safe_load(f) or {}).get("_BASE_")
    if base is None:
        return None
    return os.path.relpath(os.path.normpath(os.path.join(os.path.dirname(path), base)))


def test_every_added_key_is_documented_by_a_comment():
    source = open(os.path.join(REPO, "duda_d2", "config.py")).read().splitlines()
    documented = set()
    for i, line in enumerate(source):
        key = re.match(r"cfg\.([A-Z0-9_.]+) = ", line.strip())
        if key and "= CN()" not in line:
            above = [s.strip() for s in source[max(0, i - 6):i]]
            assert any(s.startswith("#") for s in above), f"undocumented key: {line.strip()}"
            documented.add(key.group(1))

    def leaves(node, prefix=""):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]

    added = set(leaves(add_duda_config(get_cfg()))) - set(leaves(get_cfg()))
    assert added and added <= documented, sorted(added - documented)


def test_add_duda_config_is_the_composition_of_its_parts():
    from duda_d2.config import (add_distillation_config, add_network_config,
                                add_panoptic_config, add_self_training_config,
                                add_solver_config, add_uda_data_config)

    cfg = get_cfg()
    for add in (add_network_config, add_panoptic_config, add_self_training_config,
                add_distillation_config, add_uda_data_config, add_solver_config):
        assert add(cfg) is cfg
    assert cfg.dump() == add_duda_config(get_cfg()).dump()


@pytest.mark.parametrize("path", ALL_CONFIGS)
def test_every_shipped_config_loads(path):
    cfg = config(path)
    # The 19 Cityscapes classes, except the worked example of your own class list.
    own_classes = {"configs/synthetic/own_data_7_classes.yaml": 7}
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == own_classes.get(path, 19)


@pytest.mark.parametrize("path", REAL_CONFIGS)
def test_real_configs_reach_the_root_within_three_base_hops(path):
    chain = [path]
    while _base(chain[-1]) is not None:
        chain.append(_base(chain[-1]))
        assert chain[-1] not in MOVED, f"{path} composes the old entry {chain[-1]}: {chain}"
    assert chain[-1] == ROOT and len(chain) - 1 <= 3, chain


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_paths_are_one_line_entries_to_their_new_file(old, new):
    text = open(os.path.join(REPO, old)).read()
    content = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(content) == 1 and _base(old) == new, (old, content)
    assert new in text  # the comment names the new path
    assert config(old).dump() == config(new).dump()


def test_unknown_key_keeps_detectron2s_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  MIT:\n    VARIANTT: b1\n")
    cfg = add_duda_config(get_cfg())
    with pytest.raises(KeyError, match="Non-existent config key: MODEL.MIT.VARIANTT"):
        cfg.merge_from_file(str(bad))


@pytest.mark.parametrize("path", [
    "configs/gta2cs/duda.yaml", "configs/syn2cs/duda.yaml", "configs/cs2acdc/duda.yaml",
    "configs/cs2darkzurich/duda.yaml", "configs/gta2cs/self_training.yaml",
    "configs/gta2cs/self_training_b0.yaml", "configs/cs2darkzurich/self_training_b0.yaml",
    "configs/gta2cs/students/mit_b2.yaml", "configs/gta2cs/students/deeplabv2_r101.yaml",
    "configs/gta2cs/students/mobilenetv3.yaml"])
def test_paper_scale_configs_build_their_networks(path):
    import torch
    from detectron2.modeling import build_model

    # No weight files here: FD is told that its reference is random on purpose.
    cfg = config(path, "MODEL.DEVICE", "meta", "MODEL.BACKBONE.WEIGHTS", "",
                 "MODEL.DUDA.LARGE_NETWORK_OPTS", [], "MODEL.UDA.FD_RANDOM_REFERENCE", True)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "DUDA":
        large = sum(p.numel() for p in model.large_student.parameters()) / 1e6
        assert large == pytest.approx(85.2, abs=0.5)  # MiT-B5 + DAFormer head
        assert model.teacher is not model.large_student
