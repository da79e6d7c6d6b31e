import glob
import os

import pytest

from detectron2.config import get_cfg

from duda_d2 import add_duda_config
from helpers import REPO, config


def test_every_added_key_is_documented_by_a_comment():
    text = open(os.path.join(REPO, "duda_d2", "config.py")).read()
    source = text[text.index("def add_duda_config"):text.index("def load_config")].splitlines()
    for i, line in enumerate(source):
        stripped = line.strip()
        if stripped.startswith("cfg.") and "= CN()" not in stripped:
            above = [s.strip() for s in source[max(0, i - 6):i]]
            assert any(s.startswith("#") for s in above), f"undocumented key: {stripped}"


@pytest.mark.parametrize("path", sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"),
                                                 recursive=True)))
def test_every_shipped_config_loads(path):
    cfg = config(path)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 19


def test_unknown_key_keeps_detectron2s_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  MIT:\n    VARIANTT: b1\n")
    cfg = add_duda_config(get_cfg())
    with pytest.raises(KeyError, match="Non-existent config key: MODEL.MIT.VARIANTT"):
        cfg.merge_from_file(str(bad))


@pytest.mark.parametrize("path", [
    "configs/duda_gta2cs.yaml", "configs/duda_syn2cs.yaml", "configs/duda_cs2acdc.yaml",
    "configs/duda_cs2darkzurich.yaml", "configs/baselines/self_training_gta2cs.yaml",
    "configs/baselines/self_training_b0_gta2cs.yaml",
    "configs/baselines/self_training_b0_cs2darkzurich.yaml", "configs/students/mit_b2.yaml", "configs/students/deeplabv2_r101.yaml",
    "configs/students/mobilenetv3.yaml"])
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
