"""Flow matching on the rectified (linear) path, as pure functions beside the network.

Cola DLM §3.2 (after Lipman et al. 2023; Liu et al. 2023): data ``z0`` and noise ``ε`` are
joined by the straight path

    z_t = (1 − t)·z0 + t·ε,        t ∈ [0, 1] (t = 0 data, t = 1 noise)
    v*  = dz_t/dt = ε − z0         (the regression target)
    L   = E‖v_θ(z_t, t) − v*‖²

Training times follow the "timeshift" logit-normal law t = sigmoid(loc + scale·N(0, 1))
(loc ≈ 1.0 at d = 16, ≈ 1.7 at d = 64, ≈ 2.3 at d = 128), drawn once per block. Sampling
integrates dz/dt = v from t = 1 to 0 (:mod:`cola_mm.prior.sampler`) with a solver from
:data:`SOLVERS` (name → step function; a new solver is one function and one entry there).

Legend: ``b`` batch, ``n`` latents, ``c`` latent channels, ``k`` blocks.
"""

from __future__ import annotations

from typing import Callable

import torch


def sample_block_times(batch: int, n_blocks: int, loc: float = 1.0, scale: float = 1.0,
                       generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """t ~ sigmoid(loc + scale·N(0, 1)), one per (sample, block): (b, k)."""
    normal = torch.randn(batch, n_blocks, generator=generator, device=device)
    return torch.sigmoid(loc + scale * normal)


def expand_block_times(t_blocks: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """Per-block times (b, k) → per-latent times (b, n) through ``block_ids`` (b, n) or (n,)."""
    if block_ids.dim() == 1:
        block_ids = block_ids.expand(t_blocks.shape[0], -1)
    return torch.gather(t_blocks, 1, block_ids)


def interpolate(z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = (1 − t)·z0 + t·ε with ``t`` broadcast over channels: t (b, n) or (b, n, 1)."""
    t = t[..., None] if t.dim() == z0.dim() - 1 else t
    return (1 - t) * z0 + t * noise


def velocity_target(z0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v* = ε − z0."""
    return noise - z0


def flow_loss(v_pred: torch.Tensor, z0: torch.Tensor, noise: torch.Tensor,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error to the target velocity, averaged over channels and the latents
    selected by ``weight`` (b, n) (e.g. 1 for generated latents, 0 for given context)."""
    err = (v_pred.float() - velocity_target(z0, noise).float()).pow(2).mean(-1)  # (b, n)
    if weight is None:
        return err.mean()
    return (err * weight).sum() / weight.sum().clamp(min=1)


def euler_step(z: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Euler step of dz/dt = v from t to t_next (t_next < t when sampling)."""
    return z + (t_next - t) * v


def time_grid(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """``steps + 1`` times from 1 to 0. ``shift`` > 1 spends more steps at high noise
    (t ← shift·t / (1 + (shift − 1)·t), as in SD3); 1 = uniform."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, device=device)
    return shift * t / (1 + (shift - 1) * t)


# --------------------------------------------------------------------------- ODE solvers
# A solver advances z from t to t_next given the velocity field ``velocity(z, t)``. ``hold(z, t)``
# puts latents that must stay on a known path (clean repaint) back on it at time t; a solver calls
# it on every intermediate state it evaluates the velocity at (the caller holds the start state).

Velocity = Callable[[torch.Tensor, float], torch.Tensor]
Hold = Callable[[torch.Tensor, float], torch.Tensor]


def euler_solver(z: torch.Tensor, t: float, t_next: float, velocity: Velocity, hold: Hold | None = None) -> torch.Tensor:
    """First order: one velocity evaluation per step."""
    return euler_step(z, velocity(z, t), t, t_next)


def heun_solver(z: torch.Tensor, t: float, t_next: float, velocity: Velocity, hold: Hold | None = None) -> torch.Tensor:
    """Second order (Heun / explicit trapezoid): the mean of the velocities at z and at the Euler
    prediction; the last step (t_next = 0, where the velocity is not needed again) is Euler's."""
    v = velocity(z, t)
    if t_next <= 0:
        return euler_step(z, v, t, t_next)
    guess = euler_step(z, v, t, t_next)
    if hold is not None:
        guess = hold(guess, t_next)
    return euler_step(z, 0.5 * (v + velocity(guess, t_next)), t, t_next)


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {"euler": euler_solver, "heun": heun_solver}


def get_solver(name: str) -> Callable[..., torch.Tensor]:
    """The step function registered as ``name`` in :data:`SOLVERS`."""
    if name not in SOLVERS:
        raise ValueError(f"unknown ODE solver {name!r}; choose from {', '.join(SOLVERS)}")
    return SOLVERS[name]
