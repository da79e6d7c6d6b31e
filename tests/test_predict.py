"""tools/predict.py on folders of images (issue 13, item 8), and the permissions of exported
files (item 9), with a tiny exported DUDA student."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

from detectron2.modeling import build_model

from duda_d2.engine import AtomicCheckpointer
from helpers import REPO, config
from test_duda import CONFIG, TINY

sys.path.insert(0, os.path.join(REPO, "tools"))
import export_student  # noqa: E402
import predict  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The small student of a tiny DUDA checkpoint, exported under umask 0022: its folder."""
    folder = tmp_path_factory.mktemp("export")
    model = build_model(config(CONFIG, *TINY, "MODEL.DEVICE", "cpu")).eval()
    AtomicCheckpointer(model, save_dir=str(folder)).save("model_final")
    old = os.umask(0o022)
    try:
        export_student.export(os.path.join(REPO, CONFIG), str(folder / "model_final.pth"),
                              str(folder / "export"), size=(32, 64), opts=TINY)
    finally:
        os.umask(old)
    return folder / "export"


def test_exported_files_are_readable_by_other_users(exported):
    names = sorted(os.listdir(exported))
    assert names == ["student.onnx", "student.pth", "student.yaml"]
    for name in names:
        assert (exported / name).stat().st_mode & 0o777 == 0o644, name


def _image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (30, 40, 3), dtype=np.uint8)
                    ).save(path)


def _predict(exported, *inputs, output):
    return predict.main(["--config-file", str(exported / "student.yaml"), "--input",
                         *map(str, inputs), "--output", str(output)])


def test_predict_keeps_the_folder_structure_of_its_inputs(exported, tmp_path, capsys):
    images = tmp_path / "images"
    _image(images / "cam1" / "0001.png", 1)
    _image(images / "cam2" / "0001.png", 2)
    _image(images / "top.png", 3)
    out = tmp_path / "pred"
    assert _predict(exported, images, output=out) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "cam1/0001_mask.png", "cam1/0001_overlay.png", "cam2/0001_mask.png",
        "cam2/0001_overlay.png", "top_mask.png", "top_overlay.png"]
    assert not np.array_equal(np.asarray(Image.open(out / "cam1" / "0001_overlay.png")),
                              np.asarray(Image.open(out / "cam2" / "0001_overlay.png")))
    assert "3 images" in capsys.readouterr().out

    # Two folders named on the command line keep their names below the output folder.
    out = tmp_path / "two"
    assert _predict(exported, images / "cam1", images / "cam2", output=out) == 0
    assert (out / "cam1" / "0001_mask.png").is_file() and (out / "cam2" / "0001_mask.png").is_file()


def test_predict_keeps_images_that_differ_only_in_their_extension_apart(exported, tmp_path):
    images = tmp_path / "images"
    _image(images / "0001.png", 1)
    _image(images / "0001.jpg", 2)
    out = tmp_path / "pred"
    assert _predict(exported, images, output=out) == 0
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["0001.jpg_mask.png",
                                                              "0001.png_mask.png"]


def test_an_unreadable_image_is_reported_and_skipped(exported, tmp_path, capsys):
    images = tmp_path / "images"
    _image(images / "a.png", 1)
    (images / "broken.png").write_bytes(b"")
    (images / "noise.jpg").write_bytes(os.urandom(300))
    _image(images / "z.png", 2)
    out = tmp_path / "pred"
    assert _predict(exported, images, output=out) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "noise.jpg" in captured.err
    assert "2 images" in captured.out and "2 failed" in captured.out
    assert (out / "a_mask.png").is_file() and (out / "z_mask.png").is_file()
    assert not (out / "broken_mask.png").exists()
