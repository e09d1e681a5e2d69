#!/usr/bin/env bash
# Create (once) and print the path of the project's virtual environment.
#
# The venv lives outside the clone, keyed by a hash of pyproject.toml and constraints.txt, so
# repeated runs on one machine (CI included) reuse it and a change of dependencies builds a fresh
# one. Versions are pinned by constraints.txt (the set CI last passed with).
# Override the location with COLA_MM_VENV=/path.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -c1-12)
venv=${COLA_MM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cola-mm/venv-$key}
stamp="$venv/.cola-mm-installed"
if [ ! -f "$stamp" ]; then
    echo "[cola-mm] building the virtual environment in $venv (first run: a few minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel >&2
    # torch first: deepspeed's build looks for an installed torch.
    "$venv/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" >&2
    "$venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[dev]" >&2
    touch "$stamp"
else
    # the clone may have moved: make sure the editable install points at this checkout, for
    # cola_mm and for the folders mapped into it (checked from / so the cwd cannot answer for it)
    if ! (cd / && "$venv/bin/python" -c "import sys, cola_mm, cola_mm.data; from pathlib import Path; r = Path('$root').resolve(); sys.exit(not (Path(cola_mm.__file__).resolve().parent == r / 'cola_mm' and Path(cola_mm.data.__file__).resolve().parent == r / 'data'))") 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --no-deps -e "$root" >&2
    fi
fi
echo "$venv"
