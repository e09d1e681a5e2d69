"""Does the prior bind each attribute to its object? Prompts with attributes exchanged.

Two-object text → image is the bundled prior's largest miss: on ``shapes/val`` the count is
right for half of the images and both objects for 4 % (docs/experiments.md §20). A prior can
read a prompt as a bag of attributes ("red", "blue", "triangle", "cross") and still not know
which object has which. This module asks the prior itself, teacher-forced: the flow loss of a
real two-object image (:func:`cola_mm.evaluation.context.prompt_context_losses`) under its own
prompt and under prompts that change it in two ways (:func:`variants`):

- **exchanged** (``swap_colors``, ``swap_shapes``, ``swap_objects``): the two objects' colour
  words, shape words, or whole phrases trade places. The words of the prompt are the same; only
  which object has which colour (shape, place) changes. A bag-of-attributes reader loses nothing.
- **replaced** (``recolor_both``, ``reshape_both``): both objects get a colour (shape) that
  neither has. Every reader that reads the attribute at all loses.

With the image wrong for both objects in either case, a prior that binds loses about as much
from the exchange as from the replacement; one that reads a bag of attributes loses only from
the replacement. :func:`summarize_binding` reports each gap (variant − true, paired per image)
and the **binding ratio** exchanged / replaced per attribute: near 1 binds, near 0 does not.
``swap_objects`` (the phrases trade places, so the relation is reversed) has no replaced twin;
it is reported against ``masked`` (no prompt at all).

A variant whose prompt has a different number of caption latents than the true one (a new
word of other token length) is left out for that image (see ``kept``); one that does not apply
(the two objects share the colour) is None.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any, Sequence

import torch

from cola_mm.core.sequence import layout_row, text_to_image
from cola_mm.evaluation.context import MASKED, paired_block_losses, prompt_context_losses
from cola_mm.data.shapes import COLOR_WORDS, OBJECT_PHRASE_RE, SHAPE_WORDS, slot_name

EXCHANGED = ("swap_colors", "swap_shapes", "swap_objects")
REPLACED = {"swap_colors": "recolor_both", "swap_shapes": "reshape_both", "swap_objects": MASKED}
VARIANTS = (*EXCHANGED, "recolor_both", "reshape_both")

def object_phrases(caption: str) -> list[re.Match]:
    """The object phrases of a shapes caption, in order (two for a two-object caption)."""
    return list(OBJECT_PHRASE_RE.finditer(caption))


def _replace(caption: str, edits: Sequence[tuple[int, int, str]]) -> str:
    for start, end, text in sorted(edits, reverse=True):
        caption = caption[:start] + text + caption[end:]
    return caption


def _swap(caption: str, a: re.Match, b: re.Match, group: str) -> str:
    return _replace(caption, [(*a.span(group), b.group(group)), (*b.span(group), a.group(group))])


def variants(caption: str, seed: int = 0) -> dict[str, str | None]:
    """The prompts of :data:`VARIANTS` for a two-object shapes caption (module docstring); a
    variant that does not apply is None (the objects share the attribute, or the caption does
    not have exactly two object phrases). Replacements are drawn from the attributes neither
    object has, in an order fixed by ``seed``."""
    phrases = object_phrases(caption)
    if len(phrases) != 2:
        return dict.fromkeys(VARIANTS)
    a, b = phrases
    rng = random.Random(f"{seed}/{caption}")
    out: dict[str, str | None] = dict.fromkeys(VARIANTS)
    for attr, name, canon_words in (("color", "colors", COLOR_WORDS), ("shape", "shapes", SHAPE_WORDS)):
        ka, kb = slot_name(attr, a.group(attr)), slot_name(attr, b.group(attr))
        if ka == kb:
            continue
        out[f"swap_{name}"] = _swap(caption, a, b, attr)
        unused = [k for k in canon_words if k not in (ka, kb)]
        new_a, new_b = rng.sample(unused, 2)
        out["recolor_both" if attr == "color" else "reshape_both"] = _replace(
            caption, [(*a.span(attr), canon_words[new_a][0]), (*b.span(attr), canon_words[new_b][0])])
    if a.group(0).lower() != b.group(0).lower():
        out["swap_objects"] = _replace(caption, [(*a.span(), b.group(0)), (*b.span(), a.group(0))])
    return out


def binding_losses(pipe, samples: Sequence[dict], draws: int = 4, seed: int = 0, time_loc: float = 0.0,
                   fixed_t: Sequence[float] | None = None, batch_size: int = 16,
                   progress: str | None = None) -> dict[str, Any]:
    """:func:`prompt_context_losses` of two-object ``samples`` (dicts with ``image`` and ``txt``,
    the prompt they were rendered for) under their own prompt, every variant and no prompt."""
    prompts: dict[str, Any] = {"true": [s["txt"] for s in samples]}
    table = [variants(s["txt"], seed) for s in samples]
    prompts.update({name: [v[name] for v in table] for name in VARIANTS})
    prompts[MASKED] = MASKED
    return prompt_context_losses(pipe, samples, prompts, draws=draws, seed=seed, time_loc=time_loc,
                                 fixed_t=fixed_t, batch_size=batch_size, progress=progress)


def summarize_binding(raw: dict[str, Any]) -> dict[str, Any]:
    """Mean loss per name; per variant the paired gap (variant − true, per image averaged over
    draws, then over images) with its standard error; per exchange the binding ratio
    gap(exchanged) / gap(replaced), both over the images that have both."""
    loss = raw["loss"]
    true = loss["true"].mean(0)  # (b,)
    per_image = {name: x.mean(0) - true for name, x in loss.items() if name != "true"}  # NaN where left out
    out: dict[str, Any] = {"mean": {n: float(x.nanmean()) for n, x in loss.items()}, "kept": dict(raw["kept"]),
                           "gap": {}, "gap_se": {}, "ratio": {}, "ratio_images": {}}
    for name, d in per_image.items():
        d = d[~d.isnan()]
        out["gap"][name] = float(d.mean()) if len(d) else float("nan")
        out["gap_se"][name] = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    for exchange in EXCHANGED:
        both = ~(per_image[exchange].isnan() | per_image[REPLACED[exchange]].isnan())
        n = int(both.sum())
        out["ratio_images"][exchange] = n
        out["ratio"][exchange] = (float(per_image[exchange][both].mean() / per_image[REPLACED[exchange]][both].mean())
                                  if n else float("nan"))
    return out


def gaps_by_draw(raw: dict[str, Any]) -> dict[str, list[float]]:
    """Per draw (with ``fixed_t``: per time), each name's gap to ``true`` averaged over the images
    that have it: ``{name: [gap at draw 0, …]}``."""
    true = raw["loss"]["true"]
    return {name: [float(v) for v in (x - true).nanmean(1)] for name, x in raw["loss"].items() if name != "true"}


# --------------------------------------------------------------------------- a toy that needs binding

TOY_KINDS = ("order", "bag", "relation")


class BindingToy:
    """Text → image rows in which only word order (or a relation word) says where each word goes.

    A prompt of one text block and an image of 2×2 latents, the real text → image layout
    (:func:`cola_mm.core.sequence.text_to_image`); word latents come from a fixed random table.

    - ``order``: prompt ``[w_a, w_b, pad, pad]``; cell (0, 0) holds ``F[a]``, cell (0, 1)
      ``F[b]``: the image follows the prompt's order, so a prior must bind each word's slot to a
      place. Exchanged: the two words trade places.
    - ``bag`` (the control): the same prompts, the cells hold the two words' images sorted by
      word id, so the order tells nothing and no prior should read it.
    - ``relation``: prompt ``[w_a, left|right, w_b, pad]``; "left" puts ``F[a]`` in the first
      cell as in ``order``, "right" reverses the cells. Exchanged: the relation word flips.

    Replaced (every kind): two words neither has. The binding ratio (exchanged − true) /
    (replaced − true) is near 1 for a prior that reads what the kind asks, near 0 for one that
    reads a bag of words, and near 0 on ``bag`` whatever the prior."""

    n_words = 8
    PAD, LEFT, RIGHT = 8, 9, 10  # word-table rows after the words

    def __init__(self, kind: str, channels: int = 8, seed: int = 1):
        if kind not in TOY_KINDS:
            raise ValueError(f"toy kind must be one of {', '.join(TOY_KINDS)}, got {kind!r}")
        self.kind, self.channels = kind, channels
        g = torch.Generator().manual_seed(seed)
        self.words = torch.randn(self.n_words + 3, channels, generator=g)
        self.images = torch.randn(self.n_words, channels, generator=g)
        self.layout = layout_row([text_to_image(4, (2, 2))], text_block=4)

    def pairs(self, n: int, generator: torch.Generator, p_right: float = 0.5) -> torch.Tensor:
        """(n, 3): two distinct word ids and a relation (LEFT, or RIGHT for a ``p_right`` share of
        the ``relation`` rows)."""
        words = torch.stack([torch.randperm(self.n_words, generator=generator)[:2] for _ in range(n)])
        right = (torch.rand(n, generator=generator) < p_right) & (self.kind == "relation")
        return torch.cat([words, torch.where(right, self.RIGHT, self.LEFT)[:, None]], 1)

    def rows(self, pairs: torch.Tensor, prompt_pairs: torch.Tensor | None = None) -> torch.Tensor:
        """(n, 8, c) rows: the prompt of ``prompt_pairs`` (default ``pairs``), the image of ``pairs``."""
        q = pairs if prompt_pairs is None else prompt_pairs
        pad = torch.full((len(q),), self.PAD)
        slots = [q[:, 0], q[:, 2], q[:, 1], pad] if self.kind == "relation" else [q[:, 0], q[:, 1], pad, pad]
        text = self.words[torch.stack(slots, 1)]  # (n, 4, c)
        if self.kind == "bag":
            cells = pairs[:, :2].sort(1).values
        elif self.kind == "relation":
            cells = torch.where((pairs[:, 2] == self.RIGHT)[:, None], pairs[:, :2].flip(1), pairs[:, :2])
        else:
            cells = pairs[:, :2]
        image = torch.cat([self.images[cells], torch.zeros(len(pairs), 2, self.channels)], 1)
        return torch.cat([text, image], 1)

    def exchanged(self, pairs: torch.Tensor) -> torch.Tensor:
        if self.kind == "relation":
            return torch.cat([pairs[:, :2], torch.where(pairs[:, 2:] == self.LEFT, self.RIGHT, self.LEFT)], 1)
        return torch.cat([pairs[:, :2].flip(1), pairs[:, 2:]], 1)

    @staticmethod
    def dit(position_embed: int, seed: int = 0, n_layers: int = 2):
        """The toy's prior: the project's DiT, width 64, ``n_layers`` layers, seeded."""
        from cola_mm.prior.dit import DiT, preset

        torch.manual_seed(seed)
        return DiT(preset("tiny", d_model=64, n_heads=4, n_layers=n_layers, freq_dim=32, d_latent=8, block_size=4,
                          position_embed=position_embed))

    def tensors(self, n: int) -> tuple[torch.Tensor, ...]:
        """block ids (L,), positions (n, L, 3), segments (n, L), loss weights (n, L)."""
        lay = self.layout
        return (lay.block_ids, lay.positions.expand(n, *lay.positions.shape), lay.segments.expand(n, -1),
                lay.loss_weight.expand(n, -1))

    def train(self, dit, steps: int, batch_size: int = 64, lr: float = 2e-3, seed: int = 2, p_right: float = 0.5):
        """Train ``dit`` on the toy's rows with the prior's flow loss (image times at loc 0);
        ``p_right``: the share of ``relation`` training rows that say "right" (measured at 0.5)."""
        from cola_mm.prior.training import flow_matching_loss

        opt = torch.optim.AdamW(dit.parameters(), lr=lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(seed)
        layout = self.tensors(batch_size)
        dit.train()
        for _ in range(steps):
            rows = self.rows(self.pairs(batch_size, g, p_right))
            loss, _ = flow_matching_loss(dit, rows, *layout, time_loc=0.0, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return dit.eval()

    def measure(self, dit, n: int = 256, seed: int = 99) -> dict[str, float]:
        """The image block's mean flow loss under the true, exchanged and replaced prompts (paired
        ε and t), and the binding ratio (exchanged − true) / (replaced − true), NaN for a prior that
        reads no prompt."""
        pairs = self.pairs(n, torch.Generator().manual_seed(seed))
        others = torch.tensor([[w for w in range(self.n_words) if w not in p[:2]][:2] + p[2:] for p in pairs.tolist()])
        true = self.rows(pairs)
        contexts = {"true": true, "exchanged": self.rows(pairs, self.exchanged(pairs)),
                    "replaced": self.rows(pairs, others)}
        block_ids, positions, segments, weight = self.tensors(n)
        raw = paired_block_losses(dit, true, block_ids, positions, segments, contexts, weight, draws=4,
                                  seed=seed + 1, time_loc=0.0, batch_size=128)
        out = {name: float(x[..., -1].mean()) for name, x in raw["loss"].items()}
        replaced = out["replaced"] - out["true"]
        out["ratio"] = (out["exchanged"] - out["true"]) / replaced if replaced else float("nan")  # reads no prompt
        return out
