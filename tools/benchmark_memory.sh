#!/usr/bin/env bash
# The memory levers of issue 16, one row each, for DUDA and for single-pair self-training with
# the same options, against plain self-training as DAFormer/MIC run it (the first row), at the
# paper recipe's size: crop 512, batch 2 + 2, MiT-B5/DAFormer pair (+ MiT-B0 student), FD and
# MIC on. Peak RSS on the CPU, CUDA max allocated on a GPU (tools/benchmark_train.py).
# Usage: tools/benchmark_memory.sh [STEPS=2] [ROUNDS=1] [extra benchmark_train.py --opts ...]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-2}
ROUNDS=${2:-1}
shift $(( $# > 2 ? 2 : $# ))
PY=${PYTHON:-.venv/bin/python}
ST=configs/gta2cs/self_training.yaml
DUDA=configs/gta2cs/duda.yaml
CKPT_OFF=(MODEL.DUDA.LARGE_ACTIVATION_CHECKPOINTING False)
ST_CKPT=(MODEL.MIT.ACTIVATION_CHECKPOINTING True MODEL.SEM_SEG_HEAD.ACTIVATION_CHECKPOINTING True)
BF16_TEACHER=(MODEL.UDA.TEACHER_AUTOCAST bfloat16)
BF16_FD=(MODEL.UDA.FD_REFERENCE_AUTOCAST bfloat16)
AMP=(SOLVER.AMP.ENABLED True SOLVER.AMP.PRECISION bfloat16)
"$PY" tools/benchmark_train.py --crop 512 --batch 2 --warmup 1 --steps "$STEPS" \
  --rounds "$ROUNDS" --output-dir output/benchmark_memory \
  --config-file $ST \
  --config-file $ST "${ST_CKPT[@]}" \
  --config-file $ST "${BF16_TEACHER[@]}" \
  --config-file $ST "${BF16_FD[@]}" \
  --config-file $ST "${AMP[@]}" \
  --config-file $DUDA "${CKPT_OFF[@]}" \
  --config-file $DUDA \
  --config-file $DUDA "${CKPT_OFF[@]}" "${BF16_TEACHER[@]}" \
  --config-file $DUDA "${CKPT_OFF[@]}" "${BF16_FD[@]}" \
  --config-file $DUDA "${CKPT_OFF[@]}" "${AMP[@]}" \
  --config-file $DUDA MODEL.MIT.ACTIVATION_CHECKPOINTING True \
  "$@"
