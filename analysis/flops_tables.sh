#!/usr/bin/env bash
# Tables 2, 4 and 5 (parameters and FLOPs): exact at any scale, seconds on a CPU.
. "$(dirname "$0")/common.sh"
$AFICTL flops --format markdown --output "$RESULTS/flops_tables4_5.md"
$AFICTL flops --format json --output "$RESULTS/flops_tables4_5.json"
$AFICTL flops --table 2 --format markdown --output "$RESULTS/flops_table2.md"
