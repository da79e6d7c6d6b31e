#!/usr/bin/env bash
# GPU check of the training cost (one short script for a lent GPU, ~12 minutes on an H100):
#  1. tools/benchmark_train.py at 512x512 crops, batch 2+2, AMP: self-training with the
#     MiT-B5/DAFormer pair vs DUDA (same pair + MiT-B0 student), per-stage backward on and off;
#  2. a short real-size DUDA training (512 crops, AMP) on the synthetic data, evaluated;
#     prints its seconds per iteration and CUDA max memory;
#  3. several processes: with >= 2 GPUs, benchmark_train.py with 1 and 2 processes (NCCL,
#     DistributedDataParallel per network) with and without MODEL.SYNC_BN; with one GPU, a
#     short MODEL.SYNC_BN training in one process (the SyncBatchNorm path, CUDA only).
#  4. the memory levers of tools/benchmark_memory.sh (fp32), the default DUDA vs self-training
#     under AMP, and the EMA update loop vs multi-tensor (tools/benchmark_ema.py).
# Weight files are not needed (random initialisation); the synthetic data is generated if
# missing. Usage: tools/gpu_check.sh [PRECISION=bfloat16|float16] [ITERS=100]
set -euo pipefail
cd "$(dirname "$0")/.."
PRECISION=${1:-bfloat16}
ITERS=${2:-100}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || make venv
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this check needs a GPU'; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ ! -f "${DETECTRON2_DATASETS:-datasets}/synthetic_uda/meta.json" ]; then
  "$PY" datasets/prepare_synthetic.py --nproc 8
fi
AMP=(SOLVER.AMP.ENABLED True SOLVER.AMP.PRECISION "$PRECISION")

echo "== 1. training step, crop 512, batch 2+2, AMP $PRECISION"
"$PY" tools/benchmark_train.py --crop 512 --batch 2 --warmup 3 --steps 10 --rounds 2 \
  --output-dir output/gpu_check/benchmark_train \
  --config-file configs/gta2cs/self_training.yaml \
  --config-file configs/gta2cs/duda.yaml \
  --config-file configs/gta2cs/duda.yaml SOLVER.BACKWARD_PER_STAGE False \
  --opts "${AMP[@]}"

echo "== 2. DUDA training, $ITERS iterations at 512 crops on the synthetic data, AMP $PRECISION"
OUT=output/gpu_check/duda_synthetic_512
rm -rf "$OUT"
"$PY" tools/train_net.py --config-file configs/gta2cs/duda.yaml \
  DATASETS.SOURCE_TRAIN '("synthetic_uda_source_train",)' \
  DATASETS.TARGET_TRAIN '("synthetic_uda_target_train",)' \
  DATASETS.TEST '("synthetic_uda_target_val",)' DATALOADER.RCS.ENABLED False \
  MODEL.BACKBONE.WEIGHTS '' MODEL.DUDA.LARGE_NETWORK_OPTS "['MODEL.BACKBONE.WEIGHTS', '']" \
  MODEL.UDA.FD_RANDOM_REFERENCE True \
  INPUT.CROP.SIZE '(512, 512)' INPUT.SOURCE_SIZE '(512, 683)' INPUT.TARGET_SIZE '(512, 683)' \
  INPUT.TEST_SIZE '(512, 683)' SOLVER.MAX_ITER "$ITERS" SOLVER.CHECKPOINT_PERIOD "$ITERS" \
  MODEL.DUDA.PRE_ADAPTATION_ITERS 20 MODEL.DUDA.RAMP_ITERS 20 TEST.EVAL_PERIOD 0 \
  "${AMP[@]}" OUTPUT_DIR "$OUT" > "$OUT.log" 2>&1 || { tail -40 "$OUT.log"; exit 1; }
"$PY" - "$OUT" <<'PYEOF'
import json, os, re, statistics, sys
out = sys.argv[1]
rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
times = [r["time"] for r in rows if "time" in r]
final = {k: v for r in rows for k, v in r.items()}
mem = [int(m) for m in re.findall(r"max_mem: (\d+)M", open(os.path.join(out, "log.txt")).read())]
print(f"median s/it {statistics.median(times):.3f} (min {min(times):.3f}, max {max(times):.3f})")
print(f"max CUDA memory {max(mem) if mem else 'n/a'} MiB (Detectron2's max_mem)")
print("small-student target mIoU after", final.get("iteration"), "iterations:",
      round(final.get("sem_seg/mIoU", float("nan")), 1))
PYEOF

echo "== 3. several processes (DDP per trainable network, MODEL.SYNC_BN)"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  "$PY" tools/benchmark_train.py --crop 512 --batch 2 --warmup 3 --steps 10 --rounds 1 \
    --processes 1 2 --output-dir output/gpu_check/benchmark_ddp \
    --config-file configs/gta2cs/duda.yaml \
    --config-file configs/gta2cs/duda.yaml MODEL.SYNC_BN True \
    --opts "${AMP[@]}"
else
  echo "one GPU: the 2-process comparison needs two; SyncBatchNorm path in one process"
  OUT=output/gpu_check/sync_bn
  rm -rf "$OUT"
  "$PY" tools/train_net.py --config-file configs/synthetic/duda.yaml MODEL.DEVICE cuda \
    MODEL.SYNC_BN True SOLVER.MAX_ITER 20 DATALOADER.NUM_WORKERS 2 OUTPUT_DIR "$OUT" \
    > "$OUT.log" 2>&1 || { tail -40 "$OUT.log"; exit 1; }
  grep -o "sem_seg/mIoU[^,]*" "$OUT/metrics.json" | tail -1 || true
  echo "SyncBatchNorm training: ok"
fi

echo "== 4. memory levers (issue 16): one row each, DUDA and self-training, crop 512, 2+2, fp32"
# The same rows as README's CPU table (CUDA max allocated), then the defaults under AMP.
tools/benchmark_memory.sh 5 2
"$PY" tools/benchmark_train.py --crop 512 --batch 2 --warmup 3 --steps 5 --rounds 1 \
  --output-dir output/gpu_check/benchmark_memory_amp \
  --config-file configs/gta2cs/self_training.yaml \
  --config-file configs/gta2cs/duda.yaml \
  --opts "${AMP[@]}"
"$PY" tools/benchmark_ema.py --device cuda
