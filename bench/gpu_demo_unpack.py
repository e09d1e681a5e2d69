"""Unpack what ``bench/gpu_demo.sh`` packed on the GPU machine into loadable folders here.

    python bench/gpu_demo_unpack.py FILES_DIR [--out runs/gpu_demo] [--vaes checkpoints/demo]
        [--ar-tokenizer datasets/tokenizer]

- every ``NAME.tar`` holding ``dit/``, ``image_vae/``, ``pipeline.json`` and a model card becomes
  a whole pipeline ``OUT/NAME`` (its frozen Text VAE and tokenizer copied from ``--vaes``, the
  folder the GPU run read them from; the image VAE too where the pack has none);
- ``ar_reference.fp16.part-*`` are joined, cast back to fp32 and written with the AR's config as
  ``OUT/ar_reference/ar`` + ``tokenizer/`` (the tokenizer the AR was trained with);
- ``runs.tar`` (metrics, configs, loss curves, logs) is unpacked into ``OUT/runs``.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path


def unpack_pipeline(tar: Path, out: Path, vaes: Path) -> Path:
    dst = out / tar.stem
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    with tarfile.open(tar) as t:
        t.extractall(dst, filter="data")
    for part in ("text_vae", "image_vae", "tokenizer"):
        if not (dst / part).exists():  # a pack may carry its own image_vae/ (a recipe with another image VAE)
            shutil.copytree(vaes / part, dst / part)
    return dst


def unpack_ar(files: Path, out: Path, tokenizer: Path, configs: Path) -> Path | None:
    import torch
    from safetensors.torch import load, save_file

    parts = sorted(files.glob("ar_reference.fp16.part-*"))
    if not parts:
        return None
    state = load(b"".join(p.read_bytes() for p in parts))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    dst = out / "ar_reference"
    (dst / "ar").mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst / "ar" / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(configs / "ar_config.json", dst / "ar" / "config.json")
    if (configs / "ar_generation_config.json").is_file():
        shutil.copyfile(configs / "ar_generation_config.json", dst / "ar" / "generation_config.json")
    if (dst / "tokenizer").exists():
        shutil.rmtree(dst / "tokenizer")
    shutil.copytree(tokenizer, dst / "tokenizer")
    print(f"{dst}: {sum(v.numel() for v in state.values()) / 1e6:.2f} M params (fp16 → fp32)")
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", type=Path, help="the folder the GPU run's files were copied to")
    p.add_argument("--out", type=Path, default=Path("runs/gpu_demo"))
    p.add_argument("--vaes", type=Path, default=Path("checkpoints/demo"))
    p.add_argument("--ar-tokenizer", type=Path, default=Path("datasets/tokenizer"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.files / "runs.tar").is_file():
        with tarfile.open(args.files / "runs.tar") as t:
            t.extractall(args.out / "runs", filter="data")
    for tar in sorted(args.files.glob("*.tar")):
        if tar.name != "runs.tar":
            print(unpack_pipeline(tar, args.out, args.vaes))
    unpack_ar(args.files, args.out, args.ar_tokenizer, args.out / "runs" / "gpu_demo_logs")


if __name__ == "__main__":
    main()
