#!/usr/bin/env bash
# GPU smoke-and-speed run of the text path (bf16): Text VAE `base` stage 1, then the joint
# prior stage with a `base` DiT (dense SDPA, then flex_attention), then a text continuation. Figures (tokens/s, loss) land in
# $OUT (default ./runs/gpu) as metrics JSONL files.
#   bash bench/gpu_text.sh [STEPS1] [STEPS2]
set -euo pipefail
OUT=${OUT:-runs/gpu}
S1=${1:-400}
S2=${2:-300}
mkdir -p "$OUT"
common=(--set "data.train=[{shards: datasets/text/train}]" --set data.num_workers=4 --no-progress
        --set log_every=50 --set val_every=0)
python3 -m cola_mm.cli train --config configs/vae_text_base.yaml --set run_dir=/tmp/g1 \
    --set max_steps="$S1" --set ckpt_every="$S1" "${common[@]}"
python3 -m cola_mm.cli train --config configs/vae_text_base.yaml --set stage=prior --set run_dir=/tmp/g2 \
    --set "model={vae: /tmp/g1/model, dit: {preset: base}}" --set "loss={}" --set ema_decay=0 \
    --set max_steps="$S2" --set ckpt_every="$S2" "${common[@]}"
python3 -m cola_mm.cli generate text --ckpt /tmp/g2/model --prompt "KING. " --max-new-tokens 32
# the same joint stage through flex_attention (BlockMask of the 2L layout), after its GPU test
python3 -m pytest -q tests/test_prior.py -k flex
python3 -m cola_mm.cli train --config configs/vae_text_base.yaml --set stage=prior --set run_dir=/tmp/g3 \
    --set "model={vae: /tmp/g1/model, dit: {preset: base, attention: flex}}" --set "loss={}" --set ema_decay=0 \
    --set max_steps="$S2" --set ckpt_every="$S2" "${common[@]}"
cp /tmp/g3/metrics.jsonl "$OUT/joint_flex_metrics.jsonl"
cp /tmp/g1/metrics.jsonl "$OUT/stage1_metrics.jsonl"
cp /tmp/g2/metrics.jsonl "$OUT/joint_metrics.jsonl"
cp /tmp/g1/loss_curve.png "$OUT/stage1_loss.png"
nvidia-smi --query-gpu=name,memory.used --format=csv
