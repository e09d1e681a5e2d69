"""KV-cached block sampler for the block-causal prior (Cola DLM §3.3).

Generation runs block by block, left to right; inside a block all latents are denoised in
parallel by integrating dz/dt = v from t = 1 (noise) to t = 0 (Euler or Heun, ``steps``
steps). The clean prefix is kept as a key/value cache: a finished block's clean keys/values
are computed once (one forward at t = 0) and appended, so each denoising step of a new block
pays attention only for its own B queries.

- Classifier-free guidance: the unconditional velocity is the current block with no history
  (no cache at all); v = v_u + s·(v_c − v_u).
- Clean repaint: prompt latents that fall inside the first generated block are held on their
  noised clean path z_t = (1 − t)·z_clean + t·ε at every step and set to z_clean at the end.
- Batches of prompts of different lengths: each sample has its own cache length (padded, with
  a key-validity mask), its own positions and its own noise generator, so a sample's output
  does not depend on what else is in the batch.
- A sliding window (``window`` latents, 0 = none) for generating past the length the prior was
  trained on: a new block sees the newest whole cached blocks that fit in ``window`` with
  itself, so no attention span exceeds what training showed. Older keys stay in the cache but
  are masked out; the uncached recomputation applies the same windows to every clean block, so
  the two still agree exactly.
- Stopping is the caller's: ``on_block`` decodes each finished block and says which samples
  are done (e.g. emitted ``<eos>``); generation also stops at ``max_blocks``.

Legend: ``b`` batch, ``B`` block size, ``M`` cached keys, ``c`` channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from cola_mm.core.config import Config, check
from cola_mm.core.layers import KVCache
from cola_mm.prior.dit import DiT
from cola_mm.prior.flow import SOLVERS, get_solver, time_grid


@dataclass(frozen=True)
class SamplerConfig(Config):
    steps: int = 16  # ODE steps per block (8–10 recover most quality)
    cfg_scale: float = 1.0  # classifier-free guidance scale (1 = off; 3–7 for text)
    solver: str = "euler"  # a name in cola_mm.prior.flow.SOLVERS (euler | heun)
    time_shift: float = 1.0  # >1 spends more steps at high noise
    use_cache: bool = True  # False recomputes the clean prefix at every step (for checks)
    window: int = 0  # latents a block may attend to, itself included (0 = all); see window_start
    # scale of the starting noise (1 = the training distribution; < 1 trades diversity for
    # staying near the modes, as lowering an AR's softmax temperature does)
    temperature: float = 1.0
    # text continuation: the first ``lead_blocks`` generated blocks start from
    # ``lead_temperature``·ε instead (0 = none); a fuller start, then the low-noise rest
    lead_blocks: int = 0
    lead_temperature: float = 1.0

    def __post_init__(self):
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.cfg_scale >= 0, f"cfg_scale must be >= 0, got {self.cfg_scale}")
        check(self.solver in SOLVERS, f"solver must be one of {tuple(SOLVERS)}, got {self.solver!r}")
        check(self.time_shift > 0, "time_shift must be > 0")
        check(self.window >= 0, f"window must be >= 0 (0 = no window), got {self.window}")
        check(0 <= self.temperature <= 2, f"temperature must be in [0, 2], got {self.temperature}")
        check(self.lead_blocks >= 0, f"lead_blocks must be >= 0, got {self.lead_blocks}")
        check(0 <= self.lead_temperature <= 2, f"lead_temperature must be in [0, 2], got {self.lead_temperature}")


def window_start(blocks: torch.Tensor, valid: torch.Tensor, block: int, size: int, window: int) -> int:
    """The oldest block id that a block ``block`` of ``size`` latents sees under a sliding window.

    ``blocks``, ``valid`` (n,): the block ids and validity of one sample's cached latents. The
    newest earlier blocks are taken whole while they fit in ``window − size`` latents; 0 when
    ``window`` is 0 (everything), ``block`` itself when not even the previous block fits."""
    if not window:
        return 0
    ids, counts = blocks[valid & (blocks < block)].unique(return_counts=True)  # ascending ids
    start, seen = block, 0
    for k, m in zip(reversed(ids.tolist()), reversed(counts.tolist())):
        if seen + m > window - size:
            break
        start, seen = k, seen + m
    return start


def as_axes(positions: torch.Tensor, n_axes: int = 3) -> torch.Tensor:
    """1-D positions (b, n) → multi-axis (b, n, A) with every axis equal (text); (b, n, A) as is."""
    return positions if positions.dim() == 3 else positions[..., None].expand(*positions.shape, n_axes)


class BlockSampler:
    """Holds the per-batch state (cache, validity, positions, segment types, block ids) of one
    generation.

    The general interface is :meth:`start` (cache any clean context: text, image, both) then
    :meth:`denoise` (one new block at given positions and segment types, committed to the cache
    when done). :meth:`prefill` + :meth:`denoise_block` are the text-continuation path built on
    them (1-D positions, blocks of ``block_size`` from the start of the text, clean repaint)."""

    def __init__(self, model: DiT, config: SamplerConfig, segment: int = 0):
        self.model = model
        self.config = config
        self.segment = segment
        self.block = model.config.block_size
        self.on_step: Callable[[int, int, torch.Tensor], None] | None = None  # (step, steps, z) before each step
        # a finished block (b, B, c) → the latents later blocks read as its clean context (default: itself)
        self.round_block: Callable[[torch.Tensor], torch.Tensor] | None = None

    # ---- the clean context
    def start(self, context: torch.Tensor, positions: torch.Tensor, segments: torch.Tensor,
              blocks: torch.Tensor, valid: torch.Tensor) -> None:
        """Cache a clean context. context (b, P, c) right-padded; positions (b, P[, A]); segments,
        blocks (b, P) (block ids increase along each sample); valid (b, P) bool (False = padding).
        Keys are block-causal: a context latent sees the valid latents of its own and earlier blocks."""
        b, n = context.shape[:2]
        device = context.device
        self.device = device
        self.cache = KVCache()
        self.history = context
        self.cache_valid = valid
        self.cache_positions = as_axes(positions)
        self.cache_segments = segments
        self.cache_blocks = blocks
        self.next_block = int(blocks.max()) + 1 if n else 0
        self.cache_start = self._context_starts(blocks, valid)  # (b, n) oldest block each latent saw
        self._visible: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (size, starts, mask) of the next block
        self._cfg_cache: KVCache | None = None
        if n == 0 or not self.config.use_cache:
            return
        self.model(context, torch.zeros(b, n, device=device), self.cache_positions, segments,
                   self._history_mask(), self.cache, update_cache=True)

    def _context_starts(self, blocks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per context latent, the oldest block its block sees (:func:`window_start`)."""
        starts = torch.zeros_like(blocks)
        if not self.config.window:
            return starts
        for i in range(blocks.shape[0]):
            ids, counts = blocks[i][valid[i]].unique(return_counts=True)
            for k, m in zip(ids.tolist(), counts.tolist()):
                starts[i][blocks[i] == k] = window_start(blocks[i], valid[i], k, m, self.config.window)
        return starts

    def _history_mask(self) -> torch.Tensor:
        n = self.history.shape[1]
        blk = self.cache_blocks
        mask = (blk[:, None, :] <= blk[:, :, None]) & self.cache_valid[:, None, :]
        if self.config.window:
            mask &= blk[:, None, :] >= self.cache_start[:, :, None]
        return mask | torch.eye(n, dtype=torch.bool, device=self.device)  # padded rows see themselves (no NaN)

    # ---- the forward passes
    def _visible_keys(self, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(starts (b,), visible (b, M)): the cached keys a new block of B latents attends to."""
        if self._visible is None or self._visible[0] != B:
            valid = self.cache_valid
            starts = torch.zeros(valid.shape[0], dtype=torch.long, device=self.device)
            if self.config.window:
                starts = torch.tensor([window_start(self.cache_blocks[i], valid[i], self.next_block, B,
                                                    self.config.window) for i in range(valid.shape[0])],
                                      device=self.device)
                valid = valid & (self.cache_blocks >= starts[:, None])
            self._visible = (B, starts, valid)
        return self._visible[1], self._visible[2]

    def _new_block_mask(self, b: int, B: int) -> torch.Tensor:
        visible = self._visible_keys(B)[1]
        return torch.cat([visible[:, None, :].expand(b, B, -1),
                          torch.ones(b, B, B, dtype=torch.bool, device=self.device)], dim=2)

    def velocity(self, z: torch.Tensor, t: float, positions: torch.Tensor,
                 segments: torch.Tensor | None = None) -> torch.Tensor:
        """Conditional velocity of the current block z (b, B, c) at time t given the context."""
        b, B, _ = z.shape
        tt = torch.full((b, B), t, device=z.device)
        positions = as_axes(positions)
        segments = self._segments(b, B) if segments is None else segments
        if not self.config.use_cache:
            return self._velocity_recomputed(z, tt, positions, segments)
        return self.model(z, tt, positions, segments, self._new_block_mask(b, B), self.cache)

    def _velocity_recomputed(self, z, tt, positions, segments):
        """The same velocity without a cache: run [clean history | block] through the model."""
        b, B, _ = z.shape
        m = self.history.shape[1]
        x = torch.cat([self.history, z], 1)
        times = torch.cat([torch.zeros(b, m, device=z.device), tt], 1)
        pos = torch.cat([self.cache_positions, positions], 1)
        seg = torch.cat([self.cache_segments, segments], 1)
        top = torch.cat([self._history_mask(), torch.zeros(b, m, B, dtype=torch.bool, device=z.device)], 2)
        v = self.model(x, times, pos, seg, torch.cat([top, self._new_block_mask(b, B)], 1))
        return v[:, m:]

    def unconditional_velocity(self, z: torch.Tensor, t: float, positions: torch.Tensor,
                               segments: torch.Tensor | None = None) -> torch.Tensor:
        """The current block with no history."""
        b, B, _ = z.shape
        tt = torch.full((b, B), t, device=z.device)
        segments = self._segments(b, B) if segments is None else segments
        return self.model(z, tt, as_axes(positions), segments, None)

    def guided_velocity(self, z, t, positions, segments=None):
        if self.config.cfg_scale == 1.0:
            return self.velocity(z, t, positions, segments)
        if self.config.use_cache:
            v, v_u = self._both_velocities(z, t, positions, segments)
        else:
            v = self.velocity(z, t, positions, segments)
            v_u = self.unconditional_velocity(z, t, positions, segments)
        return v_u + self.config.cfg_scale * (v - v_u)

    def _both_velocities(self, z, t, positions, segments):
        """Conditional and unconditional velocity in one forward of a doubled batch: the
        unconditional rows mask every cached key (= no history). At batch 1 a forward is
        bound by reading the weights, so guidance costs little more than no guidance."""
        b, B, _ = z.shape
        if self._cfg_cache is None:  # the cache only changes at commit: double it once per block
            self._cfg_cache = KVCache([torch.cat([k, k]) for k in self.cache.keys],
                                      [torch.cat([v, v]) for v in self.cache.values])
        positions = as_axes(positions)
        segments = self._segments(b, B) if segments is None else segments
        cond = self._new_block_mask(b, B)
        uncond = cond.clone()
        uncond[:, :, :cond.shape[2] - B] = False
        v = self.model(torch.cat([z, z]), torch.full((2 * b, B), t, device=z.device), torch.cat([positions, positions]),
                       torch.cat([segments, segments]), torch.cat([cond, uncond]), self._cfg_cache)
        return v[:b], v[b:]

    def commit(self, z: torch.Tensor, positions: torch.Tensor, segments: torch.Tensor | None = None) -> None:
        """Append a finished (clean) block's keys/values to the cache."""
        b, B, _ = z.shape
        positions = as_axes(positions)
        segments = self._segments(b, B) if segments is None else segments
        if self.config.use_cache:
            self.model(z, torch.zeros(b, B, device=z.device), positions, segments, self._new_block_mask(b, B),
                       self.cache, update_cache=True)
        starts = self._visible_keys(B)[0]
        self.history = torch.cat([self.history, z], 1)
        self.cache_start = torch.cat([self.cache_start, starts[:, None].expand(b, B)], 1)
        self.cache_valid = torch.cat([self.cache_valid, torch.ones(b, B, dtype=torch.bool, device=z.device)], 1)
        self.cache_positions = torch.cat([self.cache_positions, positions], 1)
        self.cache_segments = torch.cat([self.cache_segments, segments], 1)
        self.cache_blocks = torch.cat([self.cache_blocks, torch.full((b, B), self.next_block, device=z.device,
                                                                     dtype=self.cache_blocks.dtype)], 1)
        self.next_block += 1
        self._cfg_cache = None
        self._visible = None

    def keep(self, rows: Sequence[int]) -> None:
        """Go on with only these batch rows (indices into the current batch, in order): the
        others (finished, or their caller went away) cost nothing from the next block on. A kept
        row's output does not change: every row has its own cache slice, mask and noise."""
        idx = torch.as_tensor(list(rows), dtype=torch.long, device=self.device)
        self.cache.keys = [None if k is None else k.index_select(0, idx) for k in self.cache.keys]
        self.cache.values = [None if v is None else v.index_select(0, idx) for v in self.cache.values]
        for name in ("history", "cache_valid", "cache_positions", "cache_segments", "cache_blocks", "cache_start",
                     "lengths", "prefix", "first_block"):  # the last three: the text path's (prefill)
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).index_select(0, idx))
        self._visible = None
        self._cfg_cache = None

    def _segments(self, b: int, n: int) -> torch.Tensor:
        return torch.full((b, n), self.segment, dtype=torch.long, device=self.device)

    # ---- one block
    def denoise(self, positions: torch.Tensor, segments: torch.Tensor, generators: Sequence[torch.Generator],
                pinned: torch.Tensor | None = None, clean: torch.Tensor | None = None,
                temperature: float | None = None) -> torch.Tensor:
        """Generate one block at ``positions`` (b, B[, A]) with ``segments`` (b, B), integrate
        from noise to t = 0, commit it and return it (b, B, c). ``pinned`` (b, B) bool latents are
        held on the noised path of ``clean`` (b, B, c) and set to it at the end (clean repaint).
        The cache holds ``round_block(z)`` where that is set (text rounding), else z.
        ``temperature``: the starting noise's scale (None: the config's)."""
        b, B = segments.shape
        c = self.model.config.d_latent
        noise = torch.stack([torch.randn(B, c, generator=g, device=self.device) for g in generators])
        noise = noise * (self.config.temperature if temperature is None else temperature)
        if pinned is None:
            pinned = torch.zeros(b, B, dtype=torch.bool, device=self.device)
            clean = torch.zeros_like(noise)
        grid = time_grid(self.config.steps, self.config.time_shift).tolist()
        solve = get_solver(self.config.solver)

        def hold(z_t: torch.Tensor, t: float) -> torch.Tensor:  # pinned latents on the noised path of clean
            return torch.where(pinned[..., None], (1 - t) * clean + t * noise, z_t)

        def velocity(z_t: torch.Tensor, t: float) -> torch.Tensor:
            return self.guided_velocity(z_t, t, positions, segments)

        z = noise
        for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
            if self.on_step is not None:
                self.on_step(i, len(grid) - 1, z)
            z = solve(hold(z, t), t, t_next, velocity, hold)
        z = torch.where(pinned[..., None], clean, z)
        self.commit(z if self.round_block is None else self.round_block(z), positions, segments)
        return z

    # ---- text continuation
    def prefill(self, prefix: torch.Tensor, lengths: torch.Tensor) -> None:
        """Text: cache the clean keys/values of the whole blocks of each sample's prefix.
        prefix (b, P, c) right-padded, lengths (b,) prompt latents per sample."""
        b, device = prefix.shape[0], prefix.device
        self.device = device
        self.lengths = lengths
        self.prefix = prefix
        self.first_block = lengths // self.block  # (b,) index of the first generated block
        n = int(self.first_block.max()) * self.block
        ar = torch.arange(n, device=device)
        self.start(prefix[:, :n], ar.expand(b, n), self._segments(b, n), (ar // self.block).expand(b, n),
                   ar[None, :] < (self.first_block * self.block)[:, None])

    def denoise_block(self, j: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Text: generate block ``j`` (0 = the first generated block) of every sample: (b, B, c).
        Blocks ``j < lead_blocks`` start from noise scaled by ``lead_temperature``."""
        b, device, B = self.prefix.shape[0], self.prefix.device, self.block
        c = self.model.config.d_latent
        start = (self.first_block + j) * B  # (b,)
        positions = start[:, None] + torch.arange(B, device=device)  # (b, B)
        pinned = clean = None
        if j == 0:  # prompt latents inside the first generated block: clean repaint
            offset = self.lengths - self.first_block * B  # (b,) pinned count
            pinned = torch.arange(B, device=device)[None, :] < offset[:, None]
            idx = (self.first_block * B)[:, None] + torch.arange(B, device=device)
            idx = idx.clamp(max=self.prefix.shape[1] - 1)
            clean = torch.gather(self.prefix, 1, idx[..., None].expand(-1, -1, c)) * pinned[..., None]
        lead = self.config.lead_temperature if j < self.config.lead_blocks else None
        return self.denoise(positions, self._segments(b, B), generators, pinned, clean, lead)


@torch.no_grad()
def iter_blocks(model: DiT, prefixes: Sequence[torch.Tensor], max_blocks: int, config: SamplerConfig,
                generators: Sequence[torch.Generator], segment: int = 0) -> Iterator[torch.Tensor]:
    """Yield the finished blocks (b, B, c) after the prefixes (P_i, c), one per ``next``, up to
    ``max_blocks``; the caller stops early by not asking for more (streaming)."""
    if len(prefixes) != len(generators):
        raise ValueError("one generator per sample is needed")
    b = len(prefixes)
    device = next(model.parameters()).device
    lengths = torch.tensor([p.shape[0] for p in prefixes], device=device)
    padded = torch.zeros(b, max(int(lengths.max()), 1), model.config.d_latent, device=device)
    for i, p in enumerate(prefixes):
        padded[i, :p.shape[0]] = p
    sampler = BlockSampler(model, config, segment)
    sampler.prefill(padded, lengths)
    for j in range(max_blocks):
        yield sampler.denoise_block(j, generators)


@torch.no_grad()
def generate_blocks(model: DiT, prefixes: Sequence[torch.Tensor], max_blocks: int, config: SamplerConfig,
                    generators: Sequence[torch.Generator],
                    on_block: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
                    segment: int = 0) -> list[torch.Tensor]:
    """Generate up to ``max_blocks`` blocks after each prefix (P_i, c) (normalised latents).

    ``on_block(j, z)`` is called with each finished block (b, B, c) and returns a bool (b,)
    of samples that are done; generation stops when all are. Returns, per sample, the
    generated blocks concatenated (n_blocks·B, c); the first block includes the pinned
    prompt tail.
    """
    blocks = []
    done = torch.zeros(len(prefixes), dtype=torch.bool)
    for j, z in enumerate(iter_blocks(model, prefixes, max_blocks, config, generators, segment)):
        blocks.append(z)
        if on_block is not None:
            done = done | on_block(j, z).cpu()
            if bool(done.all()):
                break
    out = torch.cat(blocks, 1)
    return [out[i] for i in range(len(prefixes))]
