"""Training rows that mix the three jobs, resumable: text windows and packed image–caption samples.

Every row holds ``seq_len`` latents. A row is a text window (job ``text_to_text``) or a pack
of image–caption samples, each of which is ``text_to_image`` ([caption prompt][image]) or
``image_to_text`` ([image prompt][caption]), drawn with the configured job ratios; samples are
packed greedily until the next one does not fit, the rest is padding. With probability
``cond_dropout`` a conditional sample loses its prompt segment (:func:`cola_mm.core.sequence.drop_condition`),
which trains the unconditional model that classifier-free guidance uses.

Which caption text a sample uses is set per role: ``caption_prompts`` for the prompt of
text→image, ``caption_targets`` for the generated caption of image→text; ``"original"`` is the
shard's ``txt``, ``"canonical"`` the one phrasing rebuilt from its json (:mod:`cola_mm.data.captions`),
computed only for the samples whose role asks for it.

A caption segment is ``<bos> caption <eos>`` then ``<pad>`` up to a multiple of the text
block (at most ``caption_tokens``; longer captions are cut, keeping ``<eos>``); its loss stops
after ``<eos>``. The layout (blocks, samples, 2-D/1-D positions, segment types, loss weights)
comes from :func:`cola_mm.core.sequence.layout_row`.

A row item::

    {"layout": RowLayout, "window": (seq_len,) ids or None,
     "captions": [(start, ids (n,))…], "images": [(start, pixels (3, S, S))…]}

:func:`collate_rows` batches items into tensors the joint module scatters into one latent batch.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import torch

from cola_mm.core.sequence import (JOBS, Segment, caption_ids, drop_condition, image_to_text, layout_row, sample_length,
                                   stack_layouts, text_to_image, text_to_text)
from cola_mm.data.captions import canonical_caption, check_style
from cola_mm.data.pairs import ImagePairs
from cola_mm.data.shards import DataError
from cola_mm.data.windows import TokenWindows, _from_jsonable, _jsonable


class MultimodalRows(torch.utils.data.IterableDataset):
    def __init__(self, windows: TokenWindows | None, pairs: ImagePairs | None, tokenizer, jobs: dict[str, float],
                 seq_len: int, image_grid: int, text_block: int = 16, caption_tokens: int = 32,
                 cond_dropout: float = 0.1, seed: int = 0, caption_prompts: str = "original",
                 caption_targets: str = "original"):
        super().__init__()
        self.styles = {"text_to_image": check_style(caption_prompts, "caption_prompts"),
                       "image_to_text": check_style(caption_targets, "caption_targets")}
        unknown = set(jobs) - set(JOBS)
        if unknown:
            raise DataError(f"unknown jobs {sorted(unknown)}; valid jobs: {', '.join(JOBS)}")
        self.jobs = {j: float(w) for j, w in jobs.items() if w > 0}
        if not self.jobs:
            raise DataError("data.jobs: at least one job needs a weight > 0")
        if "text_to_text" in self.jobs and windows is None:
            raise DataError("job text_to_text needs text sources (data.train)")
        if set(self.jobs) - {"text_to_text"} and pairs is None:
            raise DataError("jobs text_to_image / image_to_text need image–caption sources (data.pairs)")
        if caption_tokens < 3 or caption_tokens % text_block:
            raise DataError(f"caption_tokens ({caption_tokens}) must be a multiple of the text block ({text_block})")
        if seq_len < caption_tokens + image_grid ** 2:
            raise DataError(f"seq_len {seq_len} cannot hold one caption ({caption_tokens}) and one image "
                            f"({image_grid ** 2} tokens)")
        self.windows, self.pairs, self.tokenizer = windows, pairs, tokenizer
        self.seq_len, self.grid, self.block = seq_len, image_grid, text_block
        self.caption_tokens, self.cond_dropout, self.seed = caption_tokens, cond_dropout, seed
        self._rng_state: Any = None
        self._resume: dict | None = None
        self._pending: tuple | None = None  # a pair drawn that did not fit the last row

    def state_dict(self) -> dict[str, Any]:
        return {"windows": self.windows.state_dict() if self.windows else None,
                "pairs": self.pairs.state_dict() if self.pairs else None,
                "rng": _jsonable(self._rng_state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = state

    def _pair_sample(self, rng: random.Random, pair: dict, job: str) -> tuple[list[Segment], list[int], int]:
        text = canonical_caption(pair["json"]) if self.styles[job] == "canonical" else pair["txt"]
        ids, n_real = caption_ids(self.tokenizer, text, self.caption_tokens, self.block)
        grid = (self.grid, self.grid)
        if job == "text_to_image":
            sample = text_to_image(len(ids), grid)
        else:
            sample = image_to_text(grid, len(ids), n_loss=n_real)
        if rng.random() < self.cond_dropout:
            sample = drop_condition(sample)
        return sample, ids, n_real

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        rank = (self.windows or self.pairs).datasets[0].rank
        rng = random.Random(f"{self.seed}/jobs/{(info.id if info else 0) + 1000 * rank}")
        if self._resume is not None:
            if self.windows and self._resume["windows"]:
                self.windows.load_state_dict(self._resume["windows"])
            if self.pairs and self._resume["pairs"]:
                self.pairs.load_state_dict(self._resume["pairs"])
            if self._resume["rng"] is not None:
                rng.setstate(_from_jsonable(self._resume["rng"]))
            self._resume = None
        windows = iter(self.windows) if self.windows else None
        pairs = iter(self.pairs) if self.pairs else None
        pair_jobs = {j: w for j, w in self.jobs.items() if j != "text_to_text"}
        row_weights = {"text_to_text": self.jobs.get("text_to_text", 0.0), "pairs": sum(pair_jobs.values())}
        while True:
            kind = rng.choices(list(row_weights), weights=list(row_weights.values()))[0]
            if kind == "text_to_text":
                window = next(windows, None)
                if window is None:
                    return
                layout = layout_row([text_to_text(self.seq_len)], self.seq_len, self.block)
                self._rng_state = rng.getstate()
                yield {"layout": layout, "window": window["ids"], "captions": [], "images": []}
                continue
            samples, captions, images = [], [], []
            used = 0
            while True:
                pair = next(pairs, None)
                if pair is None:
                    break
                job = rng.choices(list(pair_jobs), weights=list(pair_jobs.values()))[0]
                sample, ids, _ = self._pair_sample(rng, pair, job)
                if used + sample_length(sample) > self.seq_len:
                    break  # this pair is dropped; the next row starts fresh (keeps resume exact)
                start = used
                for seg in sample:
                    if seg.modality == "text":
                        captions.append((start, torch.tensor(ids, dtype=torch.long)))
                    else:  # pixels (3, S, S), or a cached posterior (2, C, h, w) from a latent cache
                        images.append((start, pair["pixels"] if "pixels" in pair else pair["latent"]))
                    start += seg.length
                samples.append(sample)
                used += sample_length(sample)
            if not samples:
                return
            self._rng_state = rng.getstate()
            yield {"layout": layout_row(samples, self.seq_len, self.block), "window": None,
                   "captions": captions, "images": images}


def collate_rows(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Rows → the joint module's batch::

        layout tensors (b, L[, 3]); windows (n_w, L) + window_rows (n_w,);
        captions (n_c, T) right-padded with 0 + caption_at (n_c, 2) [row, start] + caption_len (n_c,);
        pixels (n_i, 3, S, S) + image_at (n_i, 2) [row, start];
        latents (n_l, 2, C, h, w) [posterior mean, logvar of cached images] + latent_at (n_l, 2)
    """
    batch = stack_layouts([it["layout"] for it in items])
    win = [(r, it["window"]) for r, it in enumerate(items) if it["window"] is not None]
    L = batch["block_ids"].shape[1]
    batch["windows"] = torch.stack([w for _, w in win]) if win else torch.zeros(0, L, dtype=torch.long)
    batch["window_rows"] = torch.tensor([r for r, _ in win], dtype=torch.long)
    caps = [(r, s, ids) for r, it in enumerate(items) for s, ids in it["captions"]]
    T = max((len(ids) for _, _, ids in caps), default=1)
    captions = torch.zeros(len(caps), T, dtype=torch.long)
    for i, (_, _, ids) in enumerate(caps):
        captions[i, :len(ids)] = ids
    batch["captions"] = captions
    batch["caption_at"] = torch.tensor([[r, s] for r, s, _ in caps], dtype=torch.long).reshape(-1, 2)
    batch["caption_len"] = torch.tensor([len(ids) for _, _, ids in caps], dtype=torch.long)
    imgs = [(r, s, px) for r, it in enumerate(items) for s, px in it["images"] if px.ndim == 3]
    batch["pixels"] = torch.stack([px for _, _, px in imgs]) if imgs else torch.zeros(0, 3, 1, 1)
    batch["image_at"] = torch.tensor([[r, s] for r, s, _ in imgs], dtype=torch.long).reshape(-1, 2)
    lats = [(r, s, z) for r, it in enumerate(items) for s, z in it["images"] if z.ndim == 4]
    batch["latents"] = torch.stack([z for _, _, z in lats]) if lats else torch.zeros(0, 2, 1, 1, 1)
    batch["latent_at"] = torch.tensor([[r, s] for r, s, _ in lats], dtype=torch.long).reshape(-1, 2)
    return batch
