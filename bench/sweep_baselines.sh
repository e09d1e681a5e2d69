#!/usr/bin/env bash
# Issue 19's scaling sweep on this CPU: the three text families (Cola-MM's prior, the AR, masked
# diffusion) at widths 128, 192 and 256, each size FLOP-matched across families
# (python -m cola_mm.training.matching), two runs at a time with one thread each, then one suite
# run that scores all nine on the held-out plays and a plot of each figure against training FLOPs.
#   bash bench/sweep_baselines.sh            (after `cola-mm data all --out datasets`)
# Logs: runs/logs/<run>.log. A finished run is skipped (its run_dir/model exists).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/logs
configs="configs/sweep/prior_d128.yaml configs/sweep/ar_d128.yaml configs/sweep/mdm_d128.yaml
configs/sweep/prior_d192.yaml configs/sweep/ar_d192.yaml configs/sweep/mdm_d192.yaml
configs/baseline_prior.yaml configs/baseline_ar.yaml configs/baseline_mdm.yaml"
train_one() {
  local cfg=$1 run
  run=$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['run_dir'])" "$cfg")
  if [ -d "$run/model" ]; then echo "skip $cfg ($run/model exists)"; return; fi
  echo "train $cfg -> $run"
  OMP_NUM_THREADS=1 cola-mm train --config "$cfg" --resume-if-any --no-progress > "runs/logs/$(basename "$run").log" 2>&1
}
export -f train_one
printf '%s\n' $configs | xargs -P "${PARALLEL:-2}" -I{} bash -c 'train_one {}'
python -m cola_mm.training.matching $configs --json bench/results/baselines_matching.json
ckpts=""
for cfg in $configs; do
  ckpts="$ckpts --ckpt $(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['run_dir'])" "$cfg")/model"
done
# the judge of generative perplexity: the largest AR of the sweep (no stronger AR exists on this machine)
cola-mm eval suite $ckpts --jobs text --text-cfg 3 --ar runs/baseline_ar/model --seeds 0,1,2 --no-progress \
  --json-dir bench/results --grid-dir ''
python bench/plot_baselines_sweep.py --suite "bench/results/suite_$(for c in $configs; do python -c "import yaml,sys,pathlib; print(pathlib.Path(yaml.safe_load(open(sys.argv[1]))['run_dir']).name)" "$c"; done | paste -sd_).json" \
  --matching bench/results/baselines_matching.json --png bench/results/baselines_sweep.png
