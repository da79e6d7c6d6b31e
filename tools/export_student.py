#!/usr/bin/env python
"""Export one network of a trained model (by default DUDA's small student) for deployment.

    python tools/export_student.py --config-file configs/gta2cs/duda.yaml \
        --weights output/duda_gta2cs/model_final.pth --output-dir export/ \
        [--network small_student|large_student|teacher] [--height 512 --width 1024] \
        [--format torchscript|none]

Writes ``student.pth`` (the network alone, as a ``UDASegmentor`` checkpoint) and
``student.yaml`` (a plain Detectron2 config of that ``UDASegmentor`` pointing at it), which
``tools/train_net.py --eval-only`` and ``tools/predict.py`` load like any model, and
``student.ts`` (TorchScript traced at ``--height`` x ``--width``: uint8 RGB (N, 3, H, W) of
that size in, logits at the input size out -- trace at the size the device will feed).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.engine import AtomicCheckpointer
from duda_d2.modeling.network import checkpoint_contents, read_checkpoint_keys, sub_network_config
from duda_d2.uda.losses import upsample_logits
from duda_d2.utils.atomic_files import atomic_write_bytes
from duda_d2.utils.user_errors import UserError, exit_on_user_error

NETWORKS = ("small_student", "large_student", "teacher")
# The networks each meta-architecture has (``small_student``: its student).
HELD_NETWORKS = {"DUDA": NETWORKS, "SelfTrainingUDA": ("small_student", "teacher"),
                 "UDASegmentor": ("small_student",)}


class DeployableSegmenter(nn.Module):
    """Pixel normalisation + network + upsampling: what a deployed model runs."""

    def __init__(self, network: nn.Module, pixel_mean, pixel_std):
        super().__init__()
        self.network = network
        self.register_buffer("pixel_mean", torch.as_tensor(pixel_mean).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.as_tensor(pixel_std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return upsample_logits(self.network(x)["sem_seg"], images.shape[-2:])


def network_config(cfg, network: str):
    """The config describing the chosen network as a plain ``UDASegmentor``."""
    if network == "small_student" or cfg.MODEL.META_ARCHITECTURE != "DUDA":
        out = cfg.clone()
    else:  # the large pair is described by MODEL.DUDA.LARGE_NETWORK
        out = sub_network_config(cfg, cfg.MODEL.DUDA.LARGE_NETWORK,
                                 cfg.MODEL.DUDA.LARGE_NETWORK_OPTS, "MODEL.DUDA.LARGE_NETWORK")
    out.defrost()
    out.MODEL.META_ARCHITECTURE = "UDASegmentor"
    out.MODEL.BACKBONE.WEIGHTS = ""
    return out


def export(config_file: str, weights: str, output_dir: str, network: str = "small_student",
           size=(512, 1024), fmt: str = "torchscript", opts=()) -> dict:
    """Write student.pth / student.yaml (/ student.ts); returns their paths."""
    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu",
                                                 "MODEL.BACKBONE.WEIGHTS", ""])
    if cfg.MODEL.META_ARCHITECTURE == "DUDA":
        cfg.MODEL.DUDA.LARGE_NETWORK_OPTS = list(cfg.MODEL.DUDA.LARGE_NETWORK_OPTS) + [
            "MODEL.BACKBONE.WEIGHTS", ""]
    # The chosen network is the one the model evaluates when told so.
    arch = cfg.MODEL.META_ARCHITECTURE
    held = HELD_NETWORKS.get(arch, ("small_student",))
    if arch == "DUDA":
        cfg.MODEL.DUDA.INFERENCE_NETWORK = network
    else:
        cfg.MODEL.UDA.INFERENCE_NETWORK = "teacher" if network == "teacher" else "student"
    model = build_model(cfg)
    checkpointer = AtomicCheckpointer(model, weights_key="--weights")
    checkpointer.load(weights)  # a missing or unreadable file: its own error
    chosen = model.inference_network().eval()
    missing = () if network not in held else checkpointer.missing_tensors(chosen)
    if network not in held or missing:
        why = (f"{config_file} builds a {arch}, which has no {network} (it has "
               f"{', '.join(held)})" if network not in held else
               f"'{weights}' holds no weights for the {network} ({len(missing)} of its "
               f"{len(chosen.state_dict())} tensors missing, e.g. {missing[0]})")
        raise UserError(f"cannot export the {network}: {why}. The file holds "
                        f"{checkpoint_contents(read_checkpoint_keys(weights, '--weights'))}; "
                        f"export one of those with --network and the config it was trained "
                        f"with")
    os.makedirs(output_dir, exist_ok=True)
    paths = {"weights": os.path.join(output_dir, "student.pth"),
             "config": os.path.join(output_dir, "student.yaml")}
    state = {f"network.{k}": v for k, v in chosen.state_dict().items()}
    atomic_write_bytes(paths["weights"], lambda f: torch.save({"model": state}, f))
    out_cfg = network_config(cfg, network)
    out_cfg.MODEL.WEIGHTS = os.path.abspath(paths["weights"])
    atomic_write_bytes(paths["config"], lambda f: f.write(out_cfg.dump().encode()))
    if fmt == "torchscript":
        deployable = DeployableSegmenter(chosen, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD).eval()
        example = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
        with torch.no_grad():
            traced = torch.jit.trace(deployable, example, check_trace=False)
        paths["torchscript"] = os.path.join(output_dir, "student.ts")
        atomic_write_bytes(paths["torchscript"], lambda f: torch.jit.save(traced, f))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="checkpoint written by train_net.py")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--network", choices=NETWORKS, default="small_student")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--format", choices=["torchscript", "none"], default="torchscript")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors a user can fix (also DUDA_DEBUG=1)")
    args = parser.parse_args(argv)
    try:
        paths = exit_on_user_error(lambda: export(
            args.config_file, args.weights, args.output_dir, args.network,
            (args.height, args.width), args.format, args.opts), debug=args.debug)
    except SystemExit as error:  # the message is printed
        return error.code
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
