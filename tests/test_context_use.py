"""The context-use measurement (:mod:`cola_mm.evaluation.context`) can tell a prior that reads its
context from one that cannot.

A toy corpus where the next block is a deterministic function of the previous one: block 0 is
N(0, 1), block k+1 = Q · block k per latent (Q a fixed random rotation of the channels), so a
prior that reads its context predicts the next block exactly. A tiny DiT trained on it with
:func:`cola_mm.prior.training.flow_matching_loss` (a plain torch loop, no VAE) must show a
foreign-context loss far above the true-context loss. Controls that can fail: on toy data whose
blocks are independent (the context holds no information), the same model's gap is ~0; block 0
(no context in any condition) has equal losses; an untrained DiT has no gap.
"""

from __future__ import annotations

import time

import pytest
import torch

from cola_mm.evaluation.context import CONDITIONS, context_conditions, gap_by_offset, paired_block_losses, summarize
from cola_mm.prior.dit import DiT, preset
from cola_mm.prior.masks import block_ids_for
from cola_mm.prior.training import flow_matching_loss

C, B, K = 8, 4, 4  # channels, latents per block, blocks
L = B * K
Q = torch.linalg.qr(torch.randn(C, C, generator=torch.Generator().manual_seed(1)))[0]


def toy_batch(n: int, generator: torch.Generator, dependent: bool = True) -> torch.Tensor:
    """(n, L, C): block k+1 = block k @ Q (dependent) or every block N(0, 1) (independent)."""
    blocks = [torch.randn(n, B, C, generator=generator)]
    for _ in range(K - 1):
        blocks.append(blocks[-1] @ Q if dependent else torch.randn(n, B, C, generator=generator))
    return torch.cat(blocks, 1)


def layout(n: int):
    return (block_ids_for(L, B), torch.arange(L).expand(n, L), torch.zeros(n, L, dtype=torch.long))


def measure(model: DiT, z0: torch.Tensor) -> dict:
    blocks, positions, segments = layout(z0.shape[0])
    raw = paired_block_losses(model.eval(), z0, blocks, positions, segments, context_conditions(z0, seed=3),
                              draws=4, seed=5, time_loc=0.0, batch_size=64)
    return summarize(raw)


@pytest.fixture(scope="module")
def trained() -> tuple[DiT, float]:
    torch.manual_seed(0)
    model = DiT(preset("tiny", d_model=64, n_heads=4, n_layers=2, freq_dim=32, d_latent=C, block_size=B))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(2)
    blocks, positions, segments = layout(64)
    start = time.time()
    for _ in range(150):
        loss, _ = flow_matching_loss(model, toy_batch(64, g), blocks, positions, segments, time_loc=0.0,
                                     generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), time.time() - start


def test_trained_prior_uses_its_context(trained):
    model, seconds = trained
    s = measure(model, toy_batch(128, torch.Generator().manual_seed(10)))
    gap, se = s["gap"]["foreign"], s["gap_se"]["foreign"]
    print(f"\ntrained {seconds:.1f} s; true {s['mean']['true']:.4f} foreign {s['mean']['foreign']:.4f} "
          f"noise {s['mean']['noise']:.4f} masked {s['mean']['masked']:.4f}; gap {gap:.4f} ± {se:.4f}")
    assert gap > 0.3 and gap > 10 * se
    assert s["gap"]["masked"] > 10 * s["gap_se"]["masked"]  # no context at all is worse than the true one
    assert s["mean"]["true"] < 0.7 * s["mean"]["masked"]
    block0 = [s["per_block"][name][0] for name in CONDITIONS]  # block 0 never has a context
    assert max(block0) - min(block0) < 1e-4


def test_gap_by_offset_inside_the_block(trained):
    model, _ = trained
    z0 = toy_batch(64, torch.Generator().manual_seed(13))
    blocks, positions, segments = layout(z0.shape[0])
    raw = paired_block_losses(model, z0, blocks, positions, segments, context_conditions(z0, seed=3),
                              draws=2, seed=5, time_loc=0.0, batch_size=64)
    by_offset = gap_by_offset(raw, B)
    assert set(by_offset) == set(CONDITIONS) and all(len(v) == B for v in by_offset.values())
    assert by_offset["true"] == [0.0] * B
    # every latent of block k+1 is its twin in block k rotated: context helps at every offset
    assert min(by_offset["foreign"]) > 0.1, by_offset["foreign"]
    # uniform weights: the mean over offsets is the summary's gap
    s = summarize(raw)
    assert sum(by_offset["foreign"]) / B == pytest.approx(s["gap"]["foreign"], rel=1e-4)
    with pytest.raises(ValueError, match="not whole blocks"):
        gap_by_offset(raw, 5)


def test_no_gap_where_the_context_holds_no_information(trained):
    model, _ = trained
    s = measure(model, toy_batch(128, torch.Generator().manual_seed(11), dependent=False))
    gap, se = s["gap"]["foreign"], s["gap_se"]["foreign"]
    print(f"\nindependent blocks: gap {gap:.4f} ± {se:.4f}")
    assert abs(gap) < max(4 * se, 0.02)


def test_untrained_prior_has_no_gap():
    torch.manual_seed(0)
    model = DiT(preset("tiny", d_latent=C, block_size=B))
    s = measure(model, toy_batch(32, torch.Generator().manual_seed(12)))
    assert all(abs(s["gap"][name]) < 1e-5 for name in CONDITIONS)
