"""tools/export_student.py on a panoptic network (issue 14, item 7): the export carries the
post-processing settings and the data set's panoptic metadata, a reloaded export reproduces the
panoptic output with the training data set unregistered, and the TorchScript file returns the
three maps by name, equal to PyTorch's.

The model is a tiny MiT-B0 + SegFormer + light instance head (configs/networks/
mit_b0_segformer_panoptic.yaml over configs/Base-Segmentation.yaml) whose data set is only a
registered panoptic *metadata* (no images on disk)."""
import os
import sys

import pytest
import torch
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.data.datasets.cityscapes_classes import STUFF_CLASSES, STUFF_COLORS
from duda_d2.deploy.onnx_export import read_onnx_metadata
from duda_d2.deploy.onnx_runtime import OnnxSegmenter
from duda_d2.engine import AtomicCheckpointer
from duda_d2.modeling.inference import whole_inference
from duda_d2.modeling.tasks import PanopticTask
from helpers import REPO, config

sys.path.insert(0, os.path.join(REPO, "tools"))
import export_student  # noqa: E402
import predict  # noqa: E402

PANOPTIC_CONFIG = "configs/networks/mit_b0_segformer_panoptic.yaml"
# A panoptic metadata only (no DatasetCatalog entry, no files), as INTERFACES.md describes:
# Cityscapes label ids -> train ids, things = train ids 11..18.
TINY_PANOPTIC = "duda_test_tools_tiny_panoptic"
THING_IDS = {24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
STUFF_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
# Post-processing numbers unlike the defaults, to see them travel with the export.
SETTINGS = ["MODEL.PANOPTIC_DEEPLAB.CENTER_THRESHOLD", 0.05, "MODEL.PANOPTIC_DEEPLAB.NMS_KERNEL",
            5, "MODEL.PANOPTIC_DEEPLAB.TOP_K_INSTANCE", 6, "MODEL.PANOPTIC_DEEPLAB.STUFF_AREA", 60,
            "MODEL.PANOPTIC_DEEPLAB.STUFF_AREA_REFERENCE_SIZE", (32, 64)]
TINY = ["MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "MODEL.INS_EMBED_HEAD.ASPP_CHANNELS", 16,
        "MODEL.INS_EMBED_HEAD.CONVS_DIM", 16, "MODEL.INS_EMBED_HEAD.HEAD_CHANNELS", 8,
        "MODEL.INS_EMBED_HEAD.PROJECT_CHANNELS", [8, 8], "MODEL.BACKBONE.WEIGHTS", "",
        "DATASETS.TRAIN", (TINY_PANOPTIC,), "DATASETS.TEST", (TINY_PANOPTIC,), *SETTINGS]


def tiny_panoptic_metadata() -> dict:
    return {"stuff_classes": list(STUFF_CLASSES), "stuff_colors": list(STUFF_COLORS),
            "thing_classes": list(STUFF_CLASSES), "thing_colors": list(STUFF_COLORS),
            "thing_dataset_id_to_contiguous_id": dict(THING_IDS),
            "stuff_dataset_id_to_contiguous_id": dict(STUFF_IDS), "label_divisor": 1000,
            "ignore_label": 255, "evaluator_type": "cityscapes_panoptic_seg"}


def register_tiny_panoptic() -> None:
    metadata = MetadataCatalog.get(TINY_PANOPTIC)  # an empty entry if a lookup made one
    if not hasattr(metadata, "label_divisor"):
        metadata.set(**tiny_panoptic_metadata())


class unregistered:
    """The tiny data set's metadata removed while inside (as on a machine that only has the
    export), registered again afterwards."""

    def __enter__(self):
        MetadataCatalog.remove(TINY_PANOPTIC)

    def __exit__(self, *exc):
        register_tiny_panoptic()


def last_conv(module: torch.nn.Module, channels: int) -> torch.nn.Conv2d:
    """The last convolution of ``module`` giving ``channels`` maps (a predictor)."""
    return [m for m in module.modules()
            if isinstance(m, torch.nn.Conv2d) and m.out_channels == channels][-1]


def trained_panoptic(folder):
    """A tiny panoptic UDASegmentor with perturbed weights (so that it differs from a fresh
    initialisation) and predicts several instances, saved as ``folder/model_final.pth``."""
    register_tiny_panoptic()
    torch.manual_seed(0)
    model = build_model(config(PANOPTIC_CONFIG, *TINY, "MODEL.DEVICE", "cpu")).eval()
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(0.01 * torch.randn_like(p))
        # The centre / offset predictors start near zero (Panoptic-DeepLab's std 0.001), which
        # finds no centre above the threshold: larger weights give peaks and offsets, and a
        # bias above CENTER_THRESHOLD makes the top-k local maxima centres.
        center = last_conv(model.network.instance_head, 1)
        center.weight.normal_(0, 0.2)
        center.bias.fill_(0.1)
        last_conv(model.network.instance_head, 2).weight.normal_(0, 1.0)
    AtomicCheckpointer(model, save_dir=str(folder)).save("model_final")
    return model, str(folder / "model_final.pth")


def export(weights, output, **kw):
    return export_student.export(os.path.join(REPO, PANOPTIC_CONFIG), weights, str(output),
                                 opts=TINY, **kw)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, export paths) of a tiny panoptic network exported to ONNX and TorchScript (at
    32x64)."""
    folder = tmp_path_factory.mktemp("panoptic_export")
    model, weights = trained_panoptic(folder)
    return model, export(weights, folder / "export", size=(32, 64),
                         fmt=("onnx", "torchscript"))


def image(seed, size=(32, 64)):
    return torch.randint(0, 256, (3, *size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_the_export_carries_the_post_processing_settings_and_metadata(exported):
    _, paths = exported
    assert sorted(os.listdir(os.path.dirname(paths["weights"]))) == [
        "student.onnx", "student.pth", "student.ts", "student.yaml"]
    info = torch.load(paths["weights"], map_location="cpu", weights_only=False)["panoptic"]
    s = info["settings"]
    assert s["thing_ids"] == [11, 12, 13, 14, 15, 16, 17, 18] and s["label_divisor"] == 1000
    assert (s["center_threshold"], s["nms_kernel"], s["top_k"], s["stuff_area"],
            s["stuff_area_reference"]) == (0.05, 5, 6, 60, [32, 64])
    meta = info["metadata"]
    assert meta["thing_dataset_id_to_contiguous_id"] == THING_IDS
    assert meta["stuff_dataset_id_to_contiguous_id"] == STUFF_IDS
    assert meta["label_divisor"] == 1000 and meta["stuff_classes"][13] == "car"
    assert info["outputs"] == ["sem_seg", "center", "offset"]
    # The TorchScript file carries the same entry (a JSON round trip, keys made ints again).
    ts_info = export_student.read_torchscript_panoptic_info(paths["torchscript"])
    assert ts_info["settings"] == s
    assert ts_info["metadata"] == export_student.normalise_panoptic_info(info)["metadata"]
    # So does the ONNX file's metadata.
    onnx_info = export_student.normalise_panoptic_info(
        read_onnx_metadata(paths["onnx"])["panoptic"])
    assert onnx_info["settings"] == s and onnx_info["metadata"] == ts_info["metadata"]
    # The config keeps the task and the same numbers for Detectron2's tools.
    cfg = load_config(paths["config"])
    assert cfg.MODEL.TASK == "panoptic" and cfg.MODEL.INS_EMBED_HEAD.NAME == "LightInsEmbedHead"
    assert cfg.MODEL.PANOPTIC_DEEPLAB.TOP_K_INSTANCE == 6


def test_a_reloaded_export_gives_the_same_panoptic_output_unregistered(exported, tmp_path):
    model, paths = exported
    inputs = [{"image": image(1)}, {"image": image(2)}]
    with torch.no_grad():
        expected = model(inputs)
    pan = expected[0]["panoptic_seg"][0]
    things = pan[(pan // 1000 >= 11) & (pan % 1000 > 0)]
    # The comparison means something: instances and stuff (and the instance head's say).
    assert things.unique().numel() >= 2 and ((pan >= 0) & (pan % 1000 == 0)).any()
    with unregistered():
        cfg = load_config(paths["config"])
        with pytest.raises(ValueError, match="panoptic data set"):
            build_model(cfg)  # the training set's metadata is gone ...
        predictor = predict.Predictor(predict.panoptic_setup(cfg)[0])  # ... the export has it
        for x, want in zip(inputs, expected):
            got = predictor.outputs(x["image"].permute(1, 2, 0).numpy())
            assert torch.equal(got["panoptic_seg"][0], want["panoptic_seg"][0])
            torch.testing.assert_close(got["sem_seg"], want["sem_seg"])
        # Re-exporting the export works there too, and keeps the panoptic entry.
        again = export_student.export(paths["config"], paths["weights"], str(tmp_path / "re"),
                                      fmt="none")
        assert (export_student.read_panoptic_info(again["weights"])
                == export_student.read_panoptic_info(paths["weights"]))


def test_torchscript_returns_the_three_named_maps_equal_to_pytorch(exported):
    model, paths = exported
    scripted = torch.jit.load(paths["torchscript"])
    x = image(3)
    with torch.no_grad():
        got = scripted(x[None])
        normalised = (x.float() - model.pixel_mean) / model.pixel_std
        want = whole_inference(model.network, normalised[None])
        expected = model([{"image": x}])[0]["panoptic_seg"][0]
    assert sorted(got) == ["center", "offset", "sem_seg"]
    assert [tuple(got[k].shape) for k in ("sem_seg", "center", "offset")] == [
        (1, 19, 32, 64), (1, 1, 32, 64), (1, 2, 32, 64)]
    for name in ("sem_seg", "center", "offset"):
        torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-4)
    # Its panoptic.json is all the post-processing needs: the same panoptic ids.
    info = export_student.read_torchscript_panoptic_info(paths["torchscript"])
    task = PanopticTask(num_classes=19, settings=export_student.panoptic_settings(info))
    pan = task.postprocess({k: v[0] for k, v in got.items()}, (32, 64), 32, 64)["panoptic_seg"]
    assert torch.equal(pan[0], expected)


def test_onnx_runtime_gives_the_three_maps_and_the_same_panoptic_ids(exported):
    model, paths = exported
    segmenter = OnnxSegmenter(paths["onnx"])
    assert segmenter.output_names == ["sem_seg", "center", "offset"]
    x = image(5, size=(64, 96))  # not the TorchScript trace's size; no padding in the model
    with torch.no_grad():
        normalised = (x.float() - model.pixel_mean) / model.pixel_std
        want = whole_inference(model.network, normalised[None])
        expected = model([{"image": x}])[0]["panoptic_seg"][0]
    got = {k: torch.from_numpy(v) for k, v in segmenter(x[None].numpy()).items()}
    for name in ("sem_seg", "center", "offset"):
        torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-4)
    info = export_student.normalise_panoptic_info(segmenter.metadata["panoptic"])
    task = PanopticTask(num_classes=19, settings=export_student.panoptic_settings(info))
    pan = task.postprocess({k: v[0] for k, v in got.items()}, (64, 96), 64, 96)["panoptic_seg"]
    assert torch.equal(pan[0], expected)


def test_both_students_of_panoptic_duda_export_with_their_instance_heads(tmp_path):
    """The small student (light instance head) and the large one (DAFormer instance head) of
    a tiny panoptic DUDA export as plain panoptic segmentors giving DUDA's own output."""
    duda_config = "configs/synthetic_panoptic/duda.yaml"
    large = ["MODEL.MIT.VARIANT", "b0", "MODEL.SEM_SEG_HEAD.FUSION", "conv1x1",
             "MODEL.INS_EMBED_HEAD.FUSION", "conv1x1", "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16,
             "MODEL.INS_EMBED_HEAD.EMBED_DIM", 16]
    opts = [*TINY, "DATASETS.SOURCE_TRAIN", (TINY_PANOPTIC,), "DATASETS.TARGET_TRAIN",
            (TINY_PANOPTIC,), "MODEL.DUDA.LARGE_NETWORK_OPTS", large]
    register_tiny_panoptic()
    duda = build_model(config(duda_config, *opts, "MODEL.DEVICE", "cpu")).eval()
    AtomicCheckpointer(duda, save_dir=str(tmp_path)).save("model_final")
    x = image(4)
    for network, head in (("small_student", "LightInsEmbedHead"),
                          ("large_student", "DAFormerInsEmbedHead")):
        paths = export_student.export(os.path.join(REPO, duda_config),
                                      str(tmp_path / "model_final.pth"), str(tmp_path / network),
                                      network=network, fmt="none", opts=opts)
        cfg = load_config(paths["config"])
        assert cfg.MODEL.META_ARCHITECTURE == "UDASegmentor"
        assert cfg.MODEL.INS_EMBED_HEAD.NAME == head
        assert export_student.read_panoptic_info(paths["weights"])["settings"]["top_k"] == 6
        with unregistered():
            plain = predict.Predictor(predict.panoptic_setup(cfg)[0]).model
        duda.distillation.settings.inference_network = network
        with torch.no_grad():
            assert torch.equal(plain([{"image": x}])[0]["panoptic_seg"][0],
                               duda([{"image": x}])[0]["panoptic_seg"][0])
    # predict.py also takes the training run's config and checkpoint (no export): the
    # registered data set's metadata then.
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(tmp_path / "x.png")
    assert predict.main(["--config-file", os.path.join(REPO, duda_config), "--input",
                         str(tmp_path / "x.png"), "--output", str(tmp_path / "pred"),
                         *map(str, opts), "MODEL.WEIGHTS", str(tmp_path / "model_final.pth"),
                         "MODEL.DEVICE", "cpu"]) == 0
    assert (tmp_path / "pred" / "x_panoptic.png").is_file()


def test_a_semantic_export_has_no_panoptic_entry(tmp_path):
    semantic = "configs/networks/mit_b0_segformer.yaml"
    opts = ["MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "MODEL.BACKBONE.WEIGHTS", ""]
    model = build_model(config(semantic, *opts, "MODEL.DEVICE", "cpu"))
    AtomicCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    paths = export_student.export(os.path.join(REPO, semantic), str(tmp_path / "model_final.pth"),
                                  str(tmp_path / "export"), fmt="none", opts=opts)
    assert sorted(torch.load(paths["weights"], weights_only=False)) == ["model"]
    assert export_student.read_panoptic_info(paths["weights"]) is None
