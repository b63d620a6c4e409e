#!/usr/bin/env bash
# Table 5 (ImageNet top-1/top-5). Needs ImageNet and GPUs: no reduced-scale variant on this CPU
# (one epoch of ResNet-50 on ImageNet is days of 2-core CPU time).
. "$(dirname "$0")/common.sh"
if [ "$SCALE" != full ]; then echo "Table 5 needs ImageNet on a GPU box: run with SCALE=full" >&2; exit 0; fi
for arch in resnet50 afi_resnet50 resnet101 afi_resnet101 resnet152 afi_resnet152 mobilenet_v2 \
            afi_mobilenet_v2 resnext50_32x4d afi_resnext50_32x4d; do
  # multi-GPU: torchrun --nproc_per_node=8 -m afictl train ... (see docs/TRAINING.md)
  full_train "$arch" "$arch" imagenet --recipe paper-imagenet
done
$AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 5
