#!/usr/bin/env bash
# Table 6 (memory at batch 64). The exact account runs at full size on a CPU (meta device);
# on a GPU box add --device cuda for the allocator's peak as well.
. "$(dirname "$0")/common.sh"
dev=cpu; [ "$SCALE" = full ] && dev=cuda
$AFICTL memory --arch afi_resnet50 --batch-size 64 --device "$dev" --format json --output "$RESULTS/memory.json"
$AFICTL memory --arch afi_resnet50 --batch-size 64 --device "$dev" --memory-efficient --format json --output "$RESULTS/memory_efficient.json"
$AFICTL report --runs "$RUNS" --output "$RESULTS/report" --table 6 --memory "$RESULTS/memory.json"
