"""Samplers (uniform epochs, rare-class sampling) and the seeded train loaders."""
import itertools
import math
import os

import pytest

from duda_d2.data import build_supervised_train_loader, build_uda_train_loader
from duda_d2.data.rcs_stats_file import RcsStatsError
from duda_d2.prep.rcs_stats_computation import class_pixel_counts, save_rcs_stats
from duda_d2.data.samplers import RareClassSampler, UniformSampler, rcs_class_probabilities
from duda_d2.data.labels import load_label_map
from helpers import config


def test_uniform_sampler_gives_seeded_permutation_epochs():
    sampler = UniformSampler(5, seed=3)
    draws = [sampler.index_at(p) for p in range(15)]
    for epoch in range(3):
        assert sorted(draws[5 * epoch:5 * epoch + 5]) == list(range(5))
    assert draws[:5] != draws[5:10] or draws[5:10] != draws[10:]
    again = UniformSampler(5, seed=3)
    assert [again.index_at(p) for p in range(10, 15)] == draws[10:]  # resumable mid-stream


def test_rcs_probabilities_match_the_formula():
    probs = rcs_class_probabilities({0: 900, 5: 90, 7: 10}, temperature=0.1)
    logits = {c: (1 - n / 1000) / 0.1 for c, n in {0: 900, 5: 90, 7: 10}.items()}
    norm = sum(math.exp(v) for v in logits.values())
    for c, v in logits.items():
        assert probs[c] == pytest.approx(math.exp(v) / norm)
    assert probs[7] > probs[5] > probs[0]


def test_rcs_empirical_class_frequencies_match_p():
    # Image i holds only class i % 3 (plenty of pixels) -> the image drawn tells the class.
    pixels = [{0: 8000}, {1: 4000}, {2: 3500}, {0: 8000}, {1: 100}, {2: 3500}]
    sampler = RareClassSampler(pixels, temperature=0.5, min_pixels=3000, seed=0)
    totals = {0: 16000, 1: 4100, 2: 7000}
    expected = rcs_class_probabilities(totals, 0.5)
    n = 20000
    drawn = [sampler.index_at(p) for p in range(n)]
    assert 4 not in drawn  # 100 pixels <= min_pixels: never drawn for class 1
    for c in range(3):
        freq = sum(1 for i in drawn if i % 3 == c) / n
        assert freq == pytest.approx(expected[c], abs=0.015)


def test_rcs_without_any_qualifying_image_is_a_clear_error():
    with pytest.raises(ValueError, match="MIN_PIXELS"):
        RareClassSampler([{0: 10}], min_pixels=3000)


def _cfg(*opts):
    return config("configs/synthetic/source_only.yaml", "DATALOADER.NUM_WORKERS", 0,
                  "SOLVER.IMS_PER_BATCH", 4, "INPUT.CROP.SIZE", (32, 32), *opts)


def _fingerprint(batches):
    return [[(d["file_name"], int(d["image"].float().sum()), int(d["sem_seg"].sum()))
             for d in batch] for batch in batches]


def test_batches_do_not_depend_on_workers_and_resume_exactly(synthetic_root):
    loader = build_supervised_train_loader(_cfg())
    reference = _fingerprint(itertools.islice(loader, 4))
    with_workers = build_supervised_train_loader(_cfg("DATALOADER.NUM_WORKERS", 2))
    assert _fingerprint(itertools.islice(with_workers, 4)) == reference
    resumed = build_supervised_train_loader(_cfg())
    resumed.start_iter = 2
    assert _fingerprint(itertools.islice(resumed, 2)) == reference[2:]


def test_ranks_share_one_global_stream(synthetic_root, monkeypatch):
    from detectron2.utils import comm

    reference = _fingerprint(itertools.islice(build_supervised_train_loader(_cfg()), 2))
    per_rank = []
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    for rank in range(2):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        per_rank.append(_fingerprint(itertools.islice(build_supervised_train_loader(_cfg()), 2)))
    assert [per_rank[0][k] + per_rank[1][k] for k in range(2)] == reference


def test_uda_loader_pairs_labelled_source_with_unlabelled_target(synthetic_root):
    cfg = _cfg("DATASETS.SOURCE_TRAIN", ("synthetic_uda_source_train",),
               "DATASETS.TARGET_TRAIN", ("synthetic_uda_target_train",),
               "DATALOADER.SOURCE_IMS_PER_BATCH", 2, "DATALOADER.TARGET_IMS_PER_BATCH", 3)
    source, target = next(iter(build_uda_train_loader(cfg)))
    assert len(source) == 2 and len(target) == 3
    assert all("sem_seg" in d and "/source/" in d["file_name"] for d in source)
    assert all("sem_seg" not in d and "/target/" in d["file_name"] for d in target)
    assert target[0]["image"].shape == (3, 32, 32)


def test_rare_class_sampling_needs_statistics_or_an_explicit_fallback(synthetic_root):
    folder = os.path.join(synthetic_root, "synthetic_uda")
    stats_file = os.path.join(folder, "rcs_stats.json")
    if os.path.exists(stats_file):
        os.remove(stats_file)
    cfg = _cfg("DATALOADER.RCS.ENABLED", True, "DATALOADER.RCS.MIN_PIXELS", 10)
    with pytest.raises(RcsStatsError, match="prepare_synthetic.py"):
        build_supervised_train_loader(cfg)
    cfg.DATALOADER.RCS.ALLOW_UNIFORM_FALLBACK = True
    assert isinstance(build_supervised_train_loader(cfg).sampler, UniformSampler)

    label_dir = os.path.join(folder, "source", "train", "labels")
    save_rcs_stats(folder, {
        os.path.join("source", "train", "labels", name):
            class_pixel_counts(load_label_map(os.path.join(label_dir, name)))
        for name in os.listdir(label_dir)})
    try:
        loader = build_supervised_train_loader(_cfg("DATALOADER.RCS.ENABLED", True,
                                                    "DATALOADER.RCS.MIN_PIXELS", 10))
        assert isinstance(loader.sampler, RareClassSampler)
        assert len(next(iter(loader))) == 4
    finally:
        os.remove(stats_file)
