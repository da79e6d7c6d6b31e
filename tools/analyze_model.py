#!/usr/bin/env python
"""Parameters and FLOPs (fvcore) of each network a config builds, at a given input size.

    python tools/analyze_model.py --config-file configs/networks/mit_b5_daformer.yaml \
        [--height 512 --width 1024] [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.utils.analysis import network_stats
from duda_d2.utils.benchmark import config_label


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, action="append",
                        help="config to analyse (repeat the flag for several)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    rows = []
    for config_file in args.config_file:
        cfg = load_config(config_file, args.opts + ["MODEL.DEVICE", "cpu"])
        model = build_model(cfg)
        for s in network_stats(model, (args.height, args.width)):
            rows.append([config_label(config_file), s.name, f"{s.backbone_params / 1e6:.2f}",
                         f"{s.head_params / 1e6:.2f}", f"{s.params / 1e6:.2f}", f"{s.gflops:.1f}"])
    print(f"input {args.height}x{args.width} (H x W), batch 1; FLOPs = fused multiply-adds")
    print(tabulate(rows, headers=["config", "network", "backbone M", "head M", "total M",
                                  "GFLOPs"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
