"""Image–caption pairs from weighted mixtures of shards, resumable.

Each source is a set of WebDataset/img2dataset shards with a mixing weight; every yielded pair
comes from one source, chosen by a seeded weighted draw. Images of any size or mode are made
RGB ``image_size``×``image_size`` (shorter side resized, centre crop) and returned as a float
tensor in [-1, 1]. The position (each source's shard position and the mixing RNG) is
``state_dict()``-able, so training resumes exactly, as :class:`cola_mm.data.windows.TokenWindows`.

Each item is ``{"pixels": (3, S, S) float, "txt": str, "json": dict | None}`` (``json``: the
sample's ground truth where the shard has one, from which :mod:`cola_mm.data.captions` rebuilds a
canonical caption). A sample of a latent cache (``cola-mm data encode``: a
``latent.safetensors`` member holding the image VAE's posterior ``mean`` and ``logvar``) gives
``{"latent": (2, C, h, w) float, …}`` instead, and no image is decoded. The cache's VAE
fingerprint, stored in every member, must equal ``latent_fingerprint``.

A :class:`PairSource` may warp its images: a random rotation and zoom per sample, drawn from a
second resumable RNG, so the sample sequence does not change. It is augmentation for sets whose
captions do not depend on geometry, such as the digits (1,497 training scans, easily memorised).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from cola_mm.data.loader import ShardDataset
from cola_mm.data.shards import DataError
from cola_mm.data.windows import Source, _from_jsonable, _jsonable


@dataclass(frozen=True)
class PairSource(Source):
    warp_degrees: float = 0.0  # rotation ~ U(±warp_degrees) per image
    warp_scale: float = 0.0  # zoom ~ U(1 ± warp_scale) per image


LATENT_FIELD = "latent.safetensors"


def read_latent(data: bytes, where: str, fingerprint: str | None) -> torch.Tensor:
    """A cached posterior → (2, C, h, w) [mean, logvar]; refuses a cache of another VAE."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")  # safetensors: a u64 header length, then the JSON header
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError("corrupt_latent") from err
    if fingerprint is not None and meta.get("vae_fingerprint") != fingerprint:
        raise DataError(f"{where}: this latent cache was made by another image VAE (fingerprint "
                        f"{meta.get('vae_fingerprint')}, the run's is {fingerprint}); re-encode it with "
                        f"`cola-mm data encode --vae` and the run's image VAE")
    if set(tensors) != {"mean", "logvar"}:
        raise ValueError("corrupt_latent")
    return torch.stack([tensors["mean"].float(), tensors["logvar"].float()])


def pixels_from_image(img, size: int) -> torch.Tensor:
    """PIL image (any mode/size) → (3, size, size) float in [-1, 1]."""
    from cola_mm.core.images import fit_square, image_to_tensor, to_rgb

    return image_to_tensor(fit_square(to_rgb(img), size))


class ImagePairs(torch.utils.data.IterableDataset):
    def __init__(self, sources: Sequence[Source], image_size: int = 64, seed: int = 0,
                 shuffle_buffer: int = 1000, epochs: int | None = None, require_text: bool = True,
                 rank: int | None = None, world_size: int | None = None, latent_fingerprint: str | None = None):
        super().__init__()
        if not sources:
            raise DataError("no image sources given")
        if any(s.weight <= 0 for s in sources):
            raise DataError("source weights must be > 0")
        self.weights = [s.weight for s in sources]
        self.warps = [(s.warp_degrees, s.warp_scale) if isinstance(s, PairSource) else (0.0, 0.0) for s in sources]
        if any(min(w) < 0 for w in self.warps):
            raise DataError("warp_degrees and warp_scale must be >= 0")
        required = ("txt",) if require_text else ()
        self.latent_fingerprint = latent_fingerprint
        self.datasets = [
            ShardDataset(s.shards, required=required, fields=("txt", "text", "caption", "json", "jpg", "jpeg", "png", "webp",
                                                             LATENT_FIELD),
                         shuffle_buffer=shuffle_buffer, shuffle_shards=epochs is None,
                         seed=seed + 1000 * i + 7, epochs=epochs, rank=rank, world_size=world_size)
            for i, s in enumerate(sources)]
        self.image_size = image_size
        self.seed = seed
        self._rng_state: Any = None
        self._warp_state: Any = None
        self._resume: dict | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"sources": [d.state_dict() for d in self.datasets], "rng": _jsonable(self._rng_state),
                "warp_rng": _jsonable(self._warp_state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["sources"]) != len(self.datasets):
            raise DataError(f"data state has {len(state['sources'])} image sources, config has {len(self.datasets)}")
        self._resume = state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from cola_mm.core.images import random_warp

        info = torch.utils.data.get_worker_info()
        consumer = (info.id if info else 0) + 1000 * self.datasets[0].rank
        rng = random.Random(f"{self.seed}/pairs/{consumer}")
        # warps draw from their own RNG, so warping a source leaves the sample sequence as it was
        warp_rng = random.Random(f"{self.seed}/pairs/warp/{consumer}")
        if self._resume is not None:
            for d, s in zip(self.datasets, self._resume["sources"]):
                d.load_state_dict(s)
            if self._resume["rng"] is not None:
                rng.setstate(_from_jsonable(self._resume["rng"]))
            if self._resume.get("warp_rng") is not None:  # absent in states saved before warps existed
                warp_rng.setstate(_from_jsonable(self._resume["warp_rng"]))
            self._resume = None
        streams = [iter(d) for d in self.datasets]
        live = list(range(len(self.datasets)))
        while live:
            self._rng_state, self._warp_state = rng.getstate(), warp_rng.getstate()
            i = rng.choices(live, weights=[self.weights[j] for j in live])[0]
            sample = next(streams[i], None)
            if sample is None:
                live.remove(i)
                continue
            if LATENT_FIELD in sample:
                if any(self.warps[i]):
                    raise DataError(f"{sample['__url__']}: a latent cache cannot be warped (warp_degrees/warp_scale)")
                try:
                    latent = read_latent(sample[LATENT_FIELD], sample["__url__"], self.latent_fingerprint)
                except DataError:  # a cache of another VAE: nothing in it is usable
                    raise
                except ValueError as err:  # one damaged member: skipped and counted
                    self.datasets[i]._skip(str(err), sample["__url__"], sample["__key__"])
                    continue
                self._rng_state, self._warp_state = rng.getstate(), warp_rng.getstate()
                yield {"latent": latent, "txt": sample.get("txt", ""), "json": sample.get("json")}
                continue
            if "image" not in sample:
                self.datasets[i]._skip("missing_field", sample["__url__"], f"{sample['__key__']} lacks ['image']")
                continue
            pixels = pixels_from_image(sample["image"], self.image_size)
            if any(self.warps[i]):
                gen = torch.Generator().manual_seed(warp_rng.getrandbits(63))
                pixels = random_warp(pixels[None], *self.warps[i], gen)[0]
            self._rng_state, self._warp_state = rng.getstate(), warp_rng.getstate()
            yield {"pixels": pixels, "txt": sample.get("txt", ""), "json": sample.get("json")}
