#!/usr/bin/env python
"""The deployed student on the CPU: PyTorch eager fp32, ONNX Runtime fp32 and ONNX Runtime int8,
side by side in one run.

    python tools/benchmark_deploy.py [--config-file configs/demo/duda_synthetic.yaml \
        --weights output/demo/duda_synthetic/model_final.pth] [--sizes 512x1024 1024x2048] \
        [--runs 10] [--warmup 2] [--threads N] [--calibration-images 300] \
        [--eval-dataset synthetic_uda_target_val] [--work-dir output/benchmark_deploy]

The student is exported once (``tools/export_student.py``'s ``export``: student.pth,
student.onnx, and student_int8.onnx calibrated on the config's target *training* images, no
labels) into ``--work-dir``. Then:

- **speed**: every (runtime, size) runs in a fresh process (its peak RSS is its own), batch 1,
  a uint8 RGB image in, logits at the input size out (normalisation and upsampling included in
  all three), ``--warmup`` untimed then ``--runs`` timed calls, the same number of threads for
  PyTorch and ONNX Runtime. Rows alternate runtimes within each size. Printed: median and p90
  latency, images/s, peak RSS and its growth over the process before the model was loaded,
  and the speed-up over PyTorch eager fp32 at the same size;
- **accuracy**: mIoU of the three on ``--eval-dataset`` (default: the config's test set, the
  synthetic target val) at its own size, through the same test loader and evaluator as
  ``tools/train_net.py --eval-only``, and the int8 delta;
- **files**: the sizes of student.pth, student.onnx and student_int8.onnx.

Without ``--weights`` the demo's trained DUDA student is used (``make demo`` writes it).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
from typing import Dict, List, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

from tabulate import tabulate  # noqa: E402

RUNTIMES = ("pytorch", "onnxruntime", "onnxruntime-int8")
RUNTIME_LABELS = {"pytorch": "PyTorch eager fp32", "onnxruntime": "ONNX Runtime fp32",
                  "onnxruntime-int8": "ONNX Runtime int8"}
DEFAULT_CONFIG = "configs/demo/duda_synthetic.yaml"
DEFAULT_WEIGHTS = "output/demo/duda_synthetic/model_final.pth"


def parse_size(text: str) -> Tuple[int, int]:
    """``"512x1024"`` -> (512, 1024) (height x width)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not HEIGHTxWIDTH (e.g. 512x1024)")
    if height < 32 or width < 32:
        raise argparse.ArgumentTypeError(f"size '{text}': both sides must be at least 32")
    return height, width


def _memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc (Linux; 0 elsewhere).
    Not ``ru_maxrss``: Linux carries that across ``exec``, so a worker started by a large
    parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _load_runtime(runtime: str, paths: Dict[str, str], threads: int):
    """A callable on one uint8 (1, 3, H, W) numpy image for ``runtime``."""
    import torch

    torch.set_num_threads(threads)
    if runtime == "pytorch":
        from detectron2.modeling import build_model

        from duda_d2 import load_config
        from duda_d2.deploy.deployable import deployable_network
        from duda_d2.engine import AtomicCheckpointer

        cfg = load_config(paths["config"], ["MODEL.DEVICE", "cpu"])
        model = build_model(cfg).eval()
        AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        module = deployable_network(model.inference_network(), cfg.MODEL.PIXEL_MEAN,
                                    cfg.MODEL.PIXEL_STD, cfg.MODEL.TASK == "panoptic")

        def run(image):
            with torch.inference_mode():
                return module(torch.from_numpy(image))
        return run
    from duda_d2.deploy.onnx_runtime import OnnxSegmenter

    segmenter = OnnxSegmenter(paths["onnx_int8" if runtime.endswith("int8") else "onnx"],
                              threads=threads)
    return segmenter


def measure_speed(runtime: str, paths: Dict[str, str], size: Tuple[int, int], runs: int,
                  warmup: int, threads: int) -> dict:
    """Latencies (s) and peak RSS of ``runtime`` at ``size`` (run in a fresh process)."""
    import numpy as np

    import torch

    from duda_d2.utils.benchmark import time_runs

    idle = _memory_mib("VmRSS")
    run = _load_runtime(runtime, paths, threads)
    image = np.random.default_rng(0).integers(0, 256, (1, 3, *size), dtype=np.uint8)
    timing = time_runs(lambda: run(image), runs, warmup, torch.device("cpu"))
    return {"seconds": timing.seconds, "peak_mib": _memory_mib("VmHWM"), "idle_mib": idle}


def _in_fresh_process(function, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def evaluate_miou(runtime: str, paths: Dict[str, str], dataset: str, threads: int) -> dict:
    """mIoU of ``runtime`` on ``dataset`` (the export's config's test loader and evaluator)."""
    import torch
    from detectron2.evaluation import inference_on_dataset
    from detectron2.modeling import build_model

    from duda_d2 import load_config
    from duda_d2.data.build import build_sem_seg_test_loader
    from duda_d2.deploy.onnx_runtime import OnnxSegmentorModel, OnnxSegmenter
    from duda_d2.engine import AtomicCheckpointer
    from duda_d2.evaluation import UDASemSegEvaluator
    from duda_d2.modeling.tasks import build_task

    torch.set_num_threads(threads)
    cfg = load_config(paths["config"], ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", 0])
    if runtime == "pytorch":
        model = build_model(cfg).eval()
        AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        model = OnnxSegmentorModel(OnnxSegmenter(
            paths["onnx_int8" if runtime.endswith("int8") else "onnx"], threads=threads),
            build_task(cfg))
    evaluator = UDASemSegEvaluator(dataset, distributed=False)
    results = inference_on_dataset(model, build_sem_seg_test_loader(cfg, dataset), evaluator)
    return dict(results["sem_seg"])


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (inclusive linear interpolation; the largest of fewer than 2)."""
    if len(values) < 2:
        return max(values)
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def speed_table(results: Dict[Tuple[str, Tuple[int, int]], dict]) -> List[list]:
    """One row per (size, runtime): latencies, images/s, memory and the speed-up over
    PyTorch eager at the same size."""
    rows = []
    sizes = sorted({size for _, size in results}, key=lambda s: s[0] * s[1])
    for size in sizes:
        base = statistics.median(results[("pytorch", size)]["seconds"])
        for runtime in RUNTIMES:
            r = results[(runtime, size)]
            median = statistics.median(r["seconds"])
            rows.append([f"{size[0]}x{size[1]}", RUNTIME_LABELS[runtime],
                         f"{median * 1000:.0f}", f"{p90(r['seconds']) * 1000:.0f}",
                         f"{1 / median:.2f}", f"{r['peak_mib']:.0f}",
                         f"{r['peak_mib'] - r['idle_mib']:.0f}", f"{base / median:.2f}x"])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--network", default="small_student")
    parser.add_argument("--sizes", nargs="+", type=parse_size,
                        default=[(512, 1024), (1024, 2048)])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of PyTorch and ONNX Runtime (0: torch's default here)")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--calibration-method", default="minmax",
                        choices=("minmax", "percentile", "entropy"))
    parser.add_argument("--eval-dataset", default="",
                        help="data set scored for the mIoU columns (default: the config's "
                             "first DATASETS.TEST; '-' skips the scoring)")
    parser.add_argument("--work-dir", default="output/benchmark_deploy")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    if not os.path.isfile(args.weights):
        print(f"error: weight file '{args.weights}' does not exist: train a model first (the "
              f"default is the demo's, written by `make demo`) or pass --weights and "
              f"--config-file", file=sys.stderr)
        return 1
    import torch

    import export_student
    from duda_d2 import load_config
    from duda_d2.utils.user_errors import exit_on_user_error

    from detectron2.data import DatasetCatalog

    threads = args.threads or torch.get_num_threads()
    dataset = args.eval_dataset or next(iter(load_config(args.config_file, args.opts)
                                              .DATASETS.TEST), "")
    if dataset not in ("", "-") and dataset not in DatasetCatalog.list():
        print(f"error: --eval-dataset '{dataset}' is not a registered data set; name one "
              f"(e.g. synthetic_uda_target_val) or pass '-' to skip the accuracy table",
              file=sys.stderr)
        return 1
    try:
        paths = exit_on_user_error(lambda: export_student.export(
            args.config_file, args.weights, args.work_dir, args.network, fmt="onnx",
            opts=args.opts, int8=True, calibration_images=args.calibration_images,
            calibration_method=args.calibration_method))
    except SystemExit as error:
        return error.code
    results = {}
    for size in args.sizes:
        for runtime in RUNTIMES:
            results[(runtime, size)] = _in_fresh_process(measure_speed, runtime, paths, size,
                                                         args.runs, args.warmup, threads)
    print(f"\nlatency, batch 1, {args.runs} runs after {args.warmup} warm-up, {threads} "
          f"threads; peak RSS of a fresh process per row (growth: over the process before "
          f"the model was loaded)")
    print(tabulate(speed_table(results), tablefmt="github", headers=[
        "H x W", "runtime", "median ms", "p90 ms", "images/s", "peak RSS MiB",
        "growth MiB", "speed-up vs eager"]))
    files = [[name, os.path.basename(paths[key]), f"{os.path.getsize(paths[key]) / 2**20:.1f}"]
             for name, key in (("PyTorch checkpoint", "weights"), ("ONNX fp32", "onnx"),
                               ("ONNX int8", "onnx_int8"))]
    print()
    print(tabulate(files, headers=["model file", "name", "MiB"], tablefmt="github"))
    if dataset and dataset != "-":
        scores = {r: _in_fresh_process(evaluate_miou, r, paths, dataset, threads)
                  for r in RUNTIMES}
        base = scores["pytorch"]["mIoU"]
        rows = [[RUNTIME_LABELS[r], f"{scores[r]['mIoU']:.2f}",
                 f"{scores[r]['mIoU'] - base:+.2f}", f"{scores[r]['pACC']:.2f}"]
                for r in RUNTIMES]
        print(f"\naccuracy on {dataset} (its own size)")
        print(tabulate(rows, headers=["runtime", "mIoU", "delta vs eager", "pixel acc."],
                       tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
