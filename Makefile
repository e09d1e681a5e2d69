# The two set-up commands of the README. Both are idempotent: the first run builds the
# virtual environment (outside the clone, see .ci/venv.sh), later runs reuse it.
SHELL := /bin/bash
VENV = $(shell bash .ci/venv.sh)

.PHONY: demo demo-checkpoint test bench

demo:  ## the app on the bundled demo checkpoint (http://localhost:8501)
	@venv=$(VENV) && HF_HUB_OFFLINE=1 $$venv/bin/cola-mm app --ckpt checkpoints/demo

demo-checkpoint:  ## rebuild checkpoints/demo from scratch with the committed recipe (~2 h on 2 CPU cores)
	@venv=$(VENV) && set -e && export HF_HUB_OFFLINE=1 \
	&& $$venv/bin/cola-mm data all --out datasets \
	&& $$venv/bin/cola-mm train --resume-if-any --config configs/vae_image_small.yaml \
	&& $$venv/bin/cola-mm train --resume-if-any --config configs/demo_vae_text.yaml \
	&& $$venv/bin/cola-mm train --resume-if-any --config configs/demo.yaml \
	&& $$venv/bin/cola-mm export runs/demo/model checkpoints/demo --dtype float16

test:  ## run the test suite (CPU, tiny configs, the bundled checkpoint, a real browser)
	@venv=$(VENV) && bash .ci/chromium.sh && HF_HUB_OFFLINE=1 $$venv/bin/python -m pytest -q tests

bench:  ## data throughput benchmark
	@venv=$(VENV) && $$venv/bin/python bench/bench_data.py
