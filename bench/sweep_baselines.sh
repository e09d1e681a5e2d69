#!/usr/bin/env bash
# Issue 19's scaling sweep on this CPU: the three text families (Cola-MM's prior, the AR, masked
# diffusion) at widths 128, 192 and 256, each size FLOP-matched across families
# (python -m cola_mm.training.matching), two runs at a time with one thread each, then one suite
# run that scores all nine on the held-out plays and a plot of each figure against training FLOPs.
#   bash bench/sweep_baselines.sh            (after `cola-mm data all --out datasets`)
# Logs: runs/logs/<run>.log. A finished run is skipped (its run_dir/model exists).
set -euo pipefail
cd "$(dirname "$0")/.."
configs="configs/sweep/prior_d128.yaml configs/sweep/ar_d128.yaml configs/sweep/mdm_d128.yaml
configs/sweep/prior_d192.yaml configs/sweep/ar_d192.yaml configs/sweep/mdm_d192.yaml
configs/baseline_prior.yaml configs/baseline_ar.yaml configs/baseline_mdm.yaml"
source bench/train_runs.sh
names=""
for cfg in $configs; do names="$names $(run_name "$cfg")"; done
paste -d' ' <(printf '%s\n' $names) <(printf -- '--config %s\n' $configs) | train_all
python -m cola_mm.training.matching $configs --json bench/results/baselines_matching.json
ckpts=""
for name in $names; do ckpts="$ckpts --ckpt runs/$name/model"; done
# the judge of generative perplexity: the largest AR of the sweep (no stronger AR exists on this machine)
cola-mm eval suite $ckpts --jobs text --text-cfg 3 --ar runs/baseline_ar/model --seeds 0,1,2 --no-progress \
  --json-dir bench/results --grid-dir ''
python bench/plot_baselines_sweep.py --suite "bench/results/suite_$(printf '%s\n' $names | paste -sd_).json" \
  --matching bench/results/baselines_matching.json --png bench/results/baselines_sweep.png
