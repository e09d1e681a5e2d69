#!/usr/bin/env bash
# Prepare, on this machine, what bench/gpu_demo.sh needs on a lent GPU machine that reaches no
# network: the two wheels its Python lacks (.whl/), the emoji font for the icons world (.fonts/),
# and the CPU-trained parts a recipe reads. Prints the `carry` list for the device call.
#   bash bench/gpu_prep.sh [configs/demo3_gpu.yaml]
set -euo pipefail
CONFIG=${1:-configs/demo_gpu.yaml}
venv=$(bash .ci/venv.sh)
mkdir -p .whl
"$venv/bin/python" -m pip download --quiet --no-deps -c constraints.txt -d .whl torchdata braceexpand
carry=(datasets/text datasets/digits datasets/tokenizer .whl)
if grep -q 'datasets/icons' "$CONFIG"; then
  font=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
  [ -f "$font" ] || bash .ci/fonts.sh
  mkdir -p .fonts && cp "$font" .fonts/
  carry+=(.fonts)
fi
# the image VAE the config reads, where it is not the bundled one (train it here first)
ivae=$(sed -n 's/^ *image_vae: *\([^ #]*\).*/\1/p' "$CONFIG" | head -1)
if [ -n "$ivae" ] && [ "$ivae" != checkpoints/demo ]; then
  [ -f "$ivae/image_vae/config.json" ] || { echo "train $ivae first (its config is in configs/)" >&2; exit 1; }
  carry+=("$ivae")
fi
du -shc "${carry[@]}" | tail -1 >&2
printf 'carry: ['; printf '"%s", ' "${carry[@]}" | sed 's/, $//'; echo ']'
