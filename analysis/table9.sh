#!/usr/bin/env bash
# Table 9 (AFI-MobileNetV2 with SE, GE, CBAM, ECA on the AFI result).
. "$(dirname "$0")/common.sh"
archs="mobilenetv2 afi_mobilenetv2 afi_mobilenetv2_se afi_mobilenetv2_ge afi_mobilenetv2_cbam afi_mobilenetv2_eca"
if [ "$SCALE" = full ]; then
  for arch in $archs; do full_train "$arch" "$arch" cifar100 --recipe paper-cifar; done
  $AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 9
else
  RUNS=$RESULTS/runs-table9  # its own subset size: kept apart from the table4.sh runs
  export REDUCED_SIZE=${T9_SIZE:-2000} REDUCED_EPOCHS=${T9_EPOCHS:-3}
  for arch in $archs; do reduced_train "t9-$arch" "$arch"; done
  python "$HERE/summarize.py" "$RUNS" t9- > "$RESULTS/table9.md"
fi
