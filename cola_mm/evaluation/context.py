"""Does the prior use its context? Paired teacher-forced flow losses and continuation overlap.

Issue 24: the text prior's flow loss barely moves when its context is swapped for another
document's or for noise, and continuations of different prompts at one seed are near-identical.
This module measures that on held-out data, as plain dicts.

**Per-block flow loss under swapped contexts** (:func:`paired_block_losses`). Held-out latents
``z0`` are laid out in the 2L layout [clean copy | noisy copy] exactly as in training
(:func:`cola_mm.prior.training.two_copy_forward`); the noisy copy is always the TRUE data's
``z_t = (1 − t)·z0 + t·ε``, and only what the noisy blocks may read as context changes:

- ``true``: the clean copy is ``z0`` itself (the training condition);
- ``foreign``: the clean copy is another held-out sample's clean latents at the same positions
  (:func:`foreign_of`: the batch rolled by half its size, so the partner is far away in the
  held-out order — another document, not the next window of the same one);
- ``noise``: the clean copy is pure N(0, 1) noise (still at t = 0: the model is told it is clean);
- ``masked``: the noisy blocks see no clean block at all (each attends to itself only — the
  context-free velocity that classifier-free guidance uses, :meth:`BlockSampler.unconditional_velocity`).

Noisy block k reads only clean blocks < k (the 2L rule), so replacing the whole clean copy gives
every block its swapped context in one forward pass. The noise ε and the times t are drawn once
per (draw, sample, block) and shared by all conditions, so the differences are paired; several
draws average over t. Block 0 has no context under any condition: its four losses are equal up
to float error (a built-in check). Times follow the training law t = sigmoid(loc + scale·N(0, 1))
(:func:`cola_mm.prior.flow.sample_block_times`) or a fixed list (``fixed_t``, e.g. to see where
along t context helps, :func:`gap_by_t`).

**Text** (:func:`text_context_losses`): held-out 128-token windows (:func:`read_windows`), encoded
by the Text VAE (posterior mean, normalised at the prior boundary). **Captions**
(:func:`caption_context_losses`): image→text rows ``[image prompt][caption]`` (the caption is
``<bos> text <eos> <pad>…``, loss up to ``<eos>``, as :mod:`cola_mm.data.multimodal`); the
condition is the image block (block 0): true image, another sample's image, noise tokens, or
masked; the caption blocks' losses are reported.

**Continuation overlap** (:func:`continuation_overlap`): continuations of N held-out prompts,
each prompt generated alone so that every prompt gets exactly the same sampling noise at a seed;
reported as the mean pairwise :class:`difflib.SequenceMatcher` ratio and the shared word-3-gram
rate (mean over ordered pairs (a, b) of the fraction of a's word 3-grams that occur in b) for
(i) different prompts, same seed (a prior that ignores its prompt scores high), (ii) the same
prompt, different seeds (the reference: how much the noise alone changes a continuation) and
(iii) different prompts and seeds (the floor: unrelated texts).

Legend: ``b`` samples (windows), ``L`` latents per sequence, ``c`` channels, ``k`` blocks,
``D`` draws of (t, ε), ``P`` prompt tokens.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
from typing import Any, Sequence

import torch
from tqdm import tqdm

from cola_mm.core.sequence import SEGMENT_TYPES, caption_ids, image_to_text, layout_row
from cola_mm.data.windows import Source, TokenWindows
from cola_mm.prior.flow import expand_block_times, interpolate, sample_block_times, velocity_target
from cola_mm.prior.masks import block_ids_for, two_copy_mask

MASKED = "masked"  # a context value: the noisy blocks see no clean block
CONDITIONS = ("true", "foreign", "noise", MASKED)


# --------------------------------------------------------------------------- the paired losses


def foreign_of(x: torch.Tensor) -> torch.Tensor:
    """Every sample's partner: the batch (b, …) rolled by b // 2 (b >= 2), so sample i gets
    sample (i − b//2) mod b — far from i in the held-out order."""
    if x.shape[0] < 2:
        raise ValueError("a foreign context needs at least 2 samples")
    return torch.roll(x, x.shape[0] // 2, dims=0)


def context_conditions(z0: torch.Tensor, seed: int = 0, names: Sequence[str] = CONDITIONS
                       ) -> dict[str, torch.Tensor | str]:
    """The clean copies of the conditions (module docstring): name → (b, L, c) or :data:`MASKED`."""
    g = torch.Generator().manual_seed(seed + 7919)
    make = {"true": lambda: z0, "foreign": lambda: foreign_of(z0),
            "noise": lambda: torch.randn(z0.shape, generator=g).to(z0),
            MASKED: lambda: MASKED}
    return {n: make[n]() for n in names}


def no_context_mask(block_ids: torch.Tensor) -> torch.Tensor:
    """The 2L mask (2L, 2L) with the noisy→clean edges removed: a noisy block sees itself only."""
    L = block_ids.shape[0]
    mask = two_copy_mask(block_ids).clone()
    mask[L:, :L] = False
    return mask


@torch.no_grad()
def paired_block_losses(dit, z0: torch.Tensor, block_ids: torch.Tensor, positions: torch.Tensor,
                        segments: torch.Tensor, contexts: dict[str, torch.Tensor | str],
                        weight: torch.Tensor | None = None, draws: int = 4, seed: int = 0,
                        time_loc: float = 1.0, time_scale: float = 1.0,
                        fixed_t: Sequence[float] | None = None, batch_size: int = 16,
                        progress: str | None = None) -> dict[str, Any]:
    """Teacher-forced flow loss per (draw, sample, block) of the true noisy copy of ``z0`` under
    each context (name → clean copy (b, L, c), or :data:`MASKED`).

    z0 (b, L, c) prior-space latents; block_ids (L,) shared by all rows; positions (b, L) or
    (b, L, A); segments (b, L); weight (b, L) latents that count (default all). ``fixed_t``: one
    time per draw, the same for every block (then ``draws = len(fixed_t)``); else t per block from
    the training law. Same ε and t for every condition. Returns ``{"loss": {name: (D, b, k)},
    "t": (D, b, k), "block_weight": (b, k), "latent_loss": {name: (L,)}}``: a block without weight
    has loss NaN; ``latent_loss`` is each position's loss averaged over draws and the rows that
    weigh it (NaN where none does), for :func:`gap_by_offset`."""
    device = next(dit.parameters()).device
    b, L, c = z0.shape
    k = int(block_ids.max()) + 1
    weight = torch.ones(b, L) if weight is None else weight.float()
    block_ids = block_ids.to(device)
    one_hot = torch.nn.functional.one_hot(block_ids, k).float()  # (L, k)
    block_weight = weight.to(device) @ one_hot  # (b, k)
    masks = {"2l": two_copy_mask(block_ids)[None], MASKED: no_context_mask(block_ids)[None]}
    if fixed_t is not None:
        draws = len(fixed_t)
    g = torch.Generator().manual_seed(seed)
    losses = {name: torch.empty(draws, b, k) for name in contexts}
    latent_sum = {name: torch.zeros(L) for name in contexts}
    latent_count = torch.zeros(L)
    times = torch.empty(draws, b, k)
    steps = [(d, s) for d in range(draws) for s in range(0, b, batch_size)]
    for d, s in tqdm(steps, desc=progress, unit="batch", disable=progress is None, leave=False):
        sl = slice(s, min(s + batch_size, b))
        n = sl.stop - sl.start
        if fixed_t is None:
            t_blocks = sample_block_times(n, k, time_loc, time_scale, g)
        else:
            t_blocks = torch.full((n, k), float(fixed_t[d]))
        eps = torch.randn(n, L, c, generator=g)
        x0 = z0[sl].to(device)
        t_blocks, eps = t_blocks.to(device), eps.to(device)
        t = expand_block_times(t_blocks, block_ids)  # (n, L)
        z_t = interpolate(x0, eps, t)
        target = velocity_target(x0, eps)
        times[d, sl] = t_blocks.cpu()
        pos = positions[sl].to(device)
        seg = segments[sl].to(device)
        w = weight[sl].to(device)
        latent_count += w.sum(0).cpu()
        for name, ctx in contexts.items():
            clean = x0 if isinstance(ctx, str) else ctx[sl].to(device)  # masked: the clean copy is unread
            x = torch.cat([clean, z_t], 1)
            tt = torch.cat([torch.zeros_like(t), t], 1)
            v = dit(x, tt, torch.cat([pos, pos], 1), torch.cat([seg, seg], 1),
                    masks[MASKED] if isinstance(ctx, str) else masks["2l"])[:, L:]
            err = (v.float() - target.float()).pow(2).mean(-1) * w  # (n, L)
            per_block = (err @ one_hot) / block_weight[sl]  # (n, k); 0/0 → NaN
            losses[name][d, sl] = per_block.cpu()
            latent_sum[name] += err.sum(0).cpu()
    latent_loss = {name: x / latent_count for name, x in latent_sum.items()}  # 0/0 → NaN
    return {"loss": losses, "t": times, "block_weight": block_weight.cpu(), "latent_loss": latent_loss}


def _nanmean(x: torch.Tensor, dim=None) -> torch.Tensor:
    return x.nanmean() if dim is None else x.nanmean(dim)


def summarize(raw: dict[str, Any], reference: str = "true", from_block: int = 1) -> dict[str, Any]:
    """Figures of :func:`paired_block_losses`' output:

    - ``per_block[name]``: mean loss per block position (k,), over draws and samples;
    - ``mean[name]``: mean over blocks >= ``from_block`` (the blocks that have a context);
    - ``gap[name]``: the paired difference name − ``reference`` averaged over draws and those
      blocks per sample, then over samples (every sample weighs the same, so where samples have
      different numbers of blocks with loss — captions — it is not ``mean[name] − mean[ref]``),
      with ``gap_se[name]``, its standard error over samples, and ``gap_per_block[name]`` (k,)."""
    loss = raw["loss"]
    ref = loss[reference]
    out: dict[str, Any] = {"per_block": {}, "mean": {}, "gap": {}, "gap_se": {}, "gap_per_block": {}}
    for name, x in loss.items():
        out["per_block"][name] = [float(v) for v in _nanmean(x, (0, 1))]
        out["mean"][name] = float(_nanmean(x[..., from_block:]))
        diff = (x - ref)[..., from_block:]  # (D, b, k')
        per_sample = _nanmean(diff.permute(1, 0, 2).flatten(1), 1)  # (b,)
        per_sample = per_sample[~per_sample.isnan()]
        out["gap"][name] = float(per_sample.mean())
        out["gap_se"][name] = float(per_sample.std() / math.sqrt(len(per_sample))) if len(per_sample) > 1 else 0.0
        out["gap_per_block"][name] = [float(v) for v in _nanmean(x - ref, (0, 1))]
    return out


def gap_by_offset(raw: dict[str, Any], block_size: int, reference: str = "true", from_block: int = 1
                  ) -> dict[str, list[float]]:
    """Gap (name − ``reference``) per offset inside a block, averaged over the blocks from
    ``from_block`` on, for rows of whole blocks of ``block_size`` from position 0 (text windows):
    ``{name: [gap at offset 0, …, block_size − 1]}``. Where along the block does context help?
    At high noise the context can say most about the block's first latents, which follow it
    directly; later ones also depend on the (noisy) latents before them in the block."""
    out = {}
    ref = raw["latent_loss"][reference]
    if ref.numel() % block_size:
        raise ValueError(f"{ref.numel()} latents are not whole blocks of {block_size}")
    for name, x in raw["latent_loss"].items():
        diff = (x - ref).reshape(-1, block_size)[from_block:]  # (k', B)
        out[name] = [float(v) for v in _nanmean(diff, 0)]
    return out


def gap_by_t(raw: dict[str, Any], edges: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
             reference: str = "true", from_block: int = 1) -> dict[str, Any]:
    """The paired gap (name − ``reference``) and the reference loss binned by the block's flow
    time t (blocks >= ``from_block``): ``{"edges", "count", "loss": {name: [per bin]},
    "gap": {name: [per bin]}}`` (NaN where a bin is empty)."""
    t = raw["t"][..., from_block:].flatten()
    ref = raw["loss"][reference][..., from_block:].flatten()
    idx = torch.bucketize(t, torch.tensor(list(edges[1:-1])))
    out: dict[str, Any] = {"edges": list(edges), "count": [int((idx == i).sum()) for i in range(len(edges) - 1)],
                           "loss": {}, "gap": {}}
    for name, x in raw["loss"].items():
        x = x[..., from_block:].flatten()
        out["loss"][name] = [float(_nanmean(x[idx == i])) if (idx == i).any() else float("nan")
                             for i in range(len(edges) - 1)]
        out["gap"][name] = [float(_nanmean((x - ref)[idx == i])) if (idx == i).any() else float("nan")
                            for i in range(len(edges) - 1)]
    return out


# --------------------------------------------------------------------------- text


def read_windows(shards: str | os.PathLike, tokenizer, n: int, seq_len: int = 128) -> torch.Tensor:
    """``n`` held-out windows (n, seq_len) of token ids, evenly spaced over all the windows of
    ``shards`` (one pass, in shard order), so neighbours come from different places."""
    ds = TokenWindows([Source(str(shards))], tokenizer, seq_len, shuffle_buffer=0, epochs=1)
    every = [w["ids"] for w in ds]
    if len(every) < n:
        raise ValueError(f"{shards} holds {len(every)} windows of {seq_len} tokens, {n} asked for")
    pick = torch.linspace(0, len(every) - 1, n).round().long().tolist()
    return torch.stack([every[i] for i in pick])


def tuning_windows(shards: str | os.PathLike, tokenizer, n: int, suite_n: int,
                   seq_len: int) -> tuple[torch.Tensor, list[int]]:
    """``n`` windows evenly spaced over those that :func:`read_windows`'s ``suite_n`` picks leave
    out, and their indices: prompts to choose settings on, disjoint from the suite's (the held-out
    plays are the only text split, so they are both val and test)."""
    every = [w["ids"] for w in TokenWindows([Source(str(shards))], tokenizer, seq_len, shuffle_buffer=0, epochs=1)]
    suite = set(torch.linspace(0, len(every) - 1, suite_n).round().long().tolist())
    rest = [i for i in range(len(every)) if i not in suite]
    if len(rest) < n:
        raise ValueError(f"{shards}: {len(rest)} windows outside the suite's, {n} asked for")
    pick = [rest[i] for i in torch.linspace(0, len(rest) - 1, n).round().long().tolist()]
    if suite & set(pick):
        raise AssertionError("tuning windows overlap the suite's")
    return torch.stack([every[i] for i in pick]), pick


def tuning_prompts(shards: str | os.PathLike, tokenizer, n: int, suite_n: int,
                   prompt_tokens: int) -> tuple[torch.Tensor, list[int], list[str]]:
    """:func:`tuning_windows` of ``2 · prompt_tokens`` tokens, their indices, and their first
    ``prompt_tokens`` tokens as prompts (the rest of each window is what the plays say next)."""
    ids, picked = tuning_windows(shards, tokenizer, n, suite_n, 2 * prompt_tokens)
    return ids, picked, prompts_from_windows(tokenizer, ids, n_tokens=prompt_tokens)


@torch.no_grad()
def encode_text(text_vae, ids: torch.Tensor, batch_size: int = 16, with_variance: bool = False,
                progress: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Token ids (b, T) → prior-space latents (b, T, c): posterior means, normalised; with
    ``with_variance`` also the posterior variances in prior units (b, T, c)."""
    device = next(text_vae.parameters()).device
    means, variances = [], []
    for s in tqdm(range(0, ids.shape[0], batch_size), desc=progress, disable=progress is None, leave=False):
        mean, logvar = text_vae.encode(ids[s:s + batch_size].to(device))
        means.append(text_vae.to_prior(mean).float().cpu())
        if with_variance:
            variances.append(logvar.float().exp().cpu() * text_vae.config.latent_scale ** 2)
    return (torch.cat(means), torch.cat(variances)) if with_variance else torch.cat(means)


def text_context_losses(text_vae, dit, ids: torch.Tensor, conditions: Sequence[str] = CONDITIONS,
                        draws: int = 4, seed: int = 0, time_loc: float = 1.0, time_scale: float = 1.0,
                        fixed_t: Sequence[float] | None = None, batch_size: int = 16,
                        progress: str | None = None) -> dict[str, Any]:
    """:func:`paired_block_losses` of text windows ``ids`` (b, L) (a text→text row: 1-D positions,
    blocks of the DiT's size from the start, segment type ``text``)."""
    z0 = encode_text(text_vae, ids, batch_size)
    b, L, _ = z0.shape
    blocks = block_ids_for(L, dit.config.block_size)
    positions = torch.arange(L).expand(b, L)
    segments = torch.full((b, L), SEGMENT_TYPES["text"], dtype=torch.long)
    return paired_block_losses(dit, z0, blocks, positions, segments, context_conditions(z0, seed, conditions),
                               draws=draws, seed=seed, time_loc=time_loc, time_scale=time_scale,
                               fixed_t=fixed_t, batch_size=batch_size, progress=progress)


# --------------------------------------------------------------------------- captions


@torch.no_grad()
def image_tokens(pipe, samples: Sequence[dict], batch_size: int = 16) -> torch.Tensor:
    """The prior-space tokens (b, n_img, c) of ``samples``' PIL ``image`` (posterior means)."""
    from cola_mm.core.images import fit_square, image_to_tensor, to_rgb

    size = pipe.image_vae.config.image_size
    tokens = []
    for s in range(0, len(samples), batch_size):
        px = torch.stack([image_to_tensor(fit_square(to_rgb(x["image"]), size)) for x in samples[s:s + batch_size]])
        tokens.append(pipe.image_vae.images_to_tokens(px.to(pipe.device)).float().cpu())
    return torch.cat(tokens)


@torch.no_grad()
def caption_context_losses(pipe, samples: Sequence[dict], captions: Sequence[str],
                           conditions: Sequence[str] = CONDITIONS, draws: int = 4, seed: int = 0,
                           time_loc: float = 1.0, time_scale: float = 1.0, batch_size: int = 16,
                           progress: str | None = None) -> dict[str, Any]:
    """:func:`paired_block_losses` of image→text rows ``[image prompt][caption]``: ``samples``
    (dicts with a PIL ``image``, e.g. :func:`cola_mm.evaluation.images.read_samples`) and their
    ``captions`` (the target text, e.g. the canonical caption). Every caption is padded to the
    pipeline's ``caption_tokens`` (loss up to ``<eos>``), so all rows share one layout. The
    conditions swap the image block (block 0); ``per_block`` index 0 is the image (no loss: NaN)."""
    pipe._need_images()
    vae_t, tok = pipe.text_vae, pipe.tokenizer
    B, T = pipe.dit.config.block_size, pipe.config.caption_tokens
    grid = pipe.image_vae.config.grid
    ids, n_real = [], []
    for text in captions:
        row, n = caption_ids(tok, text, T, B)
        ids.append(row + [tok.pad_token_id] * (T - len(row)))
        n_real.append(n)
    z_text = encode_text(vae_t, torch.tensor(ids), batch_size)  # (b, T, c)
    z_img = image_tokens(pipe, samples, batch_size)  # (b, n_img, c)
    b, n_img = z_img.shape[:2]
    rows = [layout_row([image_to_text((grid, grid), T, n_loss=n)], text_block=B) for n in n_real]
    block_ids = rows[0].block_ids
    positions = torch.stack([r.positions for r in rows])
    segments = torch.stack([r.segments for r in rows])
    weight = torch.stack([r.loss_weight for r in rows])
    z0 = torch.cat([z_img, z_text], 1)
    g = torch.Generator().manual_seed(seed + 7919)
    images = {"true": z_img, "foreign": foreign_of(z_img), "noise": torch.randn(z_img.shape, generator=g)}
    contexts = {name: MASKED if name == MASKED else torch.cat([images[name], z_text], 1) for name in conditions}
    return paired_block_losses(pipe.dit, z0, block_ids, positions, segments, contexts, weight, draws, seed,
                               time_loc, time_scale, batch_size=batch_size, progress=progress)


@torch.no_grad()
def prompt_context_losses(pipe, samples: Sequence[dict], prompts: dict[str, Sequence[str | None] | str],
                          draws: int = 4, seed: int = 0, time_loc: float = 0.0, time_scale: float = 1.0,
                          fixed_t: Sequence[float] | None = None, batch_size: int = 16,
                          progress: str | None = None) -> dict[str, Any]:
    """The image block's teacher-forced flow loss in text→image rows ``[prompt][image]`` under
    several prompts: ``samples`` (dicts with a PIL ``image``) and ``prompts``, name → one prompt
    per sample, or :data:`MASKED` (the image reads no prompt). ``"true"`` is required: the rows'
    own prompts, which fix each row's layout; a row's prompt under another name must have the same
    number of caption latents (padded to whole blocks), else (or where it is None) that row's loss
    under that name is NaN. Rows are grouped by layout; ε and t are shared by all names (paired).
    ``time_loc`` / ``time_scale``: the image flow-time law (the bundled prior trained images at
    loc 0); ``fixed_t``: one time per draw instead (``draws = len(fixed_t)``), to see where along
    t the prompt matters. Returns ``{"loss": {name: (D, b)}, "kept": {name: rows with a loss}}``."""
    from cola_mm.core.sequence import text_to_image

    if "true" not in prompts or not isinstance(prompts["true"], (list, tuple)):
        raise ValueError("prompt_context_losses needs the rows' own prompts under 'true'")
    for name, p in prompts.items():
        if p != MASKED and (isinstance(p, str) or len(p) != len(samples)):
            raise ValueError(f"prompts[{name!r}] must be {MASKED!r} or one prompt (or None) per sample")
    pipe._need_images()
    tok = pipe.tokenizer
    B, T = pipe.dit.config.block_size, pipe.config.caption_tokens
    grid = pipe.image_vae.config.grid
    ids = {name: [None if q is None else caption_ids(tok, q, T, B)[0] for q in p]
           for name, p in prompts.items() if p != MASKED}
    z_img = image_tokens(pipe, samples, batch_size)  # (b, n_img, c)
    D = draws if fixed_t is None else len(fixed_t)
    losses = {name: torch.full((D, len(samples)), float("nan")) for name in prompts}
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(ids["true"]):
        groups.setdefault(len(row), []).append(i)
    for P, rows in sorted(groups.items()):
        layout = layout_row([text_to_image(P, (grid, grid))], text_block=B)
        n = len(rows)
        fits = {name: [ids[name][i] is not None and len(ids[name][i]) == P for i in rows] for name in ids}
        z_text = {name: encode_text(pipe.text_vae, torch.tensor([ids[name][i] if ok else ids["true"][i]
                                                                  for i, ok in zip(rows, fits[name])]), batch_size)
                  for name in ids}
        contexts = {name: MASKED if prompts[name] == MASKED else torch.cat([z_text[name], z_img[rows]], 1)
                    for name in prompts}
        raw = paired_block_losses(pipe.dit, torch.cat([z_text["true"], z_img[rows]], 1), layout.block_ids,
                                  layout.positions.expand(n, *layout.positions.shape), layout.segments.expand(n, -1),
                                  contexts, layout.loss_weight.expand(n, -1), draws, seed + P, time_loc, time_scale,
                                  fixed_t, batch_size=batch_size, progress=progress)
        for name, x in raw["loss"].items():
            image_block = x[..., -1]  # (D, n): the image is the row's last block
            if name in ids:
                image_block = image_block.masked_fill(~torch.tensor(fits[name]), float("nan"))
            losses[name][:, rows] = image_block
    kept = {name: int((~x[0].isnan()).sum()) for name, x in losses.items()}
    return {"loss": losses, "kept": kept}


# --------------------------------------------------------------------------- continuations


def word_ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def pair_overlap(texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> dict[str, float]:
    """Mean difflib ratio and shared word-3-gram rate over pairs: all unordered pairs of
    ``texts_a`` (``texts_b`` None), or the zipped pairs (a_i, b_i). The 3-gram rate of (a, b)
    is the mean of |A∩B|/|A| and |A∩B|/|B| (a text without 3-grams is left out)."""
    pairs = list(itertools.combinations(texts_a, 2)) if texts_b is None else list(zip(texts_a, texts_b))
    ratios, shared = [], []
    for a, b in pairs:
        ratios.append(difflib.SequenceMatcher(None, a, b).ratio())
        ga, gb = word_ngrams(a), word_ngrams(b)
        if ga and gb:
            common = len(ga & gb)
            shared.append(0.5 * (common / len(ga) + common / len(gb)))
    return {"difflib_ratio": sum(ratios) / max(len(ratios), 1),
            "shared_3gram_rate": sum(shared) / len(shared) if shared else float("nan"), "pairs": len(pairs)}


def continuation_overlap(pipe, prompts: Sequence[str], seeds: Sequence[int] = (0, 1, 2), max_new_tokens: int = 48,
                         steps: int | None = None, cfg_scale: float | None = None,
                         progress: str | None = None) -> dict[str, Any]:
    """Continuations of every prompt at every seed (each prompt generated alone: the same noise
    for all prompts at a seed) and their overlaps (module docstring). Returns ``{"same_seed":
    {...}, "same_prompt": {...}, "different_both": {...}, "texts": {seed: [per prompt]}}``; the
    first two are means over the seeds / prompts."""
    if len(prompts) < 2 or len(seeds) < 2:
        raise ValueError("continuation_overlap needs at least 2 prompts and 2 seeds")
    texts = {s: [] for s in seeds}
    jobs = [(s, p) for s in seeds for p in prompts]
    for s, p in tqdm(jobs, desc=progress, unit="continuation", disable=progress is None, leave=False):
        texts[s].append(pipe.generate_text(p, max_new_tokens=max_new_tokens, steps=steps, cfg_scale=cfg_scale, seed=s))

    def mean_of(parts: list[dict[str, float]]) -> dict[str, float]:
        keys = ("difflib_ratio", "shared_3gram_rate")
        return {**{k: sum(d[k] for d in parts) / len(parts) for k in keys}, "pairs": sum(d["pairs"] for d in parts)}

    same_seed = mean_of([pair_overlap(texts[s]) for s in seeds])
    same_prompt = mean_of([pair_overlap([texts[s][i] for s in seeds]) for i in range(len(prompts))])
    cross = []  # prompt i at seed a vs prompt j at seed b, i != j, a != b
    for a, b in itertools.combinations(seeds, 2):
        n = len(prompts)
        cross.append(pair_overlap(texts[a], [texts[b][(i + 1) % n] for i in range(n)]))
    return {"same_seed": same_seed, "same_prompt": same_prompt, "different_both": mean_of(cross),
            "prompts": list(prompts), "texts": {str(s): t for s, t in texts.items()}}


def prompts_from_windows(tokenizer, ids: torch.Tensor, n_tokens: int = 48) -> list[str]:
    """The first ``n_tokens`` tokens of each window (b, L), ``<bos>``/``<eos>`` dropped, as text."""
    return [tokenizer.decode(row[:n_tokens].tolist(), skip_special_tokens=True).strip() for row in ids]
