"""``cola-mm data encode``: image–caption shards → latent shards, so the prior trains without
running the image VAE's encoder.

Each output sample holds ``latent.safetensors`` (the posterior ``mean`` and ``logvar`` of the
image, float32 (C, h, w); its metadata names the VAE's fingerprint, image size and the source
shard), plus the source's ``txt`` and ``json``. The training stage samples ``mean + σ·ε`` from
them each time, as it does from a live encoding, and refuses samples whose fingerprint is not
its image VAE's (:func:`cola_mm.data.pairs.read_latent`). The manifest records the VAE's folder
and fingerprint. Captions stay text: tokenizing them costs nothing next to the encoder.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save
from tqdm import tqdm

from cola_mm.data.loader import ShardDataset
from cola_mm.data.pairs import LATENT_FIELD, pixels_from_image
from cola_mm.data.shards import DataError, ShardWriter, prepare_split_dir, update_manifest

GENERATOR_VERSION = "encode-1"


@torch.no_grad()
def encode_shards(vae, shards, out: str | os.PathLike, split: str = "train", batch_size: int = 64,
                  shard_size: int = 1000, overwrite: bool = False, vae_path: str = "", progress: bool = True,
                  device: str | torch.device = "cpu") -> dict:
    """Encode every image–caption sample of ``shards`` into ``out/split``; returns the manifest entry."""
    if batch_size < 1 or shard_size < 1:
        raise DataError("batch_size and shard_size must be >= 1")
    source = ShardDataset(shards, required=("image", "txt"), epochs=1)  # checks the shards exist first
    out = Path(out)
    split_dir = prepare_split_dir(out / split, overwrite)
    vae = vae.to(device).eval()
    fingerprint = vae.fingerprint()
    size = vae.config.image_size
    meta = {"vae_fingerprint": fingerprint, "image_size": str(size)}
    written = 0
    pending: list[dict] = []

    def flush(writer: ShardWriter) -> None:
        nonlocal written
        if not pending:
            return
        pixels = torch.stack([pixels_from_image(s["image"], size) for s in pending]).to(device)
        mean, logvar = vae.encode(pixels)
        for s, m, lv in zip(pending, mean.float().cpu(), logvar.float().cpu()):
            fields = {LATENT_FIELD: save({"mean": m.contiguous(), "logvar": lv.contiguous()},
                                         metadata={**meta, "source": s["__url__"]}), "txt": s["txt"]}
            if s.get("json") is not None:
                fields["json"] = s["json"]
            writer.write(Path(s["__key__"]).name, fields)
            written += 1
        pending.clear()

    with ShardWriter(split_dir, max_count=shard_size) as writer, \
            tqdm(desc=f"encode {split}", unit="img", disable=not progress) as bar:
        for sample in source:
            pending.append(sample)
            if len(pending) == batch_size:
                flush(writer)
                bar.update(batch_size)
        n = len(pending)
        flush(writer)
        bar.update(n)
    skipped = dict(Counter(source.stats))
    entry = {"count": written, "shards": writer.shards, "vae_fingerprint": fingerprint, "vae": vae_path,
             "image_size": size, "latent_channels": vae.config.latent_channels, "skipped": skipped}
    update_manifest(out, "latents", GENERATOR_VERSION, split, entry)
    return entry
