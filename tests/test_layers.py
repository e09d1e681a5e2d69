"""The package's layering is a checked contract: no module imports from a floor above its own.

Floors, top to bottom (``|`` separates siblings, which must not import each other either)::

    cola_mm.cli                                 the command line (it starts the app)
    cola_mm.apps | cola_mm.serve                the Streamlit app; the HTTP API
    cola_mm.evaluation | cola_mm.training       evaluation; the training loop and its stages
    cola_mm.pipeline | cola_mm.baselines        inference: one pipeline for the three jobs; the
                                                masked diffusion baseline (model and sampler)
    cola_mm.vae_text | cola_mm.vae_image        the two VAEs
    cola_mm.prior                               the DiT, masks, flow matching, the block sampler
    cola_mm.data                                shards, loaders, the bundled datasets, their registry
    cola_mm.core                                configs, components, layers, sequence layout, images

The folders ``data/``, ``prior/``, ``vae_text/``, ``vae_image/`` and ``apps/`` install as
``cola_mm.data`` … (pyproject ``package-dir``), which import-linter's graph builder does not
follow, so the imports are read here with :mod:`ast`: every ``import`` statement of every module,
function-level ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = (
    ("cola_mm.cli",),
    ("cola_mm.apps", "cola_mm.serve"),
    ("cola_mm.evaluation", "cola_mm.training"),
    ("cola_mm.pipeline", "cola_mm.baselines"),
    ("cola_mm.vae_text", "cola_mm.vae_image"),
    ("cola_mm.prior",),
    ("cola_mm.data",),
    ("cola_mm.core",),
)
FOLDERS = {"cola_mm": "cola_mm", "cola_mm.data": "data", "cola_mm.prior": "prior", "cola_mm.vae_text": "vae_text",
           "cola_mm.vae_image": "vae_image", "cola_mm.apps": "apps"}
OLD_TOP_LEVEL = ("data", "prior", "vae_text", "vae_image", "apps")


def modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("").parts
            rel = rel[:-1] if rel[-1] == "__init__" else rel
            name = ".".join((package, *rel))
            if package == "cola_mm" and len(rel) and any(name.startswith(p + ".") or name == p
                                                         for p in FOLDERS if p != "cola_mm"):
                continue
            found[name] = path
    return found


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``source``, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((node.lineno, target))
            out.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)  # `from pkg import mod`
    return out


def layer_of(module: str) -> tuple[int, str] | None:
    """(floor index, 0 = top; the sibling it belongs to) of a cola_mm module, None outside the layers."""
    for i, floor in enumerate(LAYERS):
        for part in floor:
            if module == part or module.startswith(part + "."):
                return i, part
    return None


def violations(importer: str, imported: list[tuple[int, str]]) -> list[str]:
    here = layer_of(importer)
    bad = []
    for line, target in imported:
        if target.split(".")[0] in OLD_TOP_LEVEL:
            bad.append(f"{importer}:{line} imports {target} (the installed name is cola_mm.{target})")
            continue
        there = layer_of(target)
        if here is None or there is None:
            continue
        if there[0] < here[0]:
            bad.append(f"{importer}:{line} imports {target} from a higher floor ({there[1]} above {here[1]})")
        elif there[0] == here[0] and there[1] != here[1]:
            bad.append(f"{importer}:{line} imports {target}: {there[1]} and {here[1]} are independent siblings")
    return bad


def test_every_module_sits_on_a_floor():
    unplaced = [m for m in modules() if layer_of(m) is None and m != "cola_mm"]
    assert not unplaced, f"modules outside the layer contract: {unplaced}"


def test_no_import_from_a_higher_floor():
    found = modules()
    assert len(found) > 40, found  # the walk found the package
    bad = []
    for name, path in found.items():
        bad += violations(name, imports_of(path.read_text(), name, path.name == "__init__.py"))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, importer, expected", [
    ("from cola_mm.pipeline import ColaPipeline", "cola_mm.core.images", "higher floor"),
    ("def f():\n    from cola_mm.cli import main", "cola_mm.data.shapes", "higher floor"),
    ("import cola_mm.training.loop", "cola_mm.evaluation.probe", "independent siblings"),
    ("from data.shapes import render_scene", "cola_mm.evaluation.probe", "installed name"),
    ("from ..training import loop", "cola_mm.prior", "higher floor"),  # relative, in a package's __init__
])
def test_the_check_catches_a_planted_upward_import(source, importer, expected):
    found = violations(importer, imports_of(source, importer, is_package=importer == "cola_mm.prior"))
    assert found and expected in found[0], found


def test_downward_and_same_floor_imports_pass():
    src = "from cola_mm.core.config import Config\nfrom cola_mm.data.loader import ShardDataset\nimport torch"
    assert violations("cola_mm.prior.dit", imports_of(src, "cola_mm.prior.dit")) == []
    assert violations("cola_mm.training.loop", imports_of("from cola_mm.training import stage", "cola_mm.training.loop")) == []
