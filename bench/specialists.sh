#!/usr/bin/env bash
# Issue 19, unified vs specialists on this CPU (docs/experiments.md §13.2): the bundled recipe's
# unified prior at the sweep's 128-wide DiT, its text → image specialist (same DiT, text → image
# rows only) and an AR captioner of the same non-embedding size, at equal training FLOPs
# (python -m cola_mm.training.matching), one thread per run, two runs at a time; then the probe
# (the image judge, if not trained yet), one suite run over the three on the held-out image
# splits, the speed bench (images/s, captions/s) and the table and plot.
#   bash bench/specialists.sh            (after `cola-mm data all --out datasets`)
# Logs: runs/logs/<run>.log. A finished run is skipped (its run_dir/model exists).
set -euo pipefail
cd "$(dirname "$0")/.."
configs="configs/specialists/unified_d128.yaml configs/specialists/t2i_d128.yaml configs/specialists/captioner_d128.yaml"
source bench/train_runs.sh
for cfg in $configs; do echo "$(run_name "$cfg") --config $cfg"; done | train_all
python -m cola_mm.training.matching $configs --json bench/results/specialists_matching.json
[ -d runs/probe ] || cola-mm probe train --data datasets --out runs/probe
cola-mm eval suite --ckpt runs/unified_d128/model --ckpt runs/t2i_d128/model --ckpt runs/captioner_d128/model \
  --jobs images --probe runs/probe --seeds 0,1,2 --limit "${LIMIT:-100}" --no-progress --json-dir bench/results --grid-dir ''
python bench/bench_specialists_speed.py --unified runs/unified_d128/model --t2i runs/t2i_d128/model \
  --captioner runs/captioner_d128/model --data datasets --threads 1 --json bench/results/specialists_speed.json
python bench/plot_specialists.py --suite bench/results/suite_unified_d128_t2i_d128_captioner_d128.json \
  --unified unified_d128 --t2i t2i_d128 --captioner captioner_d128 \
  --matching bench/results/specialists_matching.json --png bench/results/specialists.png
