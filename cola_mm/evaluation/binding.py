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


from cola_mm.evaluation.context import MASKED, prompt_context_losses
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
