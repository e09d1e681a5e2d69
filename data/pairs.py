"""Image–caption pairs from weighted mixtures of shards, resumable.

Each source is a set of WebDataset/img2dataset shards with a mixing weight; every yielded pair
comes from one source, chosen by a seeded weighted draw. Images of any size or mode are made
RGB ``image_size``×``image_size`` (shorter side resized, centre crop) and returned as a float
tensor in [-1, 1]. The position (each source's shard position and the mixing RNG) is
``state_dict()``-able, so training resumes exactly, as :class:`cola_mm.data.windows.TokenWindows`.

Each item is ``{"pixels": (3, S, S) float, "txt": str, "json": dict | None}`` (``json``: the
sample's ground truth where the shard has one, from which :mod:`cola_mm.data.captions` rebuilds a
canonical caption).

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


def pixels_from_image(img, size: int) -> torch.Tensor:
    """PIL image (any mode/size) → (3, size, size) float in [-1, 1]."""
    from cola_mm.core.images import fit_square, image_to_tensor, to_rgb

    return image_to_tensor(fit_square(to_rgb(img), size))


class ImagePairs(torch.utils.data.IterableDataset):
    def __init__(self, sources: Sequence[Source], image_size: int = 64, seed: int = 0,
                 shuffle_buffer: int = 1000, epochs: int | None = None, require_text: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        if not sources:
            raise DataError("no image sources given")
        if any(s.weight <= 0 for s in sources):
            raise DataError("source weights must be > 0")
        self.weights = [s.weight for s in sources]
        self.warps = [(s.warp_degrees, s.warp_scale) if isinstance(s, PairSource) else (0.0, 0.0) for s in sources]
        if any(min(w) < 0 for w in self.warps):
            raise DataError("warp_degrees and warp_scale must be >= 0")
        required = ("image", "txt") if require_text else ("image",)
        self.datasets = [
            ShardDataset(s.shards, required=required, fields=("txt", "text", "caption", "json", "jpg", "jpeg", "png", "webp"),
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
            pixels = pixels_from_image(sample["image"], self.image_size)
            if any(self.warps[i]):
                gen = torch.Generator().manual_seed(warp_rng.getrandbits(63))
                pixels = random_warp(pixels[None], *self.warps[i], gen)[0]
            self._rng_state, self._warp_state = rng.getstate(), warp_rng.getstate()
            yield {"pixels": pixels, "txt": sample.get("txt", ""), "json": sample.get("json")}
