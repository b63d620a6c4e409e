#!/usr/bin/env bash
# Table 7 (AFI blocks in one stage only).
. "$(dirname "$0")/common.sh"
if [ "$SCALE" = full ]; then
  for base in resnet32 resnet110; do
    full_train "$base" "$base" cifar100 --recipe paper-cifar
    for s in 1 2 3; do full_train "afi_$base-stage$s" "afi_$base" cifar100 --recipe paper-cifar --afi-stages "$s"; done
  done
  $AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 7
else
  RUNS=$RESULTS/runs-ablation  # its own subset size: kept apart from the table4.sh runs
  # CPU proxy: the ResNet-20 pair with AFI blocks in stage 1, 2 or 3 only, on a smaller subset.
  export REDUCED_SIZE=${T7_SIZE:-2000} REDUCED_EPOCHS=${T7_EPOCHS:-3}
  reduced_train t7-resnet20 resnet20
  reduced_train t7-afi_resnet20 afi_resnet20
  for s in 1 2 3; do reduced_train "t7-afi_resnet20-stage$s" afi_resnet20 --afi-stages "$s"; done
  python "$HERE/summarize.py" "$RUNS" t7- > "$RESULTS/table7.md"
fi
