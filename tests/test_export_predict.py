"""tools/export_student.py and tools/predict.py on a tiny DUDA model."""
import os
import sys

import numpy as np
import torch
from PIL import Image

from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.engine import AtomicCheckpointer
from helpers import REPO, config
from test_duda import CONFIG, TINY

sys.path.insert(0, os.path.join(REPO, "tools"))
import export_student  # noqa: E402
import predict  # noqa: E402


def _trained_duda(tmp_path):
    cfg = config(CONFIG, *TINY, "MODEL.DEVICE", "cpu")
    model = build_model(cfg).eval()
    with torch.no_grad():  # make the small student differ from a fresh initialisation
        for p in model.small_student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    AtomicCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    return model, str(tmp_path / "model_final.pth")


def test_exported_student_loads_as_a_plain_segmentor_and_as_torchscript(tmp_path):
    duda, weights = _trained_duda(tmp_path)
    paths = export_student.export(os.path.join(REPO, CONFIG), weights, str(tmp_path / "export"),
                                  size=(32, 64), opts=TINY, fmt="torchscript")
    plain_cfg = load_config(paths["config"])
    assert plain_cfg.MODEL.META_ARCHITECTURE == "UDASegmentor"
    plain = build_model(plain_cfg).eval()
    AtomicCheckpointer(plain).load(plain_cfg.MODEL.WEIGHTS)
    image = torch.randint(0, 256, (3, 32, 64), dtype=torch.uint8)  # no padding needed
    with torch.no_grad():
        expected = duda([{"image": image}])[0]["sem_seg"]
        torch.testing.assert_close(plain([{"image": image}])[0]["sem_seg"], expected)
        scripted = torch.jit.load(paths["torchscript"])
        torch.testing.assert_close(scripted(image[None])[0], expected, atol=1e-4, rtol=1e-4)
    # The large student exports with the large network's description.
    large = export_student.export(os.path.join(REPO, CONFIG), weights, str(tmp_path / "large"),
                                  network="large_student", fmt="none", opts=TINY)
    large_cfg = load_config(large["config"])
    assert large_cfg.MODEL.SEM_SEG_HEAD.NAME == "DAFormerHead"
    large_model = build_model(large_cfg).eval()
    AtomicCheckpointer(large_model).load(large_cfg.MODEL.WEIGHTS)
    with torch.no_grad():
        duda.distillation.settings.inference_network = "large_student"
        torch.testing.assert_close(large_model([{"image": image}])[0]["sem_seg"],
                                   duda([{"image": image}])[0]["sem_seg"])


def test_predict_writes_masks_and_overlays(tmp_path):
    _, weights = _trained_duda(tmp_path)
    paths = export_student.export(os.path.join(REPO, CONFIG), weights, str(tmp_path / "export"),
                                  fmt="none", opts=TINY)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8)
                        ).save(images / f"frame{i}.png")
    out = tmp_path / "pred"
    assert predict.main(["--config-file", paths["config"], "--input", str(images),
                         "--output", str(out)]) == 0
    mask = np.asarray(Image.open(out / "frame0_mask.png"))
    assert mask.shape == (30, 40, 3)
    palette = {tuple(c) for c in np.array(predict.cityscapes_sem_seg_metadata()["stuff_colors"])}
    assert {tuple(p) for p in mask.reshape(-1, 3)} <= palette
    assert (out / "frame1_overlay.png").is_file()


def test_export_needs_no_file_that_the_checkpoint_replaces(tmp_path):
    """The large pair's starting point (MODEL.DUDA.LARGE_NETWORK_WEIGHTS) and ImageNet weights
    are overwritten by the trained checkpoint: an export works where those files are gone."""
    _, weights = _trained_duda(tmp_path)
    gone = ["MODEL.DUDA.LARGE_NETWORK_WEIGHTS", str(tmp_path / "moved" / "daformer.pth"),
            "MODEL.BACKBONE.WEIGHTS", str(tmp_path / "moved" / "mit_b0.pth")]
    paths = export_student.export(os.path.join(REPO, CONFIG), weights, str(tmp_path / "out"),
                                  network="large_student", fmt="none", opts=[*TINY, *gone])
    assert os.path.isfile(paths["weights"])
