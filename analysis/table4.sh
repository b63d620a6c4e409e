#!/usr/bin/env bash
# Table 4 (accuracy on CIFAR-100) and Figure 4: each AFI model against its baseline, same recipe and seed.
. "$(dirname "$0")/common.sh"
if [ "$SCALE" = full ]; then
  for arch in resnet32 afi_resnet32 resnet110 afi_resnet110 shufflenetv2 afi_shufflenetv2 mobilenetv2 \
              afi_mobilenetv2 densenet40 resnext29_32x4d afi_resnext29_32x4d densenet100; do
    full_train "$arch" "$arch" cifar100 --recipe paper-cifar
  done
  $AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 4 --cifar-dataset cifar100
else
  # CPU: ResNet-20 pair on a CIFAR-10 subset (the smallest models of the family, same wiring).
  for arch in resnet20 afi_resnet20; do reduced_train "$arch" "$arch"; done
  $AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 4 --cifar-dataset imagefolder
fi
