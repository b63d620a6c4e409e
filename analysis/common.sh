# Shared settings of the analysis scripts. Source it; do not run it.
#   SCALE=reduced (default): CPU, real CIFAR-10 JPEGs from ../shared/data, small subsets, few epochs.
#   SCALE=full: the paper's setting on a GPU box with CIFAR-100 / ImageNet / Office-Home under $AFICTL_DATA.
set -euo pipefail
SCALE=${SCALE:-reduced}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RESULTS=${RESULTS:-$HERE/results/$SCALE}
RUNS=$RESULTS/runs
mkdir -p "$RESULTS" "$RUNS"
AFICTL=${AFICTL:-afictl}

# Reduced scale: the real CIFAR-10 images (ImageFolder train/ + test/), extracted once outside the repo.
CIFAR10=${CIFAR10:-${XDG_CACHE_HOME:-$HOME/.cache}/afictl/cifar10}
cifar10() {
  if [ ! -d "$CIFAR10/train" ]; then
    local tarball="$HERE/../../shared/data/cifar10-jpeg.tar.gz"
    [ -f "$tarball" ] || { echo "need $tarball (see ../shared/data/README.md)" >&2; exit 2; }
    mkdir -p "$CIFAR10"
    tar -xzf "$tarball" -C "$CIFAR10"  # holds train/ and test/ at its top
  fi
  echo "$CIFAR10"
}

# The reduced recipe: a fixed random subset of each split, a few epochs, paper-cifar otherwise
# (SGD 0.9, wd 1e-4, batch 64, lr 0.1 divided by 10 at 50% and 75% of training).
REDUCED_SIZE=${REDUCED_SIZE:-10000}
REDUCED_EPOCHS=${REDUCED_EPOCHS:-4}
reduced_train() {  # reduced_train NAME ARCH [extra afictl train options...]
  local name=$1 arch=$2; shift 2
  if [ -f "$RUNS/$name/best.pt" ] && [ "$(tail -n +2 "$RUNS/$name/metrics.csv" | wc -l)" -ge "$REDUCED_EPOCHS" ]; then
    echo "reuse $RUNS/$name" >&2; return 0
  fi
  if [ -f "$RUNS/$name/last.pt" ]; then
    $AFICTL train --resume "$RUNS/$name" --epochs "$REDUCED_EPOCHS" >&2
  else
    $AFICTL train --arch "$arch" --data imagefolder --data-root "$(cifar10)" --data-size "$REDUCED_SIZE" \
      --epochs "$REDUCED_EPOCHS" --batch-size 64 --workers 1 --seed 0 --device cpu \
      --run-dir "$RUNS/$name" "$@" >&2
  fi
}

# Full scale: the paper's recipes on the real datasets (GPU); $AFICTL_DATA holds cifar100/, imagenet/, office-home/.
full_train() {  # full_train NAME ARCH DATASET [extra options...]
  local name=$1 arch=$2 data=$3; shift 3
  if [ -f "$RUNS/$name/last.pt" ]; then
    $AFICTL train --resume "$RUNS/$name"
  else
    $AFICTL train --arch "$arch" --data "$data" --device cuda --amp bf16 --channels-last --run-dir "$RUNS/$name" "$@"
  fi
}
