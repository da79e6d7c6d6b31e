"""tools/run_demo.py (`make demo`) end to end on a tiny schedule: three rows on one budget,
a table with each deployed network's size and speed, titled pictures, run reuse."""
import os
import sys

from PIL import Image

from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import run_demo  # noqa: E402

TINY = ["SOLVER.MAX_ITER", "3", "MODEL.SEM_SEG_HEAD.EMBED_DIM", "16",
        "MODEL.DUDA.LARGE_NETWORK_OPTS", "['MODEL.MIT.VARIANT', 'b0', 'MODEL.SEM_SEG_HEAD.FUSION',"
        " 'conv1x1', 'MODEL.SEM_SEG_HEAD.EMBED_DIM', '16']",
        "DATALOADER.NUM_WORKERS", "0", "INPUT.CROP.SIZE", "(32, 32)", "SOLVER.WARMUP_ITERS", "1"]


def test_demo_trains_three_rows_and_draws_titled_pictures(synthetic_root, tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert run_demo.main(["--output-dir", out, "--opts", *TINY]) == 0
    printed = capsys.readouterr()
    table = [line for line in printed.out.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == [
        "source-only", "self-training (B0 pair)", "DUDA (B1 pair -> B0)"]
    for line in table[1:]:
        params, speed, miou = (float(c) for c in line.split("|")[2:5])
        assert params > 0 and speed > 0 and 0 <= miou <= 100
    # The budget is the DUDA demo's for every row (iterations and source/target batch).
    for folder in ("source_only_synthetic", "self_training_synthetic", "duda_synthetic"):
        config = open(os.path.join(out, folder, "config.yaml")).read()
        assert "MAX_ITER: 3" in config and os.path.isfile(os.path.join(out, folder, "log.txt"))
    assert "it/s" in printed.err or "s/it" in printed.err  # tqdm progress bars
    for picture in ("demo_predictions.png", "demo_class_iou.png"):
        with Image.open(os.path.join(out, picture)) as image:
            assert image.width > 400 and image.height > 200
    # Finished runs are reused.
    assert run_demo.main(["--output-dir", out, "--opts", *TINY]) == 0
    assert capsys.readouterr().out.count("reusing the finished run") == 3
