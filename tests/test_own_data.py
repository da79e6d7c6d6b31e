"""Your own data (issue 19): an unlabelled target from a folder / glob / list, --eval-only on
data without labels (predictions and overlays), and ACDC / Dark Zurich test-server archives."""
import json
import os
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from duda_d2.data.datasets.image_folders import (image_folder_records, image_paths,
                                                 parse_folder_specs)
from duda_d2.data.datasets.layout import DatasetFileError, DatasetNotFoundError
from duda_d2.engine import AtomicCheckpointer
from helpers import REPO, config

sys.path.insert(0, os.path.join(REPO, "tools"))
import train_net  # noqa: E402

TINY_RUN = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS",
            "0", "MODEL.SEM_SEG_HEAD.EMBED_DIM", "16", "INPUT.CROP.SIZE", "(32, 32)",
            "TEST.EVAL_PERIOD", "0"]


def _image(path, size, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def fleet(tmp_path):
    """Camera frames of two sizes and two formats, in sub-folders, plus a non-image file."""
    folder = tmp_path / "fleet"
    _image(str(folder / "cam1" / "0001.jpg"), (60, 80), 1)
    _image(str(folder / "cam1" / "0002.png"), (48, 64), 2)
    _image(str(folder / "cam2" / "0001.PNG"), (72, 96), 3)
    (folder / "notes.txt").write_text("not an image")
    return str(folder)


def _run(*argv):
    args = train_net.default_argument_parser().parse_args(list(argv))
    return train_net.main(args)


def test_a_folder_a_glob_and_a_list_give_the_images(fleet, tmp_path):
    paths, base = image_paths(fleet)
    assert [os.path.relpath(p, base) for p in paths] == ["cam1/0001.jpg", "cam1/0002.png",
                                                         "cam2/0001.PNG"]
    globbed, _ = image_paths(os.path.join(fleet, "cam1", "*.png"))
    assert [os.path.basename(p) for p in globbed] == ["0002.png"]
    listing = tmp_path / "pick.txt"
    listing.write_text("# chosen frames\nfleet/cam2/0001.PNG\n\n" + paths[0] + "\n")
    listed, _ = image_paths(str(listing))
    assert sorted(listed) == sorted([paths[0], paths[2]])
    records = image_folder_records(fleet)
    assert [r["image_id"] for r in records] == ["cam1/0001", "cam1/0002", "cam2/0001"]
    assert all("sem_seg_file_name" not in r for r in records)


def test_bad_folders_are_errors_that_name_the_files(fleet, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        image_paths(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="holds no image"):
        image_paths(os.path.join(fleet, "*.gif"))
    listing = tmp_path / "pick.txt"
    listing.write_text("fleet/cam1/0001.jpg\nfleet/cam9/lost.png\n")
    with pytest.raises(DatasetNotFoundError, match=r"(?s)1 of the images listed.*cam9/lost.png"):
        image_paths(str(listing))
    with open(os.path.join(fleet, "cam1", "0002.png"), "r+b") as f:
        f.truncate(100)  # a copy cut short
    with pytest.raises(DatasetFileError, match=r"(?s)1 of the 3 images.*0002.png: truncated PNG"):
        image_folder_records(fleet)
    with pytest.raises(ValueError, match="not NAME=SPEC"):
        parse_folder_specs(["/data/fleet"], "DATASETS.IMAGE_FOLDERS")


def test_a_folder_target_trains_and_is_predicted_without_labels(synthetic_root, fleet, tmp_path):
    """DUDA with the target from a folder of mixed-size images (no code), then --eval-only on
    that folder: masks and overlays, no scores."""
    out = str(tmp_path / "run")
    folders = ["DATASETS.IMAGE_FOLDERS", f"['fleet_target={fleet}']"]
    _run("--config-file", os.path.join(REPO, "configs/synthetic/duda.yaml"), *TINY_RUN, *folders,
         "DATASETS.TARGET_TRAIN", "('fleet_target',)", "INPUT.TARGET_SIZE", "(48, 64)",
         "DATALOADER.SOURCE_IMS_PER_BATCH", "2", "DATALOADER.TARGET_IMS_PER_BATCH", "2",
         "MODEL.DUDA.LARGE_NETWORK_OPTS", "['MODEL.MIT.VARIANT', 'b0']",
         "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out)
    meta = MetadataCatalog.get("fleet_target")
    assert meta.domain == "target" and meta.has_labels is False
    assert meta.stuff_classes == MetadataCatalog.get("synthetic_uda_source_train").stuff_classes
    results = _run("--config-file", os.path.join(REPO, "configs/synthetic/duda.yaml"),
                   "--eval-only", *TINY_RUN, *folders, "DATASETS.TEST", "('fleet_target',)",
                   "OUTPUT_DIR", out, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                   "MODEL.DUDA.LARGE_NETWORK_OPTS", "['MODEL.MIT.VARIANT', 'b0']")
    assert not results or not any(results.values())
    written = os.path.join(out, "inference", "fleet_target", "predictions")
    for stem, size in (("cam1/0001", (60, 80)), ("cam1/0002", (48, 64)), ("cam2/0001", (72, 96))):
        mask = Image.open(os.path.join(written, f"{stem}_mask.png"))
        assert mask.size[::-1] == size  # at the image's own size
        assert os.path.isfile(os.path.join(written, f"{stem}_overlay.png"))


def _fake_test_split(root, dataset):
    if dataset == "acdc_test":
        folders = [f"acdc/rgb_anon/{c}/test/GOPR0{i}" for i, c in
                   enumerate(("fog", "night", "rain", "snow"))]
    else:
        folders = ["dark_zurich/rgb_anon/test/night/GOPR0356"]
    names = []
    for k, folder in enumerate(folders):
        name = f"{os.path.basename(folder)}_frame_{k:06d}_rgb_anon"
        _image(os.path.join(root, folder, f"{name}.png"), (54, 96), k)
        names.append(f"{name}.png")
    return names


@pytest.mark.parametrize("dataset,label_ids", [("acdc_test", False), ("dark_zurich_test", True)])
def test_eval_only_on_a_test_split_writes_the_servers_archive(dataset, label_ids, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))
    names = _fake_test_split(str(tmp_path / "data"), dataset)
    assert DatasetCatalog.get(dataset) and MetadataCatalog.get(dataset).has_labels is False
    out = str(tmp_path / "eval")
    model = build_model(config("configs/synthetic/source_only.yaml", *TINY_RUN))
    AtomicCheckpointer(model, save_dir=out).save("model_final")
    _run("--config-file", os.path.join(REPO, "configs/synthetic/source_only.yaml"), "--eval-only",
         *TINY_RUN, "DATASETS.TEST", f"('{dataset}',)", "OUTPUT_DIR", out,
         "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
         "TEST.SUBMISSION_LABEL_IDS", str(label_ids))
    archive = os.path.join(out, "inference", dataset, f"submission_{dataset}.zip")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == sorted(names)  # flat, named as the images
        for name in names:
            with z.open(name) as f:
                png = Image.open(f)
                png.load()
            assert png.mode == "P" and png.size == (96, 54)
            values = set(np.unique(np.asarray(png)).tolist())
            allowed = ({7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
                       if label_ids else set(range(19)))
            assert values <= allowed, values


def test_prepare_scripts_do_not_require_the_test_splits():
    from duda_d2.data.datasets.project_datasets import ACDC, DARK_ZURICH
    from duda_d2.prep.adverse_weather_index import indexed_splits
    assert [s.name for s in indexed_splits(ACDC)] == ["acdc_train", "acdc_val"]
    assert [s.name for s in indexed_splits(DARK_ZURICH)] == ["dark_zurich_train",
                                                             "dark_zurich_val"]
    assert config("configs/synthetic/duda.yaml").TEST.SUBMISSION_LABEL_IDS is False


# ------------------------------------------------------------ your own labelled source
CLASS_MAP = os.path.join(REPO, "datasets", "examples", "synthetic_7_classes.json")


def _prepare(root, domain_split, output, domain="source", class_map=CLASS_MAP):
    from helpers import load_dataset_script
    prepare = load_dataset_script("prepare_labelled_folder")
    base = os.path.join(root, "synthetic_uda", *domain_split.split("/"))
    return prepare.prepare_labelled_folder(
        os.path.join(base, "images"), os.path.join(base, "labels"), class_map, output,
        domain=domain, nproc=1, progress=False)


def test_a_class_map_merges_the_source_ids_and_counts_the_classes(synthetic_root, tmp_path):
    out = str(tmp_path / "seven")
    description = _prepare(synthetic_root, "source/train", out)
    assert description["classes"] == ["flat", "construction", "object", "nature", "sky",
                                      "human", "vehicle"]
    with open(CLASS_MAP) as f:
        table = {sid: index for index, c in enumerate(json.load(f)["classes"])
                 for sid in c["source_ids"]}
    stats = json.load(open(os.path.join(out, "rcs_stats.json")))
    assert stats["num_classes"] == 7 and len(stats["images"]) == 8
    for item in description["items"]:
        source = np.asarray(Image.open(os.path.join(synthetic_root, "synthetic_uda", "source",
                                                    "train", "labels", item["image"])))
        mapped = np.asarray(Image.open(os.path.join(out, item["label"])))
        expected = np.vectorize(lambda v: table.get(int(v), 255))(source)
        np.testing.assert_array_equal(mapped, expected)
        counts = {int(k): v for k, v in stats["images"][item["label"]].items()}
        assert counts == {c: int((mapped == c).sum()) for c in range(7) if (mapped == c).any()}
    # A second run reuses the labels; another class map into the same folder is refused.
    assert _prepare(synthetic_root, "source/train", out) == description
    other = tmp_path / "other.json"
    other.write_text('{"classes": [{"name": "road", "source_ids": [0]}]}')
    with pytest.raises(ValueError, match="another class list"):
        _prepare(synthetic_root, "source/train", out, class_map=str(other))


@pytest.mark.parametrize("text,error", [
    ('{"classes": []}', "non-empty"),
    ('{"classes": [{"name": "a", "source_ids": [1]}, {"name": "b", "source_ids": [1]}]}',
     "mapped to both 'a' and 'b'"),
    ('{"classes": [{"name": "a", "source_ids": [70000]}]}', "not 0..65535")])
def test_a_bad_class_map_is_named(text, error, synthetic_root, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=error):
        _prepare(synthetic_root, "source/train", str(tmp_path / "out"), class_map=str(bad))


def test_the_7_class_worked_example_trains_and_evaluates(synthetic_root, tmp_path):
    """configs/synthetic/own_data_7_classes.yaml as datasets/README.md runs it: own labelled
    source with 7 classes, target from a folder, a labelled target val of the same classes."""
    source, val = str(tmp_path / "synthetic7_source"), str(tmp_path / "synthetic7_val")
    _prepare(synthetic_root, "source/train", source)
    _prepare(synthetic_root, "target/val", val, domain="target")
    target = os.path.join(synthetic_root, "synthetic_uda", "target", "train", "images", "*.png")
    out = str(tmp_path / "run")
    paths = ["DATASETS.LABELLED_FOLDERS", f"['synthetic7_source={source}', "
                                          f"'synthetic7_val={val}']",
             "DATASETS.IMAGE_FOLDERS", f"['synthetic7_target={target}']"]
    results = _run("--config-file", os.path.join(REPO, "configs/synthetic/own_data_7_classes.yaml"),
                   *TINY_RUN, *paths, "DATALOADER.SOURCE_IMS_PER_BATCH", "2",
                   "DATALOADER.TARGET_IMS_PER_BATCH", "2", "DATALOADER.RCS.ENABLED", "True",
                   "MODEL.DUDA.LARGE_NETWORK_OPTS", "['MODEL.MIT.VARIANT', 'b0']",
                   "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out)
    assert results is None  # the final evaluation is in metrics.json
    metrics = {}
    with open(os.path.join(out, "metrics.json")) as f:
        for line in f:
            metrics.update(json.loads(line))
    assert {k for k in metrics if k.startswith("sem_seg/IoU-")} == {
        f"sem_seg/IoU-{c}" for c in ("flat", "construction", "object", "nature", "sky", "human",
                             "vehicle")}
    assert MetadataCatalog.get("synthetic7_target").stuff_classes[0] == "flat"
    # A data set of another class list, or NUM_CLASSES that is not 7: a clear error.
    with pytest.raises(ValueError, match="do not share one class list"):
        _run("--config-file", os.path.join(REPO, "configs/synthetic/own_data_7_classes.yaml"),
             *TINY_RUN, *paths, "DATASETS.TEST", "('synthetic_uda_target_val',)",
             "OUTPUT_DIR", str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"FD_CLASSES \[6, 7, 11.*do not have"):
        _run("--config-file", os.path.join(REPO, "configs/synthetic/own_data_7_classes.yaml"),
             *TINY_RUN, *paths, "MODEL.UDA.FD_LAMBDA", "0.005",
             "OUTPUT_DIR", str(tmp_path / "bad3"))
    with pytest.raises(ValueError, match="NUM_CLASSES is 19 but"):
        _run("--config-file", os.path.join(REPO, "configs/synthetic/own_data_7_classes.yaml"),
             *TINY_RUN, *paths, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "19",
             "OUTPUT_DIR", str(tmp_path / "bad2"))


def test_an_unprepared_labelled_folder_says_how_to_prepare_it(tmp_path):
    cfg = config("configs/synthetic/own_data_7_classes.yaml", "DATASETS.LABELLED_FOLDERS",
                 [f"mine={tmp_path / 'not_yet'}"], "DATASETS.SOURCE_TRAIN", ("mine",))
    with pytest.raises(DatasetNotFoundError, match="prepare_labelled_folder.py --images"):
        DatasetCatalog.get("mine")
    assert cfg.DATASETS.SOURCE_TRAIN == ("mine",)
