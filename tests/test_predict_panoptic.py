"""tools/predict.py on a panoptic model (issue 14, item 7): Detectron2's panoptic drawing, the
class mask, the COCO panoptic PNG and panoptic.json -- by hand on a made-up segmentation, and
end to end on a tiny exported panoptic network whose data set is not registered."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from detectron2.data import MetadataCatalog
from panopticapi.utils import rgb2id

from helpers import REPO
from test_export_panoptic import (STUFF_IDS, THING_IDS, TINY_PANOPTIC,  # noqa: F401
                                  exported, register_tiny_panoptic, unregistered)

sys.path.insert(0, os.path.join(REPO, "tools"))
import predict  # noqa: E402

ROAD, SKY, PERSON, CAR = (128, 64, 128), (70, 130, 180), (220, 20, 60), (0, 0, 142)
# Panoptic-DeepLab ids (train id * 1000 + k; -1 void) in 10x10 blocks: void, road, road / car 1,
# car 1, person 2 / sky, car 1, person 2.
BLOCKS = np.array([[-1, 0, 0], [13001, 13001, 11002], [10000, 13001, 11002]])
PANOPTIC = np.kron(BLOCKS, np.ones((10, 10), dtype=np.int64))


@pytest.fixture
def writer(tmp_path):
    register_tiny_panoptic()
    metadata = predict.panoptic_visual_metadata(MetadataCatalog.get(TINY_PANOPTIC))
    return predict.PanopticWriter(metadata, str(tmp_path))


def test_writer_files_of_a_made_up_segmentation(writer, tmp_path):
    image = np.full((30, 30, 3), 200, dtype=np.uint8)
    (tmp_path / "cam").mkdir()
    writer.save(image, PANOPTIC, str(tmp_path / "cam" / "0001"))
    path = writer.finish()
    assert path == str(tmp_path / "panoptic.json")
    # COCO panoptic PNG: id = R + 256 G + 256^2 B = model id + 1 (void 0); car 1 = 13002.
    png = np.asarray(Image.open(tmp_path / "cam" / "0001_panoptic.png"))
    assert png.dtype == np.uint8 and png.shape == (30, 30, 3)
    assert png[15, 5].tolist() == [202, 50, 0]  # 13002 = 50 * 256 + 202
    assert png[0, 0].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(rgb2id(png), PANOPTIC + 1)
    # The class mask: segment class colours, void black.
    mask = np.asarray(Image.open(tmp_path / "cam" / "0001_mask.png"))
    assert [mask[y, x].tolist() for y, x in ((0, 0), (0, 15), (15, 5), (25, 25), (25, 5))] == [
        [0, 0, 0], list(ROAD), list(CAR), list(PERSON), list(SKY)]
    overlay = np.asarray(Image.open(tmp_path / "cam" / "0001_overlay.png").convert("RGB"))
    assert overlay.shape == (30, 30, 3)
    assert (overlay[0, 0] == 200).all() and not (overlay[15, 5] == 200).all()  # void not drawn
    # panoptic.json: segments with the data set's category ids (Cityscapes label ids).
    content = json.loads((tmp_path / "panoptic.json").read_text())
    (annotation,) = content["annotations"]
    assert annotation["image_id"] == "cam/0001"
    assert annotation["file_name"] == "cam/0001_panoptic.png"
    assert annotation["segments_info"] == [
        {"id": 1, "category_id": 7, "iscrowd": 0, "area": 200, "bbox": [10, 0, 20, 10]},
        {"id": 10001, "category_id": 23, "iscrowd": 0, "area": 100, "bbox": [0, 20, 10, 10]},
        {"id": 11003, "category_id": 24, "iscrowd": 0, "area": 200, "bbox": [20, 10, 10, 20]},
        {"id": 13002, "category_id": 26, "iscrowd": 0, "area": 300, "bbox": [0, 10, 20, 20]}]
    categories = {c["id"]: c for c in content["categories"]}
    assert len(categories) == 19
    assert categories[26] == {"id": 26, "name": "car", "isthing": 1, "color": list(CAR)}
    assert categories[7]["isthing"] == 0 and categories[7]["name"] == "road"


def test_visual_metadata_fills_thing_names_and_refuses_semantic_metadata():
    register_tiny_panoptic()
    source = MetadataCatalog.get("duda_test_tools_things_only")
    meta = {k: v for k, v in MetadataCatalog.get(TINY_PANOPTIC).as_dict().items()
            if k not in ("name", "thing_classes", "thing_colors")}
    if not hasattr(source, "label_divisor"):
        source.set(**meta)
    metadata = predict.panoptic_visual_metadata(source)
    assert metadata.thing_classes[13] == "car" and tuple(metadata.thing_colors[13]) == CAR
    semantic = MetadataCatalog.get("duda_test_tools_semantic_only")
    if not hasattr(semantic, "stuff_classes"):
        semantic.set(stuff_classes=["a"], stuff_colors=[(0, 0, 0)])
    with pytest.raises(ValueError, match="label_divisor"):
        predict.panoptic_visual_metadata(semantic)


def test_predict_on_a_panoptic_export_without_its_data_set(exported, tmp_path, capsys):
    _, paths = exported
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(
            images / f"{name}.png")
    out = tmp_path / "pred"
    with unregistered():
        assert predict.main(["--config-file", paths["config"], "--input", str(images),
                             "--output", str(out)]) == 0
        from duda_d2 import load_config
        predictor = predict.Predictor(predict.panoptic_setup(load_config(paths["config"]))[0])
        expected = predictor.panoptic(np.asarray(Image.open(images / "a.png")))
    assert "2 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "a_mask.png", "a_overlay.png", "a_panoptic.png", "b_mask.png", "b_overlay.png",
        "b_panoptic.png", "panoptic.json"]
    ids = rgb2id(np.asarray(Image.open(out / "a_panoptic.png")))
    np.testing.assert_array_equal(ids - 1, expected)
    assert (expected % 1000 > 0).any()  # instances were drawn and written
    annotations = json.loads((out / "panoptic.json").read_text())["annotations"]
    assert [a["file_name"] for a in annotations] == ["a_panoptic.png", "b_panoptic.png"]
    segments = annotations[0]["segments_info"]
    assert sorted(s["id"] for s in segments) == sorted(set(np.unique(ids)) - {0})
    assert sum(s["area"] for s in segments) == int((ids > 0).sum())
    dataset_id = {v: k for k, v in {**STUFF_IDS, **THING_IDS}.items()}
    assert all(s["category_id"] == dataset_id[(s["id"] - 1) // 1000] for s in segments)
