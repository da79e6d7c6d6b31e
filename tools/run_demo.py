#!/usr/bin/env python
"""`make demo`: DUDA on the synthetic "game -> real" benchmark, on the CPU, from nothing.

1. prepares the synthetic dataset if it is missing (datasets/prepare_synthetic.py);
2. trains, on the same budget (iterations, source batch), the three rows DUDA's claim is
   about, each with a progress bar (iteration, loss, ETA; the full log stays in the run folder):
   source-only MiT-B0, small-pair self-training (MiT-B0 student and EMA teacher), and DUDA (a
   MiT-B1 large pair teaching a MiT-B0 student, configs/synthetic/duda.yaml); finished runs
   trained with the same config are reused (``--fresh`` retrains);
3. prints a table: the deployed network of each row, its size and CPU inference speed, and its
   target-val mIoU; saves ``demo_predictions.png`` (target image | each row | ground truth,
   with a class legend) and ``demo_class_iou.png`` (per-class IoU of the three rows).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402
from tqdm import tqdm  # noqa: E402

from duda_d2.utils.runs import finished_run, read_metrics, reset_run_dir  # noqa: E402

CONFIGS = os.path.join(REPO, "configs", "synthetic")


@dataclass
class DemoRow:
    """One trained configuration of the demo table."""

    title: str
    config_file: str
    folder: str
    opts: Sequence[str] = ()


def demo_rows(output_dir: str, budget: Sequence[str]) -> List[DemoRow]:
    """Source-only, small-pair self-training and DUDA, all with the DUDA demo's budget."""
    return [
        DemoRow("source-only", os.path.join(CONFIGS, "source_only.yaml"),
                os.path.join(output_dir, "source_only_synthetic"), budget),
        DemoRow("self-training (B0 pair)", os.path.join(CONFIGS, "self_training.yaml"),
                os.path.join(output_dir, "self_training_synthetic"), budget),
        DemoRow("DUDA (B1 pair -> B0)", os.path.join(CONFIGS, "duda.yaml"),
                os.path.join(output_dir, "duda_synthetic"), ()),
    ]


def follow_training(process: subprocess.Popen, output_dir: str, total: int,
                    title: str) -> None:
    """A tqdm bar fed from the run's ``metrics.json`` (iteration, loss, ETA) until it ends."""
    with tqdm(total=total, desc=f"[demo] {title}", unit="it", dynamic_ncols=True) as bar:
        while process.poll() is None:
            time.sleep(1.0)
            rows = [r for r in _metric_rows(output_dir) if "total_loss" in r]
            if rows and bar.n < total:
                bar.n = min(total, rows[-1]["iteration"] + 1)
                bar.set_postfix(loss=f"{rows[-1]['total_loss']:.3f}",
                                stage="evaluating" if bar.n == total else "training")
                bar.refresh()
        if process.returncode == 0:
            bar.n = total
            bar.refresh()


def _metric_rows(output_dir: str) -> List[Dict]:
    import json

    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line being written
                break
    return rows


def train(row: DemoRow, fresh: bool, extra_opts: Sequence[str]) -> Dict:
    """The final metrics of ``row``: a finished run trained with this very config is reused
    (unless ``fresh``), anything else is trained from scratch."""
    from duda_d2 import load_config

    opts = [*row.opts, *extra_opts]
    done = None if fresh else finished_run(row.folder, row.config_file, opts)
    if done is not None:
        print(f"[demo] {row.title}: reusing the finished run in {row.folder}")
        return done[0]
    if not fresh and "sem_seg/mIoU" in read_metrics(row.folder)[0]:
        print(f"[demo] {row.title}: {row.config_file} changed since {row.folder} was trained")
    reset_run_dir(row.folder)
    total = load_config(row.config_file, opts).SOLVER.MAX_ITER
    console = os.path.join(row.folder, "console.log")
    start = time.time()
    with open(console, "w") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
             row.config_file, "OUTPUT_DIR", row.folder, *opts],
            stdout=log, stderr=subprocess.STDOUT)
        follow_training(process, row.folder, total, row.title)
    if process.returncode != 0:
        with open(console) as log:
            sys.stderr.write("".join(log.readlines()[-30:]))
        raise SystemExit(f"[demo] training {row.title} failed; full output in {console}")
    print(f"[demo] {row.title}: trained in {time.time() - start:.0f} s (log: {console})")
    return read_metrics(row.folder)[0]


def load_trained(row: DemoRow, extra_opts: Sequence[str]):
    """The row's trained model (evaluating the network it deploys)."""
    from detectron2.modeling import build_model

    from duda_d2 import load_config
    from duda_d2.engine import AtomicCheckpointer

    cfg = load_config(row.config_file, [*row.opts, *extra_opts, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    AtomicCheckpointer(model).load(os.path.join(row.folder, "model_final.pth"))
    return model


def deployed_cost(model, size) -> Dict[str, float]:
    """Parameters (M) and CPU images/s of the network the row deploys, at ``size``."""
    from duda_d2.utils.benchmark import time_runs

    network = model.inference_network()
    images = torch.zeros(1, 3, *size)
    with torch.no_grad():
        timing = time_runs(lambda: model.inference_settings(network, images), runs=10,
                           warmup=2, device=torch.device("cpu"))
    return {"params": sum(p.numel() for p in network.parameters()) / 1e6,
            "images_per_s": 1.0 / timing.median}


def results_table(rows: List[DemoRow], metrics: List[Dict], costs: List[Dict]) -> str:
    table = [[row.title, f"{cost['params']:.2f}", f"{cost['images_per_s']:.0f}",
              f"{m['sem_seg/mIoU']:.1f}"] for row, m, cost in zip(rows, metrics, costs)]
    return tabulate(table, headers=["trained as", "deployed network params (M)",
                                    "CPU images/s", "target mIoU"], tablefmt="github")


def prediction_picture(rows: List[DemoRow], models, num_images: int, path: str) -> None:
    """Target image | each row's prediction | ground truth, titled, with a class legend."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch
    from PIL import Image

    from detectron2.data import DatasetCatalog, MetadataCatalog

    metadata = MetadataCatalog.get("synthetic_uda_target_val")
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(metadata.stuff_colors)] = metadata.stuff_colors
    titles = ["target image"] + [row.title for row in rows] + ["ground truth"]
    records = DatasetCatalog.get("synthetic_uda_target_val")[:num_images]
    fig, axes = plt.subplots(len(records), len(titles), squeeze=False,
                             figsize=(2.6 * len(titles), 2.1 * len(records) + 1.2))
    present = set()
    for r, record in enumerate(records):
        image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
        label = np.asarray(Image.open(record["sem_seg_file_name"]))
        tiles = [image]
        tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
        for model in models:
            with torch.no_grad():
                prediction = model([{"image": tensor}])[0]["sem_seg"].argmax(0).numpy()
            tiles.append(palette[prediction])
            present.update(np.unique(prediction).tolist())
        tiles.append(palette[label])
        present.update(int(c) for c in np.unique(label) if c < len(metadata.stuff_classes))
        for c, tile in enumerate(tiles):
            axes[r, c].imshow(tile, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=9)
    legend = [Patch(color=np.array(metadata.stuff_colors[c]) / 255, label=metadata.stuff_classes[c])
              for c in sorted(present)]
    fig.legend(handles=legend, loc="lower center", ncol=min(7, len(legend)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def class_iou_picture(rows: List[DemoRow], metrics: List[Dict], path: str) -> None:
    """Per-class target IoU of each row as grouped bars (classes the val set holds)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from detectron2.data import MetadataCatalog

    classes = [c for c in MetadataCatalog.get("synthetic_uda_target_val").stuff_classes
               if all(np.isfinite(m.get(f"sem_seg/IoU-{c}", float("nan"))) for m in metrics)]
    x = np.arange(len(classes))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(classes)), 3.6))
    for i, (row, m) in enumerate(zip(rows, metrics)):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [m[f"sem_seg/IoU-{c}"] for c in classes],
               width, label=f"{row.title} ({m['sem_seg/mIoU']:.1f} mIoU)")
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("target IoU (%)")
    ax.set_title("Per-class IoU on the synthetic target (MiT-B0 deployed network)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="retrain even if runs exist")
    parser.add_argument("--output-dir", default=os.path.join(REPO, "output", "demo"))
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE overrides for every run (e.g. a shorter schedule)")
    args = parser.parse_args(argv)

    from duda_d2 import load_config
    from duda_d2.data.datasets import dataset_root

    if not os.path.isfile(os.path.join(dataset_root(), "synthetic_uda", "meta.json")):
        print(f"[demo] preparing the synthetic dataset in {dataset_root()}/synthetic_uda")
        subprocess.run([sys.executable, os.path.join(REPO, "datasets", "prepare_synthetic.py")],
                       check=True)
    duda_cfg = load_config(os.path.join(CONFIGS, "duda.yaml"), args.opts)
    # Every row gets the small student's budget: same iterations and source (+ target) batch.
    d = duda_cfg.DATALOADER
    budget = ["SOLVER.MAX_ITER", str(duda_cfg.SOLVER.MAX_ITER),
              "SOLVER.IMS_PER_BATCH", str(d.SOURCE_IMS_PER_BATCH),
              "DATALOADER.SOURCE_IMS_PER_BATCH", str(d.SOURCE_IMS_PER_BATCH),
              "DATALOADER.TARGET_IMS_PER_BATCH", str(d.TARGET_IMS_PER_BATCH)]
    rows = demo_rows(args.output_dir, budget)
    metrics = [train(row, args.fresh, args.opts) for row in rows]
    models = [load_trained(row, args.opts) for row in rows]
    size = tuple(load_config(rows[0].config_file).INPUT.TEST_SIZE)
    if min(size) <= 0:
        size = (96, 128)  # the synthetic images' size
    costs = [deployed_cost(model, size) for model in models]
    predictions = os.path.join(args.output_dir, "demo_predictions.png")
    class_iou = os.path.join(args.output_dir, "demo_class_iou.png")
    prediction_picture(rows, models, 4, predictions)
    class_iou_picture(rows, metrics, class_iou)
    print(f"\nSynthetic game -> real shift, {duda_cfg.SOLVER.MAX_ITER} iterations each; "
          f"speed at {size[0]}x{size[1]}, batch 1, this CPU:")
    print(results_table(rows, metrics, costs))
    print(f"\npredictions: {predictions}\nper-class IoU: {class_iou}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
