#!/usr/bin/env bash
# The bundled demo's GPU recipe (issue 21), as one timed job for a single GPU:
#   1. the shapes shards (the text and digits shards and the tokenizer must be in datasets/);
#   2. the reference AR for generative perplexity (configs/ar_reference.yaml), in the background;
#   3. the demo prior (configs/demo_gpu.yaml, text blocks of 4) and the same recipe with blocks of
#      16, side by side: a 60-step probe of each measures the step rate, then each trains for
#      max_steps = rate × BUDGET seconds (so the cosine schedule ends inside the budget);
#   4. fp16 exports packed in $OUT: demo_b4.tar, demo_b16.tar (the DiT, pipeline.json and model
#      card; the VAEs are those of checkpoints/demo), ar_reference.fp16.part-* (the AR's
#      safetensors in fp16, split), runs.tar (metrics, configs, loss curves, logs).
# A run that outlasts its share is stopped and its last checkpoint exported instead.
#   OUT=/tmp/out BUDGET=300 bash bench/gpu_demo.sh
# Another recipe and twin: CONFIG=configs/demo3_gpu.yaml TWIN='--set model.dit.d_model=384' (the twin
# is the same config with TWIN's overrides; its packs keep the names demo_b4/demo_b16). Where the
# config reads icons, they are built here from the font in FONT (carry .fonts/NotoColorEmoji.ttf:
# the GPU machine cannot install it). Every pack holds its image_vae/.
# Join the AR afterwards with bench/gpu_demo_unpack.py. The model choice between the two priors is
# made on the val splits (cola-mm eval suite --split val), never on test.
set -uo pipefail
OUT=${OUT:-runs/gpu_demo}
BUDGET=${BUDGET:-300}        # seconds of main training per prior (both run at once)
PROBE=${PROBE:-60}           # steps of the rate probe
DEADLINE=${DEADLINE:-540}    # seconds from the start by which everything is packed
MIN_STEPS=${MIN_STEPS:-500}  # the fewest main steps
PY=${PY:-python3}
BATCH=${BATCH:-64}         # rows per step (configs/demo_gpu.yaml)
CONFIG=${CONFIG:-configs/demo_gpu.yaml}
TWIN=${TWIN:---set model.dit.block_size=16}
FONT=${FONT:-.fonts/NotoColorEmoji.ttf}
RELATION_SKEW=${RELATION_SKEW:-0}  # train captions' relation skew (docs/experiments.md §22.1; 0: as `cola-mm data all`)
AR_STEPS=${AR_STEPS:-4000}  # the reference AR (configs/ar_reference.yaml)
LOGS=/tmp/gpu_demo_logs
T0=$(date +%s)
mkdir -p "$OUT" "$LOGS"
log() { echo "[gpu_demo +$(( $(date +%s) - T0 ))s] $*"; }
# the CLI with /tmp/colasite (below) ahead of the checkout's own cola_mm/ folder, which lacks the
# folders pyproject.toml maps into it; harmless where the package is installed
LAUNCH='import sys; sys.path.insert(0, "/tmp/colasite"); from cola_mm.cli import main; sys.argv[0] = "cola-mm"; sys.exit(main())'
cli() { "$PY" -c "$LAUNCH" "$@"; }
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# a machine without this package installed: import it from the checkout (its folders mapped as in
# pyproject.toml) and the carried wheels in .whl/ (torchdata, braceexpand)
if ! "$PY" -c "import cola_mm.data, torchdata, braceexpand" 2>/dev/null; then
  site=/tmp/colasite; mkdir -p "$site/cola_mm"
  for f in cola_mm/*; do ln -sfn "$PWD/$f" "$site/cola_mm/"; done
  for p in data prior vae_text vae_image apps; do ln -sfn "$PWD/$p" "$site/cola_mm/$p"; done
  [ -d .whl ] && "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=$site:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# 1. shapes (deterministic: the same bytes as `cola-mm data all`)
if [ ! -f datasets/shapes/manifest.json ]; then
  log "shapes shards"
  cli data shapes --out datasets/shapes --split all --max-objects 2 --relation-skew "$RELATION_SKEW" > $LOGS/shapes.log 2>&1 || { tail $LOGS/shapes.log; exit 1; }
fi

if grep -q 'datasets/icons' "$CONFIG" && [ ! -f datasets/icons/manifest.json ]; then
  log "icons shards"
  cli data icons --out datasets/icons --count 40000 --font "$FONT" --relation-skew "$RELATION_SKEW" > $LOGS/icons.log 2>&1 || { tail $LOGS/icons.log; exit 1; }
fi

# 2. the reference AR, in the background
log "reference AR ($AR_STEPS steps) in the background"
OMP_NUM_THREADS=2 cli train --config configs/ar_reference.yaml --set run_dir=runs/ar_reference --set max_steps="$AR_STEPS" \
  --set data.num_workers=2 --no-progress > $LOGS/ar_reference.log 2>&1 &
AR_PID=$!

# 3a. the rate probes
common=(--config "$CONFIG" --set batch_size="$BATCH" --no-progress)
read -r -a b16 <<< "$TWIN"
log "rate probes ($PROBE steps)"
cli train "${common[@]}" --set run_dir=/tmp/probe_b4 --set max_steps="$PROBE" --set val_every=0 \
  --set ckpt_every="$PROBE" > $LOGS/probe_b4.log 2>&1 &
P1=$!
cli train "${common[@]}" "${b16[@]}" --set run_dir=/tmp/probe_b16 --set max_steps="$PROBE" --set val_every=0 \
  --set ckpt_every="$PROBE" > $LOGS/probe_b16.log 2>&1 &
P2=$!
wait $P1 $P2
STEPS=$("$PY" - "$BUDGET" "$BATCH" "$MIN_STEPS" <<'EOF'
import json, sys
budget, batch = float(sys.argv[1]), int(sys.argv[2])
rates = []
for run in ("/tmp/probe_b4", "/tmp/probe_b16"):
    rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl") if '"samples_per_s"' in line]
    rates.append(sum(r["samples_per_s"] for r in rows[-2:]) / len(rows[-2:]) / batch)  # steps/s, past warm-up
n = int(min(rates) * budget * 0.9) // 100 * 100
print(max(n, int(sys.argv[3])))
print(f"probe steps/s {rates}; max_steps {n}", file=sys.stderr)
EOF
)
log "main runs: max_steps=$STEPS"
CK=$(( STEPS / 4 )); [ "$CK" -ge 1 ] || CK=1
main_args=(--set max_steps="$STEPS" --set ckpt_every="$CK" --set val_every="$CK" --set keep_last=2)
LIMIT=$(( DEADLINE - 75 - ( $(date +%s) - T0 ) ))  # a run past this is stopped; its last checkpoint is exported
[ "$LIMIT" -gt 30 ] || LIMIT=30
timeout "$LIMIT" "$PY" -c "$LAUNCH" train "${common[@]}" --set run_dir=runs/demo_gpu_b4 "${main_args[@]}" \
  > $LOGS/demo_gpu_b4.log 2>&1 &
M1=$!
timeout "$LIMIT" "$PY" -c "$LAUNCH" train "${common[@]}" "${b16[@]}" --set run_dir=runs/demo_gpu_b16 "${main_args[@]}" \
  > $LOGS/demo_gpu_b16.log 2>&1 &
M2=$!
wait $M1; log "b4 exit $?"
wait $M2; log "b16 exit $?"

# 4. exports
export_prior() {  # run_dir name
  local src="$1/model"
  if [ ! -f "$src/pipeline.json" ]; then
    src=$(ls -d "$1"/checkpoints/step_*/components 2>/dev/null | tail -1)
    log "$1: no final model, exporting $src"
  fi
  [ -n "$src" ] || { log "$1: nothing to export"; return; }
  cli export "$src" "/tmp/exp_$2" --dtype float16 && \
    tar -cf "$OUT/$2.tar" -C "/tmp/exp_$2" dit image_vae pipeline.json README.md
}
export_prior runs/demo_gpu_b4 demo_b4
export_prior runs/demo_gpu_b16 demo_b16
ART=$(( DEADLINE - 40 - ( $(date +%s) - T0 ) )); [ "$ART" -gt 5 ] || ART=5
log "waiting for the AR (at most ${ART}s)"
( sleep "$ART"; kill $AR_PID 2>/dev/null ) & wait $AR_PID; log "AR exit $?"
AR_DIR=runs/ar_reference/model/ar
[ -f "$AR_DIR/model.safetensors" ] || AR_DIR=$(ls -d runs/ar_reference/checkpoints/step_*/components/ar 2>/dev/null | tail -1)
if [ -n "$AR_DIR" ]; then
  "$PY" - "$AR_DIR" "$OUT" <<'EOF'
import sys, torch
from safetensors.torch import load_file, save_file
src, out = sys.argv[1], sys.argv[2]
state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(f"{src}/model.safetensors").items()}
save_file(state, "/tmp/ar16.safetensors", metadata={"format": "pt"})
print("AR", src, sum(v.numel() for v in state.values()) / 1e6, "M params")
EOF
  split -b 15M -d /tmp/ar16.safetensors "$OUT/ar_reference.fp16.part-"
  cp "$AR_DIR/config.json" $LOGS/ar_config.json; cp "$AR_DIR/generation_config.json" $LOGS/ar_generation_config.json 2>/dev/null
fi
tar -cf "$OUT/runs.tar" $(ls runs/{demo_gpu_b4,demo_gpu_b16,ar_reference}/{metrics.jsonl,config.json,loss_curve.png} 2>/dev/null) \
  -C /tmp gpu_demo_logs
ls -la "$OUT"
log "done"
