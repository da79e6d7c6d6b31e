#!/usr/bin/env python
"""Pretrain MiT encoders on the synthetic *source* domain: the pretrained regime's ImageNet.

    python tools/pretrain_synthetic.py [--variants b0 b1] [--output-dir pretrained/synthetic]

1. Renders ``$DETECTRON2_DATASETS/synthetic_uda_pretrain`` once: 2400 source-style scenes with
   seeds no benchmark split uses (``prepare_synthetic.prepare_source_pretraining``; a progress
   bar; resumable).
2. For each variant, trains ``configs/synthetic/pretrain_source.yaml`` (the same recipe and
   budget for every size: supervised segmentation, 1200 iterations of 8 source images) with a
   loader that refuses any data set that is not source-domain (``duda_d2.engine.pretraining``).
3. Writes the encoder to ``<output-dir>/mit_<variant>_source.pth`` (``MODEL.BACKBONE.WEIGHTS``
   format, atomically), with the recipe it was made with. A file whose recipe matches is reused
   (cached); an interrupted training resumes from its last checkpoint.

No target image, label or statistic is read at any step.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import Dict, List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from detectron2.utils.env import seed_all_rng  # noqa: E402

from duda_d2 import load_config  # noqa: E402
from duda_d2.engine.pretraining import PretrainingTrainer, pretrained_backbone_state  # noqa: E402
from duda_d2.utils.atomic_files import atomic_write_bytes  # noqa: E402
from duda_d2.utils.user_errors import exit_on_user_error  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "synthetic", "pretrain_source.yaml")
AUTHOR = "duda_d2.pretrain_synthetic"


def _prepare_synthetic_module():
    spec = importlib.util.spec_from_file_location(
        "prepare_synthetic", os.path.join(REPO, "datasets", "prepare_synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("prepare_synthetic", module)
    spec.loader.exec_module(module)
    return module


def weights_path(output_dir: str, variant: str) -> str:
    return os.path.join(output_dir, f"mit_{variant}_source.pth")


def recipe(variant: str, opts: List[str], num_images: int) -> Dict:
    """What a pretrained file was made with: a file of another recipe is not reused."""
    return {"config": os.path.relpath(CONFIG, REPO), "variant": variant, "opts": list(opts),
            "num_images": num_images}


def cached(path: str, wanted: Dict) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged file is made again
        return False
    return isinstance(saved, dict) and saved.get("recipe") == wanted


def pretrain(variant: str, output_dir: str, work_dir: str, opts: List[str],
             num_images: int) -> str:
    """Pretrain one encoder (or reuse it); returns the weight file."""
    path = weights_path(output_dir, variant)
    wanted = recipe(variant, opts, num_images)
    if cached(path, wanted):
        print(f"[pretrain_synthetic] MiT-{variant}: {path} is up to date", flush=True)
        return path
    run_dir = os.path.join(work_dir, f"mit_{variant}")
    cfg = load_config(CONFIG, ["MODEL.MIT.VARIANT", variant, "OUTPUT_DIR", run_dir, *opts])
    cfg.freeze()
    os.makedirs(run_dir, exist_ok=True)
    print(f"[pretrain_synthetic] MiT-{variant}: {cfg.SOLVER.MAX_ITER} iterations on "
          f"{cfg.DATASETS.TRAIN} -> {path}", flush=True)
    start = time.perf_counter()
    seed_all_rng(cfg.SEED)
    trainer = PretrainingTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    state = pretrained_backbone_state(trainer.model)
    data = {"model": state, "__author__": AUTHOR, "recipe": wanted,
            "minutes": round((time.perf_counter() - start) / 60, 2)}
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_bytes(path, lambda f: torch.save(data, f))
    print(f"[pretrain_synthetic] MiT-{variant}: {len(state)} tensors written to {path} "
          f"({data['minutes']} min)", flush=True)
    return path


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["b0", "b1"],
                        choices=["b0", "b1", "b2", "b3", "b4", "b5"])
    parser.add_argument("--output-dir", default=os.path.join(REPO, "pretrained", "synthetic"))
    parser.add_argument("--work-dir", default=os.path.join(REPO, "output", "pretrain_synthetic"),
                        help="training runs (checkpoints, logs)")
    parser.add_argument("--nproc", type=int, default=None, help="rendering processes")
    parser.add_argument("--num-images", type=int, default=2400,
                        help="source-style scenes to render and pretrain on")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE overrides of the pretraining config (part of the recipe)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)  # before an hour of training, not after
    stats = _prepare_synthetic_module().prepare_source_pretraining(
        nproc=args.nproc, num_images=args.num_images)
    print(f"[pretrain_synthetic] source pretraining scenes: {stats['scenes']} "
          f"({stats['rendered']} rendered now)", flush=True)
    for variant in args.variants:
        pretrain(variant, args.output_dir, args.work_dir, list(args.opts), args.num_images)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))
