#!/usr/bin/env python
"""`make demo`: DUDA on the synthetic "game -> real" benchmark, on the CPU, from nothing.

1. prepares the synthetic dataset if it is missing (datasets/prepare_synthetic.py);
2. trains a source-only MiT-B0 and the DUDA demo (configs/synthetic/duda.yaml) on the
   same budget (finished runs are reused; ``--fresh`` retrains);
3. prints both target-val mIoUs and saves a picture -- target image | source-only |
   DUDA small student | ground truth -- for a few validation images.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from duda_d2.utils.runs import finished_run, read_metrics, reset_run_dir  # noqa: E402

DUDA_CONFIG = os.path.join(REPO, "configs/synthetic/duda.yaml")
SOURCE_ONLY_CONFIG = os.path.join(REPO, "configs/synthetic/source_only.yaml")


def train(name: str, config_file: str, output_dir: str, opts, fresh: bool) -> float:
    """The final mIoU of ``config_file`` trained in ``output_dir``: a finished run trained with
    this very config is reused (unless ``fresh``), anything else is trained from scratch."""
    done = None if fresh else finished_run(output_dir, config_file, opts)
    if done is not None:
        print(f"[demo] {name}: reusing the finished run in {output_dir}")
        return done[0]["sem_seg/mIoU"]
    if not fresh and "sem_seg/mIoU" in read_metrics(output_dir)[0]:
        print(f"[demo] {name}: {config_file} changed since {output_dir} was trained")
    print(f"[demo] training {name} -> {output_dir} (log: {output_dir}/log.txt)", flush=True)
    start = time.time()
    reset_run_dir(output_dir)
    console = os.path.join(output_dir, "console.log")
    with open(console, "w") as log:
        result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                                 "--config-file", config_file, "OUTPUT_DIR", output_dir, *opts],
                                stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        with open(console) as log:
            sys.stderr.write("".join(log.readlines()[-30:]))
        raise SystemExit(f"[demo] training {name} failed; full output in {console}")
    print(f"[demo] {name} trained in {time.time() - start:.0f} s")
    return read_metrics(output_dir)[0]["sem_seg/mIoU"]


def prediction_panel(runs, num_images: int, path: str) -> None:
    """Rows of target image | each run's prediction | ground truth, in Cityscapes colours."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from duda_d2 import load_config
    from duda_d2.data.datasets.cityscapes_classes import STUFF_COLORS
    from duda_d2.engine import AtomicCheckpointer

    palette = np.zeros((256, 3), np.uint8)
    palette[:len(STUFF_COLORS)] = STUFF_COLORS
    models = []
    for config_file, output_dir in runs:
        cfg = load_config(config_file, ["MODEL.DEVICE", "cpu"])
        model = build_model(cfg).eval()
        AtomicCheckpointer(model).load(os.path.join(output_dir, "model_final.pth"))
        models.append(model)
    records = DatasetCatalog.get("synthetic_uda_target_val")[:num_images]
    rows = []
    for record in records:
        image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
        label = np.asarray(Image.open(record["sem_seg_file_name"]))
        tiles = [image]
        tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
        for model in models:
            with torch.no_grad():
                pred = model([{"image": tensor}])[0]["sem_seg"].argmax(0).numpy()
            tiles.append(palette[pred])
        tiles.append(palette[label])
        rows.append(np.concatenate(tiles, axis=1))
    picture = np.concatenate(rows, axis=0)
    Image.fromarray(picture).resize((picture.shape[1] * 2, picture.shape[0] * 2),
                                    Image.NEAREST).save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="retrain even if runs exist")
    parser.add_argument("--output-dir", default=os.path.join(REPO, "output", "demo"))
    args = parser.parse_args(argv)

    from duda_d2 import load_config
    from duda_d2.data.datasets import dataset_root

    if not os.path.isfile(os.path.join(dataset_root(), "synthetic_uda", "meta.json")):
        print(f"[demo] preparing the synthetic dataset in {dataset_root()}/synthetic_uda")
        subprocess.run([sys.executable, os.path.join(REPO, "datasets", "prepare_synthetic.py")],
                       check=True)
    duda_cfg = load_config(DUDA_CONFIG)
    # The source-only baseline gets the small student's budget: same iterations and source batch.
    budget = ["SOLVER.MAX_ITER", str(duda_cfg.SOLVER.MAX_ITER), "SOLVER.IMS_PER_BATCH",
              str(duda_cfg.DATALOADER.SOURCE_IMS_PER_BATCH)]
    so_dir = os.path.join(args.output_dir, "source_only_synthetic")
    duda_dir = os.path.join(args.output_dir, "duda_synthetic")
    so = train("source-only MiT-B0", SOURCE_ONLY_CONFIG, so_dir, budget, args.fresh)
    duda = train("DUDA (MiT-B1 large pair -> MiT-B0 student)", DUDA_CONFIG, duda_dir, [],
                 args.fresh)
    picture = os.path.join(args.output_dir, "demo_predictions.png")
    prediction_panel([(SOURCE_ONLY_CONFIG, so_dir), (DUDA_CONFIG, duda_dir)], 4, picture)
    print("\nTarget-val mIoU of the MiT-B0 network (synthetic game -> real shift):")
    print(f"  source-only          {so:5.1f}")
    print(f"  DUDA small student   {duda:5.1f}")
    print(f"picture (target | source-only | DUDA | ground truth): {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
