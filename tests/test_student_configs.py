"""Every student config runs with converted ImageNet weights (issue 18), in the tests' small
setting: the original file is made here in its release's layout with random values (SegFormer
mit_b*.pth, torchvision ResNet-101, mmcv resnet101_v1c, a timm hub MobileNetV3), converted by
tools/convert_pretrained.py as the config's comment says (the timm file is used as it is), and
a DUDA step runs with the config's student on those weights; only the large pair is made tiny."""
import os
import re
import sys

import pytest
import timm
import torch
import torchvision

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from helpers import REPO, config
from test_convert_pretrained import reference, to_official
from test_convert_resnet import _randomise_
from test_convert_timm import hub_folder
from test_self_training import start_iteration

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_pretrained  # noqa: E402

SMALL = ["INPUT.CROP.SIZE", (64, 64), "DATALOADER.NUM_WORKERS", 0,
         "MODEL.DUDA.LARGE_NETWORK_OPTS", ["MODEL.MIT.VARIANT", "b0",
                                           "MODEL.SEM_SEG_HEAD.EMBED_DIM", "32"],
         "MODEL.DUDA.PRE_ADAPTATION_ITERS", 1, "MODEL.DUDA.RAMP_ITERS", 2,
         "MODEL.UDA.PSEUDO_THRESHOLD", 0.0, "MODEL.UDA.FD_RANDOM_REFERENCE", True,
         "MODEL.UDA.MIC_BLOCK_SIZE", 8, "MODEL.DEVICE", "cpu"]


def _mit(variant):
    def make(folder):
        path = os.path.join(folder, f"mit_{variant}.pth")
        torch.save({"state_dict": to_official(reference(variant))}, path)
        return path
    return make


def _torchvision_resnet101(folder):
    path = os.path.join(folder, "resnet101-cd907fc2.pth")
    torch.save(_randomise_(torchvision.models.resnet101(weights=None)).state_dict(), path)
    return path


def _mmcv_resnet101_v1c(folder):
    """mmcv's layout (``backbone.stem.{0,1,3,4,6,7}``, ``{"state_dict", "meta"}``) of a
    random timm resnet101c, the same network."""
    state = _randomise_(timm.create_model("resnet101c", pretrained=False)).state_dict()
    names = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.",
             "conv1.4.": "stem.4.", "conv1.6.": "stem.6.", "bn1.": "stem.7."}
    state = {"backbone." + next((names[p] + k[len(p):] for p in names if k.startswith(p)), k): v
             for k, v in state.items() if not k.startswith("fc.")}
    path = os.path.join(folder, "resnet101_v1c-e67eebb6.pth")
    torch.save({"state_dict": state, "meta": {}}, path)
    return path


def _timm_mobilenetv3(folder):
    return hub_folder(os.path.join(folder, "mobilenetv3_large_100.ra_in1k"))[1]


# config -> (how the original is made, converted by convert_pretrained.py?)
STUDENTS = {
    "configs/gta2cs/duda.yaml": (_mit("b0"), True),
    "configs/gta2cs/students/mit_b1.yaml": (_mit("b1"), True),
    "configs/gta2cs/students/mit_b2.yaml": (_mit("b2"), True),
    "configs/gta2cs/students/deeplabv2_r101.yaml": (_torchvision_resnet101, True),
    "configs/gta2cs/students/deeplabv2_r101_v1c.yaml": (_mmcv_resnet101_v1c, True),
    "configs/gta2cs/students/mobilenetv3.yaml": (_timm_mobilenetv3, False),
}


def _batch(n, labelled=True, size=64):
    g = torch.Generator().manual_seed(n + labelled)
    out = []
    for _ in range(n):
        d = {"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)}
        if labelled:
            d["sem_seg"] = torch.randint(0, 19, (size, size), generator=g)
        out.append(d)
    return out


def test_every_student_config_is_covered():
    folder = os.path.join(REPO, "configs/gta2cs/students")
    configs = {f"configs/gta2cs/students/{f}" for f in os.listdir(folder) if f.endswith(".yaml")}
    assert configs | {"configs/gta2cs/duda.yaml"} == set(STUDENTS)


@pytest.mark.parametrize("path", sorted(STUDENTS))
def test_student_config_runs_with_converted_imagenet_weights(path, tmp_path, capsys):
    make, convert = STUDENTS[path]
    original = make(str(tmp_path))
    text = open(os.path.join(REPO, path)).read()
    if path != "configs/gta2cs/duda.yaml":  # the base's comment is in configs/methods
        # The config's comment names the download and the command (or the hub file itself).
        assert re.search(r"https?://|github\.com|huggingface", text), path
        assert "convert_pretrained.py" in text or "huggingface-cli download" in text, path
    weights = original
    if convert:
        weights = str(tmp_path / "converted.pth")
        assert convert_pretrained.main([original, weights]) == 0
        assert "unmatched: none" in capsys.readouterr().out
    cfg = config(path, *SMALL, "MODEL.BACKBONE.WEIGHTS", weights)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    backbone = model.small_student.backbone
    loaded = (torch.load(weights, weights_only=False)["model"] if convert
              else {"body." + k: v for k, v in hub_folder_state(original).items()})
    own = backbone.state_dict()
    weights_of = [k for k in own if not k.endswith("num_batches_tracked")]
    shared = [k for k in weights_of if k in loaded]
    assert shared == weights_of  # every backbone tensor came from the file
    for key in shared:
        torch.testing.assert_close(own[key], loaded[key], rtol=0, atol=0, msg=key)

    with EventStorage(2):
        start_iteration(model, 2)  # mid-ramp: distillation from both large networks is on
        losses = model((_batch(2), _batch(2, labelled=False)))
        sum(losses.values()).backward()
    assert losses["loss_kd"] > 0 and all(torch.isfinite(v) for v in losses.values())
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def hub_folder_state(path):
    from duda_d2.modeling.backbone.mit_convert import load_state_dict_file
    return load_state_dict_file(path)
