#!/usr/bin/env bash
# Issue 19, the paper's timeshift ablation (docs/experiments.md §13.4): training times
# t ~ sigmoid(loc + N(0,1)); the paper finds the best loc rises with the latent width
# (≈1.0 at d 16, ≈1.7 at d 64). Trains the 128-wide text prior of the sweep
# (configs/sweep/prior_d128.yaml, 600 steps) at each loc on two Text VAEs: the bundled demo's
# (d 16) and the demo's Text VAE recipe (configs/demo_vae_text.yaml) with a 64-dim latent for half
# its steps (d 64); then the AR judge (configs/baseline_ar.yaml) if it is missing, one suite run over
# all priors (text rows: gen-PPL judged by the AR, the corpus-word rate; the context gap; seeds
# 0/1/2) and the plot.
#   bash bench/loc_sweep.sh              (after `cola-mm data all --out datasets`)
#   LOCS="0 1 2" bash bench/loc_sweep.sh
# One thread per run, two runs at a time (PARALLEL). Logs: runs/logs/<run>.log. A finished run
# (its run_dir/model exists) is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/train_runs.sh
LOCS=${LOCS:-"0 1 1.7 2.5"}
# the d 64 Text VAE and the AR judge first, side by side
printf '%s\n' "loc_vae_d64 --config configs/demo_vae_text.yaml --set model.d_latent=64 --set max_steps=1500 --set data.tokenizer=checkpoints/demo/tokenizer" \
  "baseline_ar --config configs/baseline_ar.yaml" | train_all
runs=(); ckpts=()
for loc in $LOCS; do
  tag=${loc/./p}
  runs+=("loc_d16_$tag --config configs/sweep/prior_d128.yaml --set loss.time_loc=$loc"
         "loc_d64_$tag --config configs/sweep/prior_d128.yaml --set loss.time_loc=$loc --set model.vae=runs/loc_vae_d64/model")
  ckpts+=(--ckpt "runs/loc_d16_$tag/model" --ckpt "runs/loc_d64_$tag/model")
done
printf '%s\n' "${runs[@]}" | train_all
cola-mm eval suite "${ckpts[@]}" --jobs text,context --text-cfg 3 --ar runs/baseline_ar/model --seeds 0,1,2 \
  --no-progress --json-dir bench/results --grid-dir ''
suite="bench/results/suite_$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | paste -sd_).json"
python bench/plot_loc_sweep.py --suite "$suite" --png bench/results/loc_sweep.png
