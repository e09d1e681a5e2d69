"""The unified latent sequence: a sample is a list of typed segments; everything else is derived.

A :class:`Segment` says what a stretch of latents is (``modality`` text or image) and what it
does in the job (``role``):

- ``prompt``: the condition of a conditional job (text before an image, an image before its
  caption). Given clean, never generated, no loss; dropped with a probability in training so
  the same prior learns the unconditional model that classifier-free guidance needs.
- ``context``: clean given text that is itself data (a continuation's prompt at inference).
- ``target``: what the prior generates; carries the flow loss.

From segments, :func:`layout_row` derives for one packed row (several samples back to back,
then padding) every per-latent tensor the prior needs:

- block ids: each segment starts a new block; text is cut into blocks of ``text_block``
  latents (16), an image is one block (its patches see each other bidirectionally);
- sample ids: attention never crosses samples (:func:`cola_mm.prior.masks.packed_two_copy_mask`);
- positions (L, 3) for RoPE: text latent at p → (p, p, p) (1-D RoPE); an image segment that
  starts at s with an r×c token grid → (s, s + i, s + j) for patch (i, j) (2-D RoPE), and the
  next segment starts at s + max(r, c);
- segment types (:data:`SEGMENT_TYPES`, which the DiT embeds): image, prompt_text, text, pad;
- loss weights: 1 on target latents (optionally only the first ``n_loss`` of a segment, e.g.
  up to a caption's ``<eos>``), 0 elsewhere; and the modality per latent (flow times are drawn
  per block with a loc/scale per modality).

The three jobs (DESIGN.md)::

    text → text    [text target]                       (training: a window; blocks from its start)
    text → image   [text prompt][image target]
    image → text   [image prompt][text target]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

TEXT, IMAGE = "text", "image"
MODALITIES = (TEXT, IMAGE)
ROLES = ("prompt", "context", "target")
JOBS = ("text_to_text", "text_to_image", "image_to_text")
N_AXES = 3  # RoPE position axes: (sequence, row, column)
# What a latent is, as the DiT sees it (one learned embedding each, DiTConfig.n_segment_types):
# generated or context text, an image, a text prompt (a condition), padding.
SEGMENT_TYPES = {"text": 0, "image": 1, "prompt_text": 2, "pad": 3}


@dataclass(frozen=True)
class Segment:
    modality: str  # text | image
    role: str  # prompt | context | target
    length: int  # latents (text: one per token; image: rows·cols patch tokens)
    grid: tuple[int, int] | None = None  # image token grid (rows, cols)
    n_loss: int | None = None  # only the first n_loss latents carry loss (None: all, if target)

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"segment modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.role not in ROLES:
            raise ValueError(f"segment role must be one of {ROLES}, got {self.role!r}")
        if self.length < 1:
            raise ValueError(f"a segment needs at least one latent, got length {self.length}")
        if self.modality == IMAGE:
            if self.grid is None or self.grid[0] * self.grid[1] != self.length:
                raise ValueError(f"an image segment needs grid rows·cols == length, got {self.grid} for {self.length}")
        elif self.grid is not None:
            raise ValueError("a text segment has no grid")
        if self.n_loss is not None and not 0 <= self.n_loss <= self.length:
            raise ValueError(f"n_loss must be in [0, {self.length}], got {self.n_loss}")

    @property
    def segment_type(self) -> int:
        if self.modality == IMAGE:
            return SEGMENT_TYPES["image"]
        return SEGMENT_TYPES["prompt_text" if self.role == "prompt" else "text"]

    def loss_weights(self) -> torch.Tensor:
        w = torch.zeros(self.length)
        if self.role == "target":
            w[:self.length if self.n_loss is None else self.n_loss] = 1.0
        return w


# ---- the jobs as segment lists


def text_to_text(n_tokens: int) -> list[Segment]:
    return [Segment(TEXT, "target", n_tokens)]


def text_to_image(n_prompt: int, grid: tuple[int, int]) -> list[Segment]:
    return [Segment(TEXT, "prompt", n_prompt), Segment(IMAGE, "target", grid[0] * grid[1], grid)]


def image_to_text(grid: tuple[int, int], n_caption: int, n_loss: int | None = None) -> list[Segment]:
    return [Segment(IMAGE, "prompt", grid[0] * grid[1], grid), Segment(TEXT, "target", n_caption, n_loss=n_loss)]


def drop_condition(sample: Sequence[Segment]) -> list[Segment]:
    """The sample without its prompt segments: what the unconditional model sees."""
    return [s for s in sample if s.role != "prompt"]


def sample_length(sample: Sequence[Segment]) -> int:
    return sum(s.length for s in sample)


# ---- layout


@dataclass
class RowLayout:
    """Per-latent tensors of one packed row of ``length`` latents."""

    block_ids: torch.Tensor  # (L,) long, increasing along the row
    sample_ids: torch.Tensor  # (L,) long; padding latents have their own id
    positions: torch.Tensor  # (L, 3) long
    segments: torch.Tensor  # (L,) long DiT segment types
    loss_weight: torch.Tensor  # (L,) float
    is_image: torch.Tensor  # (L,) bool
    spans: list[tuple[int, int, int, Segment]]  # (sample index, start, end, segment) per segment


def segment_positions(seg: Segment, start: int) -> tuple[torch.Tensor, int]:
    """RoPE positions (n, 3) of a segment starting at sequence position ``start``, and the
    position the next segment starts at."""
    if seg.modality == TEXT:
        p = torch.arange(start, start + seg.length)
        return p[:, None].expand(-1, N_AXES), start + seg.length
    rows, cols = seg.grid
    i = torch.arange(rows).repeat_interleave(cols)
    j = torch.arange(cols).repeat(rows)
    return torch.stack([torch.full_like(i, start), start + i, start + j], 1), start + max(rows, cols)


def layout_row(samples: Sequence[Sequence[Segment]], length: int | None = None, text_block: int = 16) -> RowLayout:
    """Lay ``samples`` out back to back in one row of ``length`` latents (default: exactly
    their total), padding the rest."""
    if text_block < 1:
        raise ValueError(f"text_block must be >= 1, got {text_block}")
    total = sum(sample_length(s) for s in samples)
    length = total if length is None else length
    if total > length:
        raise ValueError(f"samples need {total} latents, the row holds {length}")
    blocks, sids, pos, segs, weights, image = [], [], [], [], [], []
    spans = []
    block = 0
    cursor = 0
    for k, sample in enumerate(samples):
        position = 0
        for seg in sample:
            n = seg.length
            if seg.modality == TEXT:
                blocks.append(block + torch.arange(n) // text_block)
                block += -(-n // text_block)
            else:
                blocks.append(torch.full((n,), block))
                block += 1
            p, position = segment_positions(seg, position)
            pos.append(p)
            sids.append(torch.full((n,), k))
            segs.append(torch.full((n,), seg.segment_type))
            weights.append(seg.loss_weights())
            image.append(torch.full((n,), seg.modality == IMAGE))
            spans.append((k, cursor, cursor + n, seg))
            cursor += n
    pad = length - total
    if pad:
        blocks.append(torch.full((pad,), block))
        sids.append(torch.full((pad,), len(samples)))
        pos.append(torch.zeros(pad, N_AXES, dtype=torch.long))
        segs.append(torch.full((pad,), SEGMENT_TYPES["pad"]))
        weights.append(torch.zeros(pad))
        image.append(torch.zeros(pad, dtype=torch.bool))
    if not blocks:
        raise ValueError("an empty row: no samples and no length")
    return RowLayout(torch.cat(blocks).long(), torch.cat(sids).long(), torch.cat(pos).long(),
                     torch.cat(segs).long(), torch.cat(weights).float(), torch.cat(image).bool(), spans)


def stack_layouts(rows: Sequence[RowLayout]) -> dict[str, torch.Tensor]:
    """Batch the per-latent tensors of equal-length rows: each (b, L[, 3])."""
    return {name: torch.stack([getattr(r, name) for r in rows])
            for name in ("block_ids", "sample_ids", "positions", "segments", "loss_weight", "is_image")}


def caption_ids(tokenizer, text: str, max_tokens: int, block: int) -> tuple[list[int], int]:
    """A caption segment's token ids, ``<bos> text <eos> <pad>…`` padded to a multiple of
    ``block`` and at most ``max_tokens`` long (the text is cut to fit): (ids, n_real)."""
    ids = tokenizer.encode(text, add_special_tokens=False)[:max_tokens - 2]
    ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    n = len(ids)
    padded = -(-n // block) * block
    return ids + [tokenizer.pad_token_id] * (padded - n), n
