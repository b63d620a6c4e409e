#!/usr/bin/env bash
# Multi-GPU training with PyTorch's own DDP, launched by torchrun (one process per GPU).
#   bash examples/multi_gpu_torchrun.sh                 # 8 GPUs, AFI-ResNet-50 on ImageNet
#   DEMO=1 bash examples/multi_gpu_torchrun.sh /tmp/run # 2 CPU processes (gloo) on generated shapes
# Several machines: add --nnodes=N --node_rank=K --rdzv_endpoint=HOST:PORT to torchrun.
set -euo pipefail
RUN_DIR=${1:-runs/afi_resnet50-imagenet-ddp}
if [ "${DEMO:-0}" = 1 ]; then
  exec torchrun --standalone --nproc_per_node=2 -m afictl train --arch afi_resnet20 --data shapes \
    --data-size 64 --epochs 1 --batch-size 16 --device cpu --run-dir "$RUN_DIR"
fi
# --batch-size is global (split over the processes); the lr of paper-imagenet follows it (0.1 x batch/256).
exec torchrun --standalone --nproc_per_node="${NPROC:-8}" -m afictl train --arch afi_resnet50 --data imagenet \
  --data-root "${AFICTL_DATA:-data}/imagenet" --batch-size 256 --device cuda --amp bf16 --channels-last \
  --sync-bn --workers 8 --run-dir "$RUN_DIR"
