#!/usr/bin/env python
"""Train or evaluate a duda_d2 model -- Detectron2's standard training script.

    python tools/train_net.py --config-file configs/synthetic/source_only.yaml
    python tools/train_net.py --config-file F --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file F --num-gpus 8 [--resume] [KEY VALUE ...]
"""
from __future__ import annotations

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from duda_d2 import load_config
from duda_d2.engine import AtomicCheckpointer, UDATrainer


def setup(args):
    """Defaults + plugin keys, then the config file, then command-line overrides."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = UDATrainer.build_model(cfg)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        results = UDATrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = UDATrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    return launch(main, args.num_gpus, num_machines=args.num_machines,
                  machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    cli()
