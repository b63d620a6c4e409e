#!/usr/bin/env bash
# Table 8 (reduction ratio r of AFI-ResNet-50 on ImageNet).
. "$(dirname "$0")/common.sh"
if [ "$SCALE" = full ]; then
  for r in 1 2 4 8; do full_train "afi_resnet50-r$r" afi_resnet50 imagenet --recipe paper-imagenet --reduction "$r"; done
  $AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 8
else
  RUNS=$RESULTS/runs-ablation  # its own subset size: kept apart from the table4.sh runs
  # CPU proxy: the same sweep on AFI-ResNet-20 / CIFAR-10 (subset as in table7.sh; r = 4 is t7-afi_resnet20).
  export REDUCED_SIZE=${T7_SIZE:-2000} REDUCED_EPOCHS=${T7_EPOCHS:-3}
  reduced_train t7-afi_resnet20 afi_resnet20
  for r in 1 2 8; do reduced_train "t8-afi_resnet20-r$r" afi_resnet20 --reduction "$r"; done
  python "$HERE/summarize.py" "$RUNS" t8- t7-afi_resnet20 | grep -v -- "-stage[0-9] " > "$RESULTS/table8.md"
fi
