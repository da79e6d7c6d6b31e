"""``UDATrainer``: Detectron2's ``DefaultTrainer`` with this plugin's data, solver, evaluator,
atomic checkpoints, and a training step (``UDATrainStep``) that back-propagates each network's
losses as soon as they are complete; with several processes (CUDA/NCCL or CPU/gloo) each
trainable network runs in PyTorch's DistributedDataParallel.

The run owns its ``OUTPUT_DIR`` from construction to the end of ``train()`` (a lock,
``run_lock.py``; partial files of a killed run are removed at start-up), and a resumed run with
nothing left to train still ends with ``model_final.pth`` and its final evaluation."""
from __future__ import annotations

import logging
import os
import weakref

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.engine.hooks import PeriodicWriter
from detectron2.evaluation import DatasetEvaluators
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import build_sem_seg_test_loader, build_supervised_train_loader, build_uda_train_loader
from ..data.loader import run_seed
from ..evaluation import (PANOPTIC_EVALUATOR_TYPES, PredictionWriter, UDAPanopticEvaluator,
                          UDASemSegEvaluator)
from . import solver
from .checkpoint import AtomicCheckpointer
from .hooks import SeedEachIterationHook, TeacherEMAHook, TrainingScheduleHook
from .label_free import LabelFreeSignalsHook
from .run_lock import acquire_run_lock, release_run_lock, remove_stale_temporaries
from .distributed import broadcast_state, convert_sync_batchnorm, wrap_trainable_networks
from .train_step import UDATrainStep, amp_dtype

__all__ = ["UDATrainer"]


class UDATrainer(DefaultTrainer):
    def __init__(self, cfg):
        super(DefaultTrainer, self).__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        # One training per OUTPUT_DIR, locked before anything is written there (the hooks
        # open metrics.json); held until the end of train().
        held = acquire_run_lock(cfg.OUTPUT_DIR)  # only by the main process
        try:
            if held:
                remove_stale_temporaries(cfg.OUTPUT_DIR)
            self._build(cfg)
        except BaseException:
            release_run_lock(cfg.OUTPUT_DIR)
            raise

    def _build(self, cfg):
        # Same construction order as DefaultTrainer.__init__, with wrap_ddp and atomic saves.
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        if cfg.MODEL.SYNC_BN:
            convert_sync_batchnorm(model, cfg.MODEL.DEVICE)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        broadcast_state(model)  # one model on every process, frozen networks included
        wrap_trainable_networks(model, find_unused_parameters=cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS)
        amp = amp_dtype(cfg.SOLVER.AMP.PRECISION) if cfg.SOLVER.AMP.ENABLED else None
        self._trainer = UDATrainStep(model, data_loader, optimizer, amp=amp,
                                     backward_per_stage=cfg.SOLVER.BACKWARD_PER_STAGE)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """Load weights (and, with ``resume``, the iteration); the data streams continue at the
        resumed iteration so the batches are those an uninterrupted run would see."""
        super().resume_or_load(resume)
        self._trainer.data_loader.start_iter = self.start_iter

    def train(self):
        """Train from ``start_iter`` to ``max_iter`` and release ``OUTPUT_DIR`` (also on an
        exception). A run resumed with nothing left to train (killed after its last periodic
        checkpoint, before ``model_final.pth``) saves ``model_final.pth`` from the resumed
        weights; the final evaluation follows as after any training."""
        try:
            if 0 < self.max_iter <= self.start_iter:
                self._save_final_of_finished_run()
            return super().train()
        finally:
            release_run_lock(self.cfg.OUTPUT_DIR)

    def _save_final_of_finished_run(self) -> None:
        if os.path.basename(self.checkpointer.get_checkpoint_file()) == "model_final.pth":
            return
        logging.getLogger(__name__).warning(
            f"Nothing left to train (resumed after iteration {self.start_iter - 1} of "
            f"{self.max_iter}, the run was interrupted before its end): saving "
            f"model_final.pth, then the final evaluation")
        self.checkpointer.save("model_final", iteration=self.start_iter - 1)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return solver.build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return solver.build_lr_scheduler(cfg, optimizer)

    def build_hooks(self):
        """Detectron2's hooks, preceded by per-iteration seeding and -- for models with
        teachers or an iteration schedule -- the schedule and the EMA update (in this order:
        a frozen large pair's teacher is not updated)."""
        hooks = [SeedEachIterationHook(run_seed(self.cfg))]
        if hasattr(self.model, "schedule"):
            hooks.append(TrainingScheduleHook())
        if hasattr(self.model, "update_teachers"):
            hooks.append(TeacherEMAHook())
        hooks += super().build_hooks()
        if (self.cfg.TEST.LABEL_FREE_IMAGES > 0 or self.cfg.DATASETS.SOURCE_VAL) \
                and self.cfg.TEST.EVAL_PERIOD > 0:
            # Before the writer, so that each evaluation's line also holds the signals.
            at = next((i for i, h in enumerate(hooks) if isinstance(h, PeriodicWriter)),
                      len(hooks))
            hooks.insert(at, LabelFreeSignalsHook(self.cfg, self.cfg.TEST.EVAL_PERIOD))
        return hooks

    @classmethod
    def build_train_loader(cls, cfg):
        """Paired source/target batches for UDA meta-architectures, labelled batches else."""
        meta_arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
        if getattr(meta_arch, "uses_target_data", False):
            return build_uda_train_loader(cfg)
        return build_supervised_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_sem_seg_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """mIoU on ``dataset_name``, plus the class subsets the training sets ask for; on a
        panoptic data set also PQ/SQ/RQ (``panoptic_seg/...``, predictions written under
        ``<output_folder>/panoptic/``) with the same subsets as mean PQ (``mPQ16``)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if getattr(MetadataCatalog.get(dataset_name), "has_labels", True) is False:
            # Your own images or a benchmark's test split: predictions as files, no scores.
            return PredictionWriter(dataset_name, output_folder,
                                    label_ids=cfg.TEST.SUBMISSION_LABEL_IDS)
        subsets = {}
        for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.SOURCE_TRAIN):
            subsets.update(getattr(MetadataCatalog.get(name), "eval_class_subsets", {}) or {})
        semantic = UDASemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder,
                                      class_subsets=subsets)
        evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
        if evaluator_type not in PANOPTIC_EVALUATOR_TYPES:
            return semantic
        panoptic = UDAPanopticEvaluator(dataset_name, distributed=True,
                                        output_dir=output_folder, class_subsets=subsets)
        return DatasetEvaluators([panoptic, semantic])
