"""Fixed-length token windows from weighted mixtures of text shards, resumable.

Each source is a set of shards (any :func:`cola_mm.data.loader.list_shards` pattern) with a mixing
weight. Documents are tokenized as ``<bos> text <eos>`` and packed back to back into a token
buffer per source; every yielded window of ``seq_len`` tokens comes from one source, chosen by
a seeded weighted draw. No padding is needed. The position (each source's shard position, the
packing buffers, the mixing RNG) is ``state_dict()``-able, so training resumes exactly.

Shapes: each item is ``{"ids": LongTensor (seq_len,)}``; :func:`collate_windows` stacks them
into ``{"ids": (b, seq_len)}``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from cola_mm.data.loader import ShardDataset
from cola_mm.data.shards import DataError


@dataclass(frozen=True)
class Source:
    shards: str  # directory, glob, brace pattern or '::'-joined list
    weight: float = 1.0  # mixing weight (relative)


class TokenWindows(torch.utils.data.IterableDataset):
    def __init__(self, sources: Sequence[Source], tokenizer, seq_len: int, seed: int = 0,
                 shuffle_buffer: int = 1000, epochs: int | None = None,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        if not sources:
            raise DataError("no text sources given")
        if seq_len < 2:
            raise DataError(f"seq_len must be >= 2, got {seq_len}")
        if any(s.weight <= 0 for s in sources):
            raise DataError("source weights must be > 0")
        self.weights = [s.weight for s in sources]
        self.datasets = [
            ShardDataset(s.shards, required=("txt",), fields=("txt", "text", "caption"),
                         shuffle_buffer=shuffle_buffer, shuffle_shards=epochs is None,
                         seed=seed + 1000 * i, epochs=epochs, rank=rank, world_size=world_size)
            for i, s in enumerate(sources)]
        self.tokenizer = tokenizer
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        if self.bos is None or self.eos is None:
            raise DataError("the tokenizer needs <bos> and <eos> tokens")
        self.seq_len = seq_len
        self.seed = seed
        self._buffers: list[list[int]] = [[] for _ in sources]
        self._rng_state: Any = None
        self._resume: dict | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"sources": [d.state_dict() for d in self.datasets],
                "buffers": [list(b) for b in self._buffers],
                "rng": _jsonable(self._rng_state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["sources"]) != len(self.datasets):
            raise DataError(f"data state has {len(state['sources'])} sources, config has {len(self.datasets)}")
        self._resume = state

    def _fill(self, i: int, streams: list[Iterator[dict]]) -> bool:
        """Top up source ``i``'s buffer to at least one window; False when it is exhausted."""
        buf = self._buffers[i]
        while len(buf) < self.seq_len:
            sample = next(streams[i], None)
            if sample is None:
                return False
            buf.extend([self.bos, *self.tokenizer.encode(sample["txt"], add_special_tokens=False), self.eos])
        return True

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        consumer = (info.id if info else 0) + 1000 * self.datasets[0].rank
        rng = random.Random(f"{self.seed}/mix/{consumer}")
        if self._resume is not None:
            for d, s in zip(self.datasets, self._resume["sources"]):
                d.load_state_dict(s)
            self._buffers = [list(b) for b in self._resume["buffers"]]
            if self._resume["rng"] is not None:
                rng.setstate(_from_jsonable(self._resume["rng"]))
            self._resume = None
        else:
            self._buffers = [[] for _ in self.datasets]
        streams = [iter(d) for d in self.datasets]
        live = list(range(len(self.datasets)))
        while live:
            self._rng_state = rng.getstate()
            i = rng.choices(live, weights=[self.weights[j] for j in live])[0]
            if not self._fill(i, streams):
                live.remove(i)
                continue
            window, self._buffers[i] = self._buffers[i][:self.seq_len], self._buffers[i][self.seq_len:]
            self._rng_state = rng.getstate()
            yield {"ids": torch.tensor(window, dtype=torch.long)}


def collate_windows(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"ids": torch.stack([it["ids"] for it in items])}  # (b, seq_len)


def _jsonable(state):
    if state is None:
        return None
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _from_jsonable(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
