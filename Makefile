# The two set-up commands of the README. Both are idempotent: the first run builds the
# virtual environment (outside the clone, see .ci/venv.sh), later runs reuse it.
SHELL := /bin/bash
VENV = $(shell bash .ci/venv.sh)

.PHONY: demo test bench

demo:  ## build the bundled datasets and tokenizer into ./datasets
	@venv=$(VENV) && $$venv/bin/cola-mm data all --out datasets

test:  ## run the test suite (CPU, tiny configs)
	@venv=$(VENV) && HF_HUB_OFFLINE=1 $$venv/bin/python -m pytest -q tests

bench:  ## data throughput benchmark
	@venv=$(VENV) && $$venv/bin/python bench/bench_data.py
