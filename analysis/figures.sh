#!/usr/bin/env bash
# Figures 2, 3 and 6 from the baseline/AFI pair of table4.sh (run it first).
#   full: ResNet-50 vs AFI-ResNet-50 on ImageNet (stage conv3, as in the paper);
#   reduced: ResNet-20 vs AFI-ResNet-20 on CIFAR-10 (stage conv3, the last CIFAR stage).
. "$(dirname "$0")/common.sh"
if [ "$SCALE" = full ]; then base=resnet50; afi=afi_resnet50; else base=resnet20; afi=afi_resnet20; fi
for r in "$base" "$afi"; do
  [ -f "$RUNS/$r/best.pt" ] || { echo "train $r first (table4.sh / table5.sh)" >&2; exit 2; }
done
# Real photos: matplotlib's sample image plus any given in $IMAGES; a few CIFAR-10 test images.
photo=$(python -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))")
images=("$photo" ${IMAGES:-})
if [ "$SCALE" != full ]; then
  root=$(cifar10)
  for cls in airplane cat ship; do files=("$root/test/$cls/"*.jpg); images+=("${files[0]}"); done
fi
# Figure 3: Grad-CAM side by side
$AFICTL gradcam "${images[@]}" -c "$RUNS/$base/best.pt" -c "$RUNS/$afi/best.pt" \
  --output "$RESULTS/figure3_gradcam.png" --format json > "$RESULTS/figure3_gradcam.json"
# Figure 6: class selectivity index in stage conv3
$AFICTL selectivity -c "$RUNS/$base/best.pt" -c "$RUNS/$afi/best.pt" --stage conv3 \
  --max-batches "${MAX_BATCHES:-20}" --output "$RESULTS" --format json > "$RESULTS/figure6_selectivity.json"
# Figure 2: an AFI module's inputs, output and attention weights (averaged over the eval set)
$AFICTL features "${images[0]}" -c "$RUNS/$afi/best.pt" --stage conv1 \
  --output "$RESULTS/figure2_features.png" --format json > "$RESULTS/figure2_features.json"
$AFICTL features -c "$RUNS/$afi/best.pt" --stage conv1 --data imagefolder --max-batches 10 \
  --output "$RESULTS/figure2_attention_dataset.png" --format json > "$RESULTS/figure2_attention_dataset.json"
