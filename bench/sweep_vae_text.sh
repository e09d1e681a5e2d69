#!/usr/bin/env bash
# Text VAE `small` stage-1 sweep: how the masking loss weight/ratio, the initial posterior
# log-variance and the learning rate change reconstruction after 2400 steps (batch 16 x 128,
# Shakespeare only). Runs the variants in parallel (meant for a GPU machine; on 2 CPU cores run
# them one at a time). Prints: variant, step, val acc (posterior mean), val acc (sampled z), KL/token.
#   bash bench/sweep_vae_text.sh
set -u
run() {
    name=$1; shift
    python3 -m cola_mm.cli train --config configs/vae_text_small.yaml --set run_dir=/tmp/sweep_$name \
        --set log_every=100 --set val_every=800 --set ckpt_every=100000 --no-progress \
        --set "data.train=[{shards: datasets/text/train}]" "$@" > /tmp/sweep_$name.log 2>&1
    grep val_ /tmp/sweep_$name/metrics.jsonl | python3 -c "
import sys, json
for line in sys.stdin:
    r = json.loads(line)
    print('$name', r['step'], round(r['val_acc_mean'], 4), round(r['val_acc_sample'], 4), round(r['val_kl_per_token'], 2))"
}
run mask1_lv0 --set model.init_logvar=0 --set loss.mask_weight=1.0 &
run mask1_lv5 --set model.init_logvar=-5 --set loss.mask_weight=1.0 &
run mask1_lv5_lr4e-3 --set model.init_logvar=-5 --set loss.mask_weight=1.0 --set optim.lr=0.004 &
run nomask_lv5 --set model.init_logvar=-5 --set loss.mask_ratio=0.0 &
wait
run nomask_lv0 --set model.init_logvar=0 --set loss.mask_ratio=0.0 &
run mask0.1_lv5 --set model.init_logvar=-5 --set loss.mask_weight=0.1 &
run mask0.25_lv5 --set model.init_logvar=-5 --set loss.mask_weight=0.25 &
run ratio0.05_mask0.5_lv5 --set model.init_logvar=-5 --set loss.mask_ratio=0.05 --set loss.mask_weight=0.5 &
wait
