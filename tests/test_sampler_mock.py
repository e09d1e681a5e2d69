"""The ODE solvers and the block loop, checked against closed-form flows without a trained DiT.

- Solvers: Gaussian data N(μ, s²) and standard noise have the exact probability-flow velocity
  of the rectified path, v(z, t) = −μ + σ'(t)·(z − (1 − t)·μ)/σ(t) with σ(t)² = (1 − t)²·s² + t²,
  whose flow maps noise ε to exactly μ + s·ε. Euler must converge at first order, Heun at
  second order.
- Block loop: a mock "DiT" whose data is one point per block, a known function of the clean
  latents the mask lets it see (c = 1 + their mean; 0 with none). Its exact velocity (z − c)/t
  is straight, so every solver lands exactly on c: the generated blocks must follow the
  recurrence, with clean repaint, guidance (unconditional = no history → c = 0, guided
  endpoint s·c), the cached and the recomputed paths agreeing, and batch = one by one.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cola_mm.prior.flow import SOLVERS, get_solver, time_grid
from cola_mm.prior.sampler import BlockSampler, SamplerConfig, generate_blocks


# --------------------------------------------------------------------------- solvers


def gaussian_velocity(mu: float, s: float):
    def v(z: torch.Tensor, t: float) -> torch.Tensor:
        sigma = math.sqrt((1 - t) ** 2 * s ** 2 + t ** 2)
        dsigma = ((t - 1) * s ** 2 + t) / sigma
        return -mu + dsigma * (z - (1 - t) * mu) / sigma
    return v


def integrate(solver: str, steps: int, z: torch.Tensor, velocity) -> torch.Tensor:
    grid = time_grid(steps).tolist()
    step = get_solver(solver)
    for t, t_next in zip(grid[:-1], grid[1:]):
        z = step(z, t, t_next, velocity)
    return z


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2)])
def test_solver_converges_at_its_order_on_the_gaussian_flow(solver, order):
    mu, s = 1.5, 0.3
    eps = torch.linspace(-2, 2, 9, dtype=torch.float64)
    exact = mu + s * eps
    errors = [(integrate(solver, n, eps.clone(), gaussian_velocity(mu, s)) - exact).abs().max().item()
              for n in (8, 16, 32, 64)]
    assert errors[-1] < (0.02 if order == 1 else 1e-3), errors
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(2 ** order * 0.8 < r < 2 ** order * 1.25 for r in ratios[1:]), (errors, ratios)


def test_heun_beats_euler_at_equal_steps_and_solvers_are_registered():
    eps = torch.linspace(-2, 2, 9, dtype=torch.float64)
    v = gaussian_velocity(-0.5, 0.2)
    exact = -0.5 + 0.2 * eps
    e_euler = (integrate("euler", 32, eps, v) - exact).abs().max()
    e_heun = (integrate("heun", 32, eps, v) - exact).abs().max()
    assert e_heun < e_euler / 5  # measured: 0.0039 vs 0.031
    assert set(SOLVERS) == {"euler", "heun"}
    with pytest.raises(ValueError, match="unknown ODE solver 'rk4'"):
        get_solver("rk4")
    with pytest.raises(ValueError, match="solver must be one of"):
        SamplerConfig(solver="rk4")


# --------------------------------------------------------------------------- the block loop


class ContextMeanFlow(nn.Module):
    """A mock DiT: the data of each query is the point c = 1 + mean of the clean latents its
    mask lets it see (0 when it sees none), and it returns the exact velocity (z − c)/t.

    It follows the DiT's call signature and keeps the clean latents and their times in the
    KV cache (one "layer": keys (b, 1, M, c), values (b, 1, M, 1))."""

    def __init__(self, block_size: int = 4, d_latent: int = 2):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size, d_latent=d_latent)
        self.anchor = nn.Parameter(torch.zeros(()))  # a device for next(parameters())
        self.calls = 0

    def forward(self, x, t, positions, segments, mask, cache=None, update_cache=False):
        self.calls += 1
        b, n, _ = x.shape
        keys, times = x, t
        if cache is not None and cache.length:
            keys = torch.cat([cache.keys[0][:, 0], x], 1)
            times = torch.cat([cache.values[0][:, 0, :, 0], t], 1)
        if update_cache and cache is not None:
            cache.store(0, keys[:, None], times[:, None, :, None])
        if mask is None:  # no history at all: every query sees only its own block (noisy: nothing clean)
            mask = torch.zeros(b, n, keys.shape[1], dtype=torch.bool)
            mask[:, :, -n:] = True
        mask = mask.expand(b, n, -1)
        clean = (times == 0)[:, None, :] & mask  # (b, n, m) visible clean keys
        count = clean.sum(-1, keepdim=True)  # (b, n, 1)
        mean = (clean.to(x.dtype) @ keys) / count.clamp(min=1)  # (b, n, c)
        target = torch.where(count > 0, 1 + mean, torch.zeros_like(mean))
        tq = t[..., None].clamp(min=1e-6)
        return (x - target) / tq


def expected_blocks(prefix: torch.Tensor, n_blocks: int, block: int, scale: float = 1.0) -> torch.Tensor:
    """The recurrence the mock defines: each generated block is 1 + mean of every latent before
    its block (guided by ``scale``: s·c); prompt latents inside the first block are pinned."""
    history = prefix[: (len(prefix) // block) * block]
    tail = prefix[len(history):]
    out = []
    for j in range(n_blocks):
        c = (1 + history.mean(0)) if len(history) else torch.zeros(prefix.shape[1])
        z = (scale * c).expand(block, -1).clone()
        if j == 0 and len(tail):
            z[: len(tail)] = tail
        out.append(z)
        history = torch.cat([history, z])
    return torch.cat(out)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("prefix_len", [4, 6, 9])
def test_block_loop_follows_the_context_recurrence(solver, prefix_len):
    model = ContextMeanFlow()
    prefix = torch.randn(prefix_len, 2, generator=torch.Generator().manual_seed(prefix_len))
    gens = [torch.Generator().manual_seed(0)]
    out = generate_blocks(model, [prefix], 3, SamplerConfig(steps=5, solver=solver), gens)[0]
    torch.testing.assert_close(out, expected_blocks(prefix, 3, 4), atol=1e-5, rtol=1e-5)


def test_guidance_cache_and_batch_agree_with_the_closed_form():
    prefixes = [torch.randn(n, 2, generator=torch.Generator().manual_seed(n)) for n in (5, 8, 11)]
    for scale in (1.0, 2.5):
        want = [expected_blocks(p, 2, 4, scale) for p in prefixes]
        batched = generate_blocks(ContextMeanFlow(), prefixes, 2, SamplerConfig(steps=3, cfg_scale=scale),
                                  [torch.Generator().manual_seed(i) for i in range(3)])
        uncached = generate_blocks(ContextMeanFlow(), prefixes, 2,
                                   SamplerConfig(steps=3, cfg_scale=scale, use_cache=False),
                                   [torch.Generator().manual_seed(i) for i in range(3)])
        for i, p in enumerate(prefixes):
            alone = generate_blocks(ContextMeanFlow(), [p], 2, SamplerConfig(steps=3, cfg_scale=scale),
                                    [torch.Generator().manual_seed(i)])[0]
            for got in (batched[i], uncached[i], alone):
                torch.testing.assert_close(got, want[i], atol=1e-5, rtol=1e-5)


def test_the_loop_stops_when_every_sample_is_done_and_steps_cost_one_call_each():
    model = ContextMeanFlow()
    seen = []

    def on_block(j, z):
        seen.append(j)
        return torch.tensor([j >= 1])  # done after the second block

    out = generate_blocks(model, [torch.ones(4, 2)], 10, SamplerConfig(steps=7), [torch.Generator()], on_block)[0]
    assert seen == [0, 1] and out.shape == (8, 2)
    # prefill 1 call; per block: 7 velocity calls + 1 commit
    assert model.calls == 1 + 2 * (7 + 1)


def test_heun_with_clean_repaint_through_the_sampler_api():
    """prefill + denoise_block (the text path) with Heun: the pinned prompt tail comes out as
    given and the rest of the block lands on the closed-form point."""
    model = ContextMeanFlow()
    sampler = BlockSampler(model, SamplerConfig(steps=4, solver="heun"))
    prefix = torch.randn(1, 6, 2, generator=torch.Generator().manual_seed(3))
    sampler.prefill(prefix, torch.tensor([6]))
    z = sampler.denoise_block(0, [torch.Generator().manual_seed(0)])
    torch.testing.assert_close(z[0], expected_blocks(prefix[0], 1, 4), atol=1e-5, rtol=1e-5)


class StillFlow(ContextMeanFlow):
    """A mock DiT whose velocity is 0: every generated block ends where its noise started, so
    the starting noise's scale can be read off the output."""

    def forward(self, x, t, positions, segments, mask, cache=None, update_cache=False):
        return torch.zeros_like(super().forward(x, t, positions, segments, mask, cache, update_cache))


def test_lead_blocks_start_from_their_own_temperature_and_the_rest_from_the_config():
    prefix = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))  # whole blocks: nothing pinned

    def run(**config):
        return generate_blocks(StillFlow(), [prefix], 3, SamplerConfig(steps=2, **config),
                               [torch.Generator().manual_seed(7)])[0]

    full = run()  # temperature 1: the noise itself
    assert full.abs().mean() > 0.3
    torch.testing.assert_close(run(temperature=0.4), 0.4 * full)
    lead = run(temperature=0.4, lead_blocks=1, lead_temperature=1.0)
    torch.testing.assert_close(lead[:4], full[:4])  # the first block: lead_temperature
    torch.testing.assert_close(lead[4:], 0.4 * full[4:])  # the others: temperature
    two = run(temperature=0.0, lead_blocks=2, lead_temperature=0.5)
    torch.testing.assert_close(two[:8], 0.5 * full[:8])
    assert not two[8:].any()
    for bad in ({"lead_blocks": -1}, {"lead_temperature": 2.5}, {"lead_temperature": -0.1}):
        with pytest.raises(ValueError, match="lead_"):
            SamplerConfig(**bad)
