"""The latent-predictability estimates (issue 24) on corpora whose answers are known."""

from __future__ import annotations

import torch

from cola_mm.evaluation.latent_predictability import bigram_r2, ridge_prev_block_r2, token_space_prev_r2

V, C = 12, 8


def corpus(deterministic: bool, n: int, T: int = 32, seed: int = 0) -> torch.Tensor:
    """Token windows (n, T): the next token is (prev + 1) mod V, or drawn independently."""
    g = torch.Generator().manual_seed(seed)
    if not deterministic:
        return torch.randint(0, V, (n, T), generator=g)
    start = torch.randint(0, V, (n, 1), generator=g)
    return (start + torch.arange(T)) % V


def lookup_latents(ids: torch.Tensor, noise: float = 0.0, seed: int = 1) -> torch.Tensor:
    """A lookup-table 'VAE': one fixed random code per token, plus optional noise."""
    table = torch.randn(V, C, generator=torch.Generator().manual_seed(seed))
    z = table[ids]
    return z + noise * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed + 1))


def test_lookup_latent_of_deterministic_corpus_is_predictable_from_the_previous_token():
    tr, va = corpus(True, 200), corpus(True, 40, seed=5)
    r = bigram_r2(tr, va, lookup_latents(tr), lookup_latents(va), V)
    assert r["token"] > 0.99 and r["prev_token"] > 0.99
    assert token_space_prev_r2(tr, va, V) > 0.95
    assert ridge_prev_block_r2(lookup_latents(tr), lookup_latents(va), block=4, lam=1e-3) > 0.9


def test_independent_tokens_give_no_context_signal():
    tr, va = corpus(False, 300), corpus(False, 60, seed=5)
    r = bigram_r2(tr, va, lookup_latents(tr), lookup_latents(va), V)
    assert r["token"] > 0.99  # the latent still names its own token
    assert abs(r["prev_token"]) < 0.03
    assert abs(token_space_prev_r2(tr, va, V)) < 0.03
    assert ridge_prev_block_r2(lookup_latents(tr), lookup_latents(va), block=4) < 0.05


def test_posterior_noise_lowers_the_own_token_share():
    tr, va = corpus(False, 300), corpus(False, 60, seed=5)
    # noise variance 1 against a code variance of 1: about half of the variance is the token's
    r = bigram_r2(tr, va, lookup_latents(tr, 1.0), lookup_latents(va, 1.0), V)
    assert 0.35 < r["token"] < 0.65
