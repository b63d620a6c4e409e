#!/usr/bin/env bash
# Table 3 (Office-Home transfer). Needs ImageNet-trained ResNet-50 / AFI-ResNet-50 checkpoints
# (table5.sh) and Office-Home under $AFICTL_DATA/office-home: no reduced-scale variant here.
. "$(dirname "$0")/common.sh"
if [ "$SCALE" != full ]; then echo "Table 3 needs Office-Home and ImageNet checkpoints: run with SCALE=full" >&2; exit 0; fi
for arch in resnet50 afi_resnet50; do
  $AFICTL transfer --checkpoint "$RUNS/$arch/best.pt" --data-root "${AFICTL_DATA:?}/office-home" --all-pairs \
    --device cuda --run-root "$RUNS/transfer" --format json --output "$RESULTS/transfer-$arch.json"
done
$AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 3 \
  --transfer "$RESULTS/transfer-resnet50.json" --transfer "$RESULTS/transfer-afi_resnet50.json"
