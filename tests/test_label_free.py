"""Label-free checkpoint signals (issue 19): the pure statistics, the hook that logs them every
evaluation period, and tools/label_free_signals.py on finished runs."""
import json
import os
import sys

import pytest
import torch

from duda_d2.uda.label_free import LabelFreeTally, label_free_sums
from helpers import REPO, load_dataset_script

sys.path.insert(0, os.path.join(REPO, "tools"))
import label_free_signals  # noqa: E402
import train_net  # noqa: E402


def test_the_statistics_on_hand_made_logits():
    # 2 classes, 4 pixels: teacher sure of class 0 twice, unsure twice; student agrees on 3.
    teacher = torch.tensor([[10.0, 10.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.1]]).view(1, 2, 2, 2)
    student = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]).view(1, 2, 2, 2)
    sums = label_free_sums(teacher, student, threshold=0.9)
    p_sure = torch.tensor([10.0, 0.0]).softmax(0)[0].item()
    p_unsure = torch.tensor([0.1, 0.0]).softmax(0)[0].item()
    assert sums["pixels"] == 4 and sums["confident_share"] == 2
    assert sums["teacher_confidence"] == pytest.approx(2 * p_sure + 2 * p_unsure)
    assert sums["agreement"] == 3  # teacher 0 0 0 1, student 0 0 1 1
    tally = LabelFreeTally()
    tally.add(sums)
    tally.add(label_free_sums(teacher[:, :, :1], student[:, :, :1], 0.9))  # 2 more pixels
    means = tally.means()
    assert means["confident_share"] == pytest.approx(4 / 6)
    # A student at a quarter of the teacher's size is resized, not refused.
    small = label_free_sums(teacher.repeat_interleave(2, 2).repeat_interleave(2, 3), student,
                            0.9)
    assert small["pixels"] == 16
    with pytest.raises(ValueError, match="no target pixel"):
        LabelFreeTally().means()


def test_signals_are_logged_every_period_and_scored_by_the_tool(synthetic_root, tmp_path):
    load_dataset_script("prepare_synthetic").prepare_source_val(
        synthetic_root, nproc=1, progress=False, num_images=4)
    out = str(tmp_path / "run")
    args = train_net.default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs/synthetic/self_training.yaml"),
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.SEM_SEG_HEAD.EMBED_DIM", "16", "INPUT.CROP.SIZE", "(32, 32)",
        "DATALOADER.SOURCE_IMS_PER_BATCH", "2", "DATALOADER.TARGET_IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "2", "TEST.LABEL_FREE_IMAGES", "3",
        "DATASETS.SOURCE_VAL", "('synthetic_uda_source_val',)", "OUTPUT_DIR", out])
    train_net.main(args)
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    logged = [line for line in lines if "label_free/agreement" in line]
    assert len(logged) == 2  # the period at iteration 2 and the end of training
    for line in logged:
        assert 0 <= line["label_free/agreement"] <= 1
        assert 0 < line["label_free/teacher_confidence"] <= 1
        assert "label_free/source_val_mIoU/synthetic_uda_source_val" in line
        assert "sem_seg/mIoU" in line  # next to the target score of the same period
    report = str(tmp_path / "signals.md")
    runs = [out, out, out]  # the same run thrice: constant signals have no correlation
    assert label_free_signals.main([*runs, "--images", "3", "--output", report]) == 0
    text = open(report).read()
    assert "agreement" in text and "source_val_mIoU" in text and "Spearman" in text
    assert label_free_signals.main(["--periodic", out, "--output", report]) == 0
    assert "periods" in open(report).read()
    rows = [{"target mIoU": m, "agreement": a} for m, a in ((1, 0.1), (2, 0.3), (3, 0.2))]
    (name, n, pearson, spearman), = label_free_signals.correlations(rows)
    assert (name, n, spearman) == ("agreement", 3, "+0.50")
