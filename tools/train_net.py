#!/usr/bin/env python
"""Train or evaluate a duda_d2 model -- Detectron2's standard training script.

    python tools/train_net.py --config-file configs/synthetic/source_only.yaml
    python tools/train_net.py --config-file F --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file F --num-gpus 8 [--resume] [KEY VALUE ...]

An error a user can fix (a missing dataset or weight file, a bad config value, a busy
OUTPUT_DIR, a full disk) ends it with one ``error: ...`` line and exit code 1; ``--debug``
(or ``DUDA_DEBUG=1``) shows the traceback.
"""
from __future__ import annotations

import logging
import os

from detectron2.engine import default_argument_parser as detectron2_argument_parser
from detectron2.engine import default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from duda_d2 import load_config
from duda_d2.data.class_lists import check_class_lists
from duda_d2.engine import AtomicCheckpointer, UDATrainer
from duda_d2.engine.run_lock import acquire_run_lock, release_run_lock
from duda_d2.modeling.network import checkpoint_contents, read_checkpoint_keys
from duda_d2.utils.user_errors import UserError, exit_on_user_error


def default_argument_parser(epilog=None):
    """Detectron2's standard flags, plus ``--debug``."""
    parser = detectron2_argument_parser(epilog)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors a user can fix (also DUDA_DEBUG=1)")
    return parser


def setup(args):
    """Defaults + plugin keys, then the config file, then command-line overrides; logging.

    Training locks ``OUTPUT_DIR`` before anything is written there and saves its
    ``config.yaml`` (Detectron2's ``default_setup``); evaluation never rewrites a training
    run's ``config.yaml`` (the tools that reuse finished runs compare it)."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    check_class_lists(cfg)  # one class list for every data set and the model
    if args.eval_only:
        _evaluation_setup(cfg)
    else:
        if cfg.SOLVER.MAX_ITER <= 0:
            raise UserError(f"SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}: a training needs at least "
                            f"one iteration (use --eval-only to evaluate a checkpoint)")
        acquire_run_lock(cfg.OUTPUT_DIR)  # released by main() after the training
        try:
            default_setup(cfg, args)
        except BaseException:
            release_run_lock(cfg.OUTPUT_DIR)
            raise
    # The plugin's own messages (weights loaded, data checks) go to OUTPUT_DIR/log.txt too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="duda_d2")
    logging.getLogger("duda_d2").propagate = True
    return cfg


def _evaluation_setup(cfg) -> None:
    """``default_setup`` without writing ``config.yaml``: loggers, environment, seeds."""
    rank = comm.get_rank()
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore")
    logger = setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
    logger.info("Rank of current process: {}. World size: {}".format(rank,
                                                                      comm.get_world_size()))
    logger.info("Environment info:\n" + collect_env_info())
    logger.info(f"Evaluation config (not saved over a training run's config.yaml):\n{cfg.dump()}")
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)


def evaluate(cfg, args):
    """The metrics of the trained network ``MODEL.WEIGHTS`` (or, with ``--resume``, the run's
    last checkpoint) holds; evaluating a network the file does not hold is an error."""
    model = UDATrainer.build_model(cfg)
    checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    if not cfg.MODEL.WEIGHTS and not (args.resume and checkpointer.has_checkpoint()):
        raise UserError("--eval-only needs MODEL.WEIGHTS: point it at a checkpoint written by "
                        "tools/train_net.py (e.g. OUTPUT_DIR/model_final.pth), or use --resume "
                        "with the run's OUTPUT_DIR; a randomly initialised network is not "
                        "evaluated")
    path = checkpointer.get_checkpoint_file() if args.resume and checkpointer.has_checkpoint() \
        else cfg.MODEL.WEIGHTS
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
    network = model.inference_network()
    missing = checkpointer.missing_tensors(network)
    if missing:
        total = len(network.state_dict())
        raise UserError(f"the weights loaded for --eval-only ('{path}') hold no value for "
                        f"{len(missing)} of the {total} tensors of the evaluated network (e.g. "
                        f"{missing[0]}); the file holds "
                        f"{checkpoint_contents(read_checkpoint_keys(path, 'MODEL.WEIGHTS'))}. "
                        f"Point MODEL.WEIGHTS at a tools/train_net.py checkpoint of this config "
                        f"(converted ImageNet weights go to MODEL.BACKBONE.WEIGHTS, for training)")
    results = UDATrainer.test(cfg, model)
    if comm.is_main_process():
        verify_results(cfg, results)
    return results


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return evaluate(cfg, args)
    try:
        trainer = UDATrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()
    finally:
        release_run_lock(cfg.OUTPUT_DIR)  # setup's hold; the trainer releases its own


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    return exit_on_user_error(lambda: launch(
        main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url, args=(args,)), debug=args.debug)


if __name__ == "__main__":
    cli()
