"""Deployment (issue 15): the ONNX export runs in ONNX Runtime with PyTorch's numbers on real
images of the synthetic benchmark, at any image size; int8 quantisation with ONNX Runtime's
tools, calibrated on target training images; the ONNX model scored by Detectron2's evaluator."""
import os
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.data.build import build_sem_seg_test_loader
from duda_d2.deploy.onnx_export import read_onnx_metadata
from duda_d2.deploy.onnx_runtime import OnnxSegmenter, OnnxSegmentorModel
from duda_d2.deploy.quantize import attention_nodes, calibration_images
from duda_d2.engine import AtomicCheckpointer
from duda_d2.evaluation import UDASemSegEvaluator
from helpers import REPO
from test_duda import CONFIG, TINY
from test_export_predict import _trained_duda

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark_deploy  # noqa: E402
import export_student  # noqa: E402

VAL, TARGET_TRAIN = "synthetic_uda_target_val", "synthetic_uda_target_train"


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    """(DUDA model, export paths): a tiny trained DUDA's student exported to ONNX at 32x64 and
    quantised to int8 on the synthetic target training images."""
    folder = tmp_path_factory.mktemp("onnx_export")
    model, weights = _trained_duda(folder)
    paths = export_student.export(os.path.join(REPO, CONFIG), weights, str(folder / "export"),
                                  size=(32, 64), opts=TINY, int8=True,
                                  calibration_images=6)
    return model, paths


def val_images(size=None):
    """The synthetic target val images (uint8 (3, H, W)), resized to ``size`` if given."""
    images = []
    for record in DatasetCatalog.get(VAL):
        image = Image.open(record["file_name"]).convert("RGB")
        if size is not None:
            image = image.resize(size[::-1], Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()))
    return images


def test_onnx_matches_pytorch_on_real_images_at_any_size(exported):
    model, paths = exported
    segmenter = OnnxSegmenter(paths["onnx"])
    images = val_images()
    assert images[0].shape[-2:] == (96, 128)  # not the 32x64 the export was traced at
    agree, total = 0, 0
    with torch.no_grad():
        for image in images:
            expected = model([{"image": image}])[0]["sem_seg"].numpy()
            got = segmenter(image[None].numpy())["sem_seg"][0]
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() < 1e-3
            agree += (got.argmax(0) == expected.argmax(0)).sum()
            total += expected[0].size
    assert agree / total >= 0.999
    # A size that is not a multiple of the network's stride: the same as the deployable module.
    deployable = export_student.deployable_network(model.inference_network(),
                                                   model.pixel_statistics[0],
                                                   model.pixel_statistics[1], False)
    image = val_images((75, 101))[0][None]
    with torch.no_grad():
        expected = deployable(image).numpy()
    got = segmenter(image.numpy())["sem_seg"]
    assert got.shape == (1, 19, 75, 101) and np.abs(got - expected).max() < 1e-3
    batch = torch.stack(val_images()[:3])  # and a batch of three
    with torch.no_grad():
        expected = deployable(batch).numpy()
    assert np.abs(segmenter(batch.numpy())["sem_seg"] - expected).max() < 1e-3


def test_onnx_file_carries_opset_metadata_and_dynamic_sizes(exported):
    _, paths = exported
    proto = onnx.load(paths["onnx"])
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    # symbolic batch, height and width
    assert dims[0].dim_param and dims[1].dim_value == 3 and dims[2].dim_param and dims[3].dim_param
    meta = read_onnx_metadata(paths["onnx"])
    assert meta["outputs"] == ["sem_seg"] and meta["dynamic_shapes"] is True
    assert meta["classes"][0] == "road" and len(meta["colors"]) == 19
    assert meta["pixel_mean"] == pytest.approx([123.675, 116.28, 103.53])


def test_int8_model_is_quantised_calibrated_on_target_train_and_close_to_fp32(exported):
    _, paths = exported
    proto = onnx.load(paths["onnx_int8"])
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # every conv / linear weight of the MiT-B0 + head
    meta = read_onnx_metadata(paths["onnx_int8"])
    assert meta["quantisation"]["calibration_images"] == 6
    assert meta["quantisation"]["method"] == "minmax" and meta["outputs"] == ["sem_seg"]
    # Attention stays in float: its Softmax and activation x activation MatMuls read no
    # dequantised tensor (quantising them was slower than fp32 on the CPU).
    # (a quantised node's output is re-quantised: it feeds a QuantizeLinear)
    quantised_outputs = {i for n in proto.graph.node if n.op_type == "QuantizeLinear"
                         for i in n.input[:1]}
    float_out = [n for n in proto.graph.node if n.op_type in ("MatMul", "Softmax")
                 and not set(n.output) & quantised_outputs]
    assert sum(n.op_type == "Softmax" for n in float_out) == 8  # one per MiT block
    assert sum(n.op_type == "MatMul" for n in float_out) == 16  # two per block
    assert meta["quantisation"]["float_nodes"] == 24
    assert len(attention_nodes(onnx.load(paths["onnx"]))) == 24  # the float graph's
    assert sum(n.op_type == "MatMul" and not set(n.output) & quantised_outputs
               for n in proto.graph.node) < sum(n.op_type == "MatMul"
                                                for n in proto.graph.node)
    assert os.path.getsize(paths["onnx_int8"]) < 0.5 * os.path.getsize(paths["onnx"])
    fp32, int8 = OnnxSegmenter(paths["onnx"]), OnnxSegmenter(paths["onnx_int8"])
    for image in val_images():
        a = fp32(image[None].numpy())["sem_seg"]
        b = int8(image[None].numpy())["sem_seg"]
        # int8 rounding error, small against the spread of the logits
        assert np.abs(a - b).mean() < 0.1 * a.std()


def test_calibration_reads_images_only(synthetic_root):
    """A target training set without label files calibrates: labels are never opened."""
    cfg = load_config(os.path.join(REPO, CONFIG), TINY)
    name = "duda_test_unlabelled_target"
    records = [{**r, "sem_seg_file_name": "/does/not/exist.png"}
               for r in DatasetCatalog.get(TARGET_TRAIN)]
    DatasetCatalog.register(name, lambda: records)
    try:
        images = list(calibration_images(cfg, name, num_images=3))
    finally:
        DatasetCatalog.remove(name)
    assert len(images) == 3 and all(i.dtype == np.uint8 and i.shape == (3, 96, 128)
                                    for i in images)


def test_onnx_models_score_as_the_pytorch_model_with_detectron2s_evaluator(exported):
    model, paths = exported
    cfg = load_config(paths["config"], ["DATALOADER.NUM_WORKERS", 0])
    loader = build_sem_seg_test_loader(cfg, VAL)
    reference = inference_on_dataset(model, loader, UDASemSegEvaluator(VAL, distributed=False))
    onnx_model = OnnxSegmentorModel(OnnxSegmenter(paths["onnx"]), model.task)
    scored = inference_on_dataset(onnx_model, loader, UDASemSegEvaluator(VAL, distributed=False))
    assert scored["sem_seg"]["mIoU"] == pytest.approx(reference["sem_seg"]["mIoU"], abs=1e-6)
    plain = build_model(cfg).eval()
    AtomicCheckpointer(plain).load(cfg.MODEL.WEIGHTS)
    assert OnnxSegmentorModel(OnnxSegmenter(paths["onnx_int8"]), plain.task)([
        {"image": val_images()[0], "height": 48, "width": 64}])[0]["sem_seg"].shape == (19, 48, 64)


def test_int8_export_needs_target_images(tmp_path, capsys, synthetic_root):
    _, weights = _trained_duda(tmp_path)
    tiny = [str(v) for v in TINY]
    common = ["--config-file", os.path.join(REPO, CONFIG), "--weights", weights,
              "--output-dir", str(tmp_path / "out"), "--int8"]
    assert export_student.main(common + ["--calibration-dataset", "no_such_set", *tiny]) == 1
    assert "'no_such_set' is not a registered data set" in capsys.readouterr().err
    assert export_student.main(common + [*tiny, "DATASETS.TARGET_TRAIN", "()"]) == 1
    assert "--calibration-dataset NAME" in capsys.readouterr().err
    assert not (tmp_path / "out" / "student_int8.onnx").exists()


def test_benchmark_deploy_prints_the_three_runtimes_side_by_side(exported, tmp_path, capsys):
    _, paths = exported
    weights = os.path.join(os.path.dirname(paths["weights"]), "..", "model_final.pth")
    assert benchmark_deploy.main([
        "--config-file", os.path.join(REPO, CONFIG), "--weights", weights, "--sizes", "64x96",
        "--runs", "2", "--warmup", "0", "--calibration-images", "4",
        "--work-dir", str(tmp_path / "bench"), *[str(v) for v in TINY]]) == 0
    out = capsys.readouterr().out
    for label in ("PyTorch eager fp32", "ONNX Runtime fp32", "ONNX Runtime int8",
                  "student_int8.onnx", f"accuracy on {VAL}", "speed-up vs eager"):
        assert label in out, label
    rows = [line for line in out.splitlines() if line.startswith("| 64x96")]
    assert len(rows) == 3 and rows[0].split("|")[-2].strip() == "1.00x"


def test_p90_and_size_parsing():
    assert benchmark_deploy.p90([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]) == \
        pytest.approx(10.0)
    assert benchmark_deploy.p90([0.5]) == 0.5
    assert benchmark_deploy.parse_size("512x1024") == (512, 1024)
    with pytest.raises(Exception, match="HEIGHTxWIDTH"):
        benchmark_deploy.parse_size("512")


def test_readmes_ten_lines_of_onnx_runtime_run_the_export(exported, tmp_path, monkeypatch):
    """README's "Deploy" snippet, as written, on the int8 export and a synthetic image."""
    import re

    _, paths = exported
    with open(os.path.join(REPO, "README.md")) as f:
        code = re.search(r"```python\n(import json\n.*?)```", f.read(), re.S).group(1)
    (tmp_path / "export").mkdir()
    os.link(paths["onnx_int8"], tmp_path / "export" / "student_int8.onnx")
    record = DatasetCatalog.get(VAL)[0]
    Image.open(record["file_name"]).save(tmp_path / "frame.png")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["logits"].shape == (1, 19, 96, 128)
    assert scope["colour"].shape == (96, 128, 3)
