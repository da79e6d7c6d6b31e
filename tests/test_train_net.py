"""End to end: tools/train_net.py trains, evaluates, resumes and re-evaluates on the synthetic
benchmark -- with Detectron2's compiled ``_C`` blocked, as the PyPI snapshot cannot load it."""
import json
import os
import sys

import pytest

from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import train_net  # noqa: E402


@pytest.fixture(autouse=True)
def no_compiled_ops(monkeypatch):
    """Make ``import detectron2._C`` fail, whatever Detectron2 build is installed."""
    monkeypatch.setitem(sys.modules, "detectron2._C", None)


def _run(*argv):
    args = train_net.default_argument_parser().parse_args(list(argv))
    return train_net.main(args)


def _metrics_lines(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def _all_metrics(output_dir):
    """Every scalar of metrics.json, later lines overriding earlier ones."""
    merged = {}
    for line in _metrics_lines(output_dir):
        merged.update(line)
    return merged


OPTS = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.SEM_SEG_HEAD.EMBED_DIM", "32"]
CONFIG = os.path.join(REPO, "configs/synthetic/source_only.yaml")


def test_train_writes_metrics_and_eval_only_reproduces(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(ImportError):
        import detectron2._C  # noqa: F401
    _run("--config-file", CONFIG, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
         "OUTPUT_DIR", out, *OPTS)
    metrics = _all_metrics(out)
    assert 0.0 <= metrics["sem_seg/mIoU"] <= 100.0
    assert "sem_seg/IoU-road" in metrics and "total_loss" in metrics
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_final.pth"
    assert os.path.isfile(os.path.join(out, "model_0000001.pth"))

    results = _run("--config-file", CONFIG, "--eval-only",
                   "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                   "OUTPUT_DIR", str(tmp_path / "eval"), *OPTS)
    assert results["sem_seg"]["mIoU"] == pytest.approx(metrics["sem_seg/mIoU"])


def test_resume_continues_from_the_last_checkpoint(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    _run("--config-file", CONFIG, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out, *OPTS)
    # A longer schedule with --resume starts at iteration 2, not 0.
    _run("--config-file", CONFIG, "--resume", "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out, *OPTS)
    trained = [m["iteration"] for m in _metrics_lines(out) if "total_loss" in m]
    assert trained == [1, 2]
