"""Training loaders whose batches are a pure function of (seed, iteration).

Each domain is a stream of positions (see ``samplers``): the sampler turns a position into a
dataset index, and the mapper's random augmentations (crop, flip) are seeded from the same
position, so batch ``k`` is identical with 0 or N loader workers, on 1 or N processes, and
after ``--resume`` at iteration ``k``. ``build_uda_train_loader`` pairs a labelled source
stream with an unlabelled target stream.

With ``MODEL.TASK "panoptic"`` labelled streams map panoptic records
(``PanopticDatasetMapper``: image, ``pan_seg``, ``sem_seg``), with the thing classes of the
data sets' metadata; unlabelled (target) streams map images only, as for the semantic task.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from .datasets.layout import dataset_root
from .mappers import SemSegDatasetMapper
from .panoptic_mapper import PanopticDatasetMapper
from .rcs_stats_file import RcsStatsError, load_rcs_stats
from .samplers import PositionalSampler, RareClassSampler, UniformSampler

__all__ = ["SeededTrainLoader", "build_supervised_train_loader", "build_uda_train_loader",
           "UDATrainLoader", "run_seed", "build_train_mapper"]

logger = logging.getLogger(__name__)

SOURCE_STREAM, TARGET_STREAM = 0, 1


class _PositionStream(IterableDataset):
    """Mapped samples of one process, batch after batch, from ``start_batch`` on.

    Loader worker ``w`` of ``n`` produces this process's batches ``start_batch + w``,
    ``+ w + n``, ...; PyTorch's loader returns workers' batches round-robin, i.e. in order.
    """

    def __init__(self, records: DatasetFromList, mapper: Callable, sampler: PositionalSampler,
                 seed: int, stream: int, batch_size: int, total_batch_size: int, rank: int,
                 start_batch: int):
        self.records, self.mapper, self.sampler = records, mapper, sampler
        self.seed, self.stream = seed, stream
        self.batch_size, self.total_batch_size = batch_size, total_batch_size
        self.rank, self.start_batch = rank, start_batch

    def sample(self, position: int) -> dict:
        index, rare_class = self.sampler.draw(position)
        record = self.records[index]
        # Detectron2's augmentations draw from numpy's global generator: seed it per sample
        # (crop re-draws for a rare class continue the same stream, so they are exact too).
        np.random.seed(np.random.SeedSequence([self.seed, self.stream, position])
                       .generate_state(1)[0])
        if rare_class is None:
            return self.mapper(record)
        return self.mapper(record, rare_class=rare_class)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        batch = self.start_batch + worker
        while True:
            first = batch * self.total_batch_size + self.rank * self.batch_size
            for j in range(self.batch_size):
                yield self.sample(first + j)
            batch += workers


class SeededTrainLoader:
    """Infinite iterable of per-process batches (lists of mapped dicts) of one domain.

    ``start_iter`` may be set before iterating (the trainer does so on ``--resume``).
    """

    def __init__(self, records: List[dict], mapper: Callable, sampler: PositionalSampler,
                 seed: int, total_batch_size: int, num_workers: int, stream: int = 0):
        world = comm.get_world_size()
        if total_batch_size % world:
            raise ValueError(f"batch size {total_batch_size} is not divisible by the "
                             f"{world} training processes")
        self.records = DatasetFromList(records, copy=False)
        self.mapper, self.sampler, self.seed, self.stream = mapper, sampler, seed, stream
        self.total_batch_size, self.batch_size = total_batch_size, total_batch_size // world
        self.num_workers = num_workers
        self.start_iter = 0

    def __iter__(self) -> Iterator[List[dict]]:
        stream = _PositionStream(self.records, self.mapper, self.sampler, self.seed, self.stream,
                                 self.batch_size, self.total_batch_size, comm.get_rank(),
                                 self.start_iter)
        # An own generator: creating the iterator must not draw from torch's global generator,
        # which the trainer seeds per iteration for the model's random draws.
        generator = torch.Generator().manual_seed(self.seed)
        return iter(DataLoader(stream, batch_size=self.batch_size, num_workers=self.num_workers,
                               collate_fn=trivial_batch_collator, generator=generator,
                               persistent_workers=self.num_workers > 0))


class UDATrainLoader:
    """Yields ``(source_batch, target_batch)`` per iteration: labelled source images and
    unlabelled target images (their labels are never loaded)."""

    def __init__(self, source: SeededTrainLoader, target: SeededTrainLoader):
        self.source, self.target = source, target

    @property
    def start_iter(self) -> int:
        return self.source.start_iter

    @start_iter.setter
    def start_iter(self, value: int) -> None:
        self.source.start_iter = self.target.start_iter = value

    def __iter__(self) -> Iterator[Tuple[List[dict], List[dict]]]:
        return zip(self.source, self.target)


def run_seed(cfg) -> int:
    """The data seed: ``SEED`` when set (needed for exact resume), else one shared by ranks."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def _records_by_dataset(names: Sequence[str], what: str) -> List[Tuple[str, List[dict]]]:
    """(name, records) of each named dataset, read once."""
    if not names:
        raise ValueError(f"{what} is empty: name the registered dataset(s) to train on")
    return [(name, DatasetCatalog.get(name)) for name in names]


def _rcs_pixels(cfg, records_by_dataset: List[Tuple[str, List[dict]]]
                ) -> Optional[List[Dict[int, int]]]:
    """Per-record {class: pixels} from the datasets' RCS statistics (None: fall back)."""
    pixels = []
    for name, records in records_by_dataset:
        meta = MetadataCatalog.get(name)
        folder = os.path.join(dataset_root(), getattr(meta, "dataset_dir_name", name))
        try:
            stats = load_rcs_stats(folder, getattr(meta, "rcs_prepare_script", None))
        except RcsStatsError:
            if not cfg.DATALOADER.RCS.ALLOW_UNIFORM_FALLBACK:
                raise
            logger.warning(f"no RCS statistics for {name}: sampling source images uniformly")
            return None
        for record in records:
            key = os.path.relpath(record["sem_seg_file_name"], folder)
            if key not in stats:
                raise RcsStatsError(f"'{key}' of {name} is missing from the RCS statistics in "
                                    f"'{folder}'; re-run the dataset's prepare script")
            pixels.append(stats[key])
    return pixels


def _sampler(cfg, records_by_dataset: List[Tuple[str, List[dict]]], size: int, seed: int,
             rare_class: bool) -> PositionalSampler:
    if rare_class and cfg.DATALOADER.RCS.ENABLED:
        pixels = _rcs_pixels(cfg, records_by_dataset)
        if pixels is not None:
            rcs = cfg.DATALOADER.RCS
            return RareClassSampler(pixels, rcs.TEMPERATURE, rcs.MIN_PIXELS, seed)
    return UniformSampler(size, seed)


def _thing_ids(names: Sequence[str], what: str) -> List[int]:
    """The thing train ids of the panoptic data sets ``names`` (from their metadata)."""
    thing_ids = set()
    for name in names:
        meta = MetadataCatalog.get(name)
        if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
            raise ValueError(f"MODEL.TASK 'panoptic' trains on panoptic data sets, but {what} "
                             f"names '{name}', which has no panoptic metadata: use a *_panoptic "
                             f"data set (e.g. synthetic_uda_source_train_panoptic, "
                             f"cityscapes_fine_panoptic_train; datasets/README.md)")
        thing_ids.update(int(c) for c in meta.thing_dataset_id_to_contiguous_id.values())
    return sorted(thing_ids)


def build_train_mapper(cfg, names: Sequence[str], what: str, size, labelled: bool) -> Callable:
    """The training mapper of a domain: for ``MODEL.TASK "panoptic"`` the panoptic mapper
    (labelled: image, ``pan_seg``, ``sem_seg``; unlabelled: image only, no segments), else the
    semantic one."""
    if getattr(cfg.MODEL, "TASK", "semantic") == "panoptic":
        return PanopticDatasetMapper(cfg, is_train=True, size=size, with_labels=labelled,
                                     thing_ids=_thing_ids(names, what) if labelled else None)
    return SemSegDatasetMapper(cfg, is_train=True, size=size, with_labels=labelled)


def _domain_loader(cfg, names: Sequence[str], what: str, batch_size: int, size, labelled: bool,
                   stream: int) -> SeededTrainLoader:
    seed = run_seed(cfg)
    mapper = build_train_mapper(cfg, names, what, size, labelled)  # checks the metadata first
    by_dataset = _records_by_dataset(names, what)
    records = [record for _, recs in by_dataset for record in recs]
    sampler = _sampler(cfg, by_dataset, len(records), seed, rare_class=labelled)
    return SeededTrainLoader(records, mapper, sampler, seed, batch_size,
                             cfg.DATALOADER.NUM_WORKERS, stream)


def build_supervised_train_loader(cfg) -> SeededTrainLoader:
    """Labelled batches of ``DATASETS.TRAIN`` (``SOLVER.IMS_PER_BATCH`` in all), resized to
    ``INPUT.SOURCE_SIZE`` (source-only or target-oracle training)."""
    return _domain_loader(cfg, cfg.DATASETS.TRAIN, "DATASETS.TRAIN", cfg.SOLVER.IMS_PER_BATCH,
                          cfg.INPUT.SOURCE_SIZE, True, SOURCE_STREAM)


def build_uda_train_loader(cfg) -> UDATrainLoader:
    """Source batches (``DATASETS.SOURCE_TRAIN``, labelled, rare-class sampled when enabled)
    paired with target batches (``DATASETS.TARGET_TRAIN``, labels dropped)."""
    d = cfg.DATALOADER
    source = _domain_loader(cfg, cfg.DATASETS.SOURCE_TRAIN, "DATASETS.SOURCE_TRAIN",
                            d.SOURCE_IMS_PER_BATCH, cfg.INPUT.SOURCE_SIZE, True, SOURCE_STREAM)
    target = _domain_loader(cfg, cfg.DATASETS.TARGET_TRAIN, "DATASETS.TARGET_TRAIN",
                            d.TARGET_IMS_PER_BATCH, cfg.INPUT.TARGET_SIZE, False, TARGET_STREAM)
    return UDATrainLoader(source, target)
