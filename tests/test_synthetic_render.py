"""Tests of the synthetic "game -> real" scene generator and of datasets/prepare_synthetic.py."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


from helpers import load_dataset_script  # noqa: E402

prepare = load_dataset_script("prepare_synthetic")
from duda_d2.prep import synthetic_scene_renderer as render  # noqa: E402
render_scene, render_layout = render.render_scene, render.render_layout
ALLOWED = set(render.SYNTHETIC_CLASSES) | {255}
TINY = dict(num_source=3, num_target=2, num_val=2, height=48, width=64)


# ------------------------------------------------------------------------------- renderer
def test_render_is_deterministic():
    for style in render.STYLES:
        image_a, label_a = render_scene(7, style)
        image_b, label_b = render_scene(7, style)
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(label_a, label_b)


def test_output_shapes_and_types():
    image, label = render_scene(1, "target", height=64, width=80, strength=0.3)
    assert image.shape == (64, 80, 3) and image.dtype == np.uint8
    assert label.shape == (64, 80) and label.dtype == np.uint8


def test_layout_is_shared_between_styles_and_strengths():
    for seed in range(5):
        _, source_label = render_scene(seed, "source")
        for strength in (0.0, 0.65, 1.0):
            _, target_label = render_scene(seed, "target", strength=strength)
            np.testing.assert_array_equal(source_label, target_label)


def test_layout_depends_on_seed():
    labels = [render_scene(seed, "source")[1] for seed in range(4)]
    assert all(not np.array_equal(labels[0], other) for other in labels[1:])


def test_styles_differ_substantially():
    for seed in range(5):
        source, _ = render_scene(seed, "source")
        target, _ = render_scene(seed, "target")
        diff = np.abs(source.astype(np.int16) - target.astype(np.int16)).mean()
        assert diff > 20.0, f"seed {seed}: mean |source - target| is only {diff:.1f}"


def test_strength_dials_the_gap():
    def gap(strength):
        return np.mean([np.abs(render_scene(seed, "source")[0].astype(np.int16)
                               - render_scene(seed, "target", strength=strength)[0]).mean()
                        for seed in range(5)])

    assert gap(0.0) < 0.5 * gap(0.65) < gap(1.0)


def test_label_values_are_synthetic_classes():
    for seed in range(30):
        _, label = render_scene(seed, "target")
        assert set(np.unique(label).tolist()) <= ALLOWED


def test_every_class_occurs_in_a_few_hundred_scenes():
    # render_layout gives exactly render_scene's label map without painting an image
    seen = set()
    for seed in range(200):
        seen.update(np.unique(render_layout(seed).label).tolist())
    assert set(render.SYNTHETIC_CLASSES) <= seen


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="style"):
        render_scene(0, "cartoon")
    with pytest.raises(ValueError, match="strength"):
        render_scene(0, "target", strength=1.5)
    with pytest.raises(ValueError, match="seed"):
        render_scene(-1, "source")


# ------------------------------------------------------------------------- prepare script
def _files(folder: Path):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_writes_expected_tree(tmp_path):
    # Worker processes are exercised through the command line (a fresh process): forking this
    # test process, whose torch thread pools earlier tests started, can deadlock the children.
    import subprocess

    cmd = [sys.executable, str(REPO_ROOT / "datasets" / "prepare_synthetic.py"), "--root",
           str(tmp_path), "--nproc", "2"] + [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    stats = prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False, **TINY)
    out = tmp_path / "synthetic_uda"
    for folder, count in (("source/train", 3), ("target/train", 2), ("target/val", 2)):
        expected = [f"{i:06d}.png" for i in range(count)]
        for kind in ("images", "labels"):
            assert sorted(os.listdir(out / folder / kind)) == expected  # no temp files left
        image = Image.open(out / folder / "images" / expected[0])
        label = Image.open(out / folder / "labels" / expected[0])
        assert image.mode == "RGB" and image.size == (64, 48)
        assert label.mode == "L" and label.size == (64, 48)
        assert set(np.unique(np.asarray(label)).tolist()) <= ALLOWED
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format_version"] == prepare.FORMAT_VERSION
    assert {k: meta[k] for k in TINY} == TINY
    assert meta["seed"] == 0 and meta["strength"] == 0.65
    assert stats["files_written"] == 0 and stats["skipped"] == 7  # all written by the CLI


def test_written_files_match_the_renderer(tmp_path):
    prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False, **TINY)
    val = tmp_path / "synthetic_uda" / "target" / "val"
    image, label = render_scene(prepare.scene_seed(0, 2, 1), "target", 48, 64, 0.65)
    np.testing.assert_array_equal(np.asarray(Image.open(val / "images" / "000001.png")), image)
    np.testing.assert_array_equal(np.asarray(Image.open(val / "labels" / "000001.png")), label)


def test_splits_use_distinct_scenes():
    seeds = {prepare.scene_seed(0, split, i) for split in range(3) for i in range(200)}
    assert len(seeds) == 600
    assert prepare.scene_seed(1, 0, 0) != prepare.scene_seed(0, 0, 0)


def test_prepare_is_resumable(tmp_path):
    prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False, **TINY)
    out = tmp_path / "synthetic_uda"
    before = _files(out)

    stats = prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False, **TINY)
    assert stats["files_written"] == 0 and stats["skipped"] == 7
    assert _files(out) == before  # nothing rewritten, meta.json included

    missing = out / "target" / "train" / "labels" / "000001.png"
    content = missing.read_bytes()
    missing.unlink()
    stats = prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False, **TINY)
    assert stats["files_written"] == 1 and missing.read_bytes() == content
    after = _files(out)
    assert {p: t for p, t in after.items() if p != missing} == {
        p: t for p, t in before.items() if p != missing}


def test_prepare_rejects_mismatching_meta(tmp_path, capsys):
    prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False, **TINY)
    with pytest.raises(prepare.MetaMismatchError, match="Delete"):
        prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False,
                                  **{**TINY, "strength": 0.5})
    argv = ["--root", str(tmp_path), "--nproc", "1", "--num-source", "3", "--num-target", "2",
            "--num-val", "2", "--height", "48", "--width", "64", "--seed", "5"]
    assert prepare.main(argv) == 2
    assert "same parameters" in capsys.readouterr().err


def test_main_generates_and_resumes(tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--nproc", "1", "--num-source", "1", "--num-target", "1",
            "--num-val", "1", "--height", "32", "--width", "48"]
    assert prepare.main(argv) == 0
    assert prepare.main(argv) == 0
    assert "3 already there" in capsys.readouterr().out


def test_prepare_replaces_empty_or_damaged_files(tmp_path, capsys):
    prepare.prepare_synthetic(str(tmp_path), nproc=1, progress=False, **TINY)
    out = tmp_path / "synthetic_uda"
    image = out / "source" / "train" / "images" / "000002.png"
    label = out / "target" / "val" / "labels" / "000000.png"
    good = {p: p.read_bytes() for p in (image, label)}
    image.write_bytes(b"")
    label.write_bytes(good[label][:len(good[label]) // 2])
    argv = ["--root", str(tmp_path), "--nproc", "1"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert prepare.main(argv) == 0
    assert "2 rendered, 5 already there (2 empty or damaged files replaced)" in \
        capsys.readouterr().out
    assert {p: p.read_bytes() for p in good} == good
