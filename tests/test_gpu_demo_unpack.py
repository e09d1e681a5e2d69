"""bench/gpu_demo_unpack.py: a pack that carries its own image VAE keeps it; one without gets the
bundled VAEs' (the GPU recipe of the three-world prior trains on another image VAE)."""

import tarfile
from pathlib import Path

from conftest import bench_module


def _unpack_module():
    return bench_module("gpu_demo_unpack")


def _pack(tmp: Path, name: str, parts: dict[str, str]) -> Path:
    src = tmp / f"src_{name}"
    for rel, text in parts.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    tar = tmp / f"{name}.tar"
    with tarfile.open(tar, "w") as t:
        for top in sorted({rel.split("/")[0] for rel in parts}):
            t.add(src / top, arcname=top)
    return tar


def test_unpack_keeps_a_packed_image_vae_and_fills_the_rest(tmp_path):
    mod = _unpack_module()
    vaes = tmp_path / "bundled"
    for part in ("text_vae", "image_vae", "tokenizer"):
        (vaes / part).mkdir(parents=True)
        (vaes / part / "config.json").write_text(f"bundled {part}")
    common = {"dit/config.json": "dit", "pipeline.json": "{}", "README.md": "card"}
    own = _pack(tmp_path, "own", {**common, "image_vae/config.json": "icons64"})
    plain = _pack(tmp_path, "plain", common)
    out = tmp_path / "out"

    a = mod.unpack_pipeline(own, out, vaes)
    assert (a / "image_vae" / "config.json").read_text() == "icons64"
    assert (a / "text_vae" / "config.json").read_text() == "bundled text_vae"
    assert (a / "tokenizer" / "config.json").read_text() == "bundled tokenizer"

    b = mod.unpack_pipeline(plain, out, vaes)
    assert (b / "image_vae" / "config.json").read_text() == "bundled image_vae"
    assert (b / "dit" / "config.json").read_text() == "dit"
