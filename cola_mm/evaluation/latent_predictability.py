"""How much of a Text VAE's latent its context can predict (issue 24).

At flow time t = 1 the prior sees pure noise in the block it generates, so the best velocity it
can output is ε − E[z0 | context] and its loss there is the variance of z0 that the context
leaves: reading the true context instead of none saves at most R²·Var(z0), where R² is the share
of the latent's variance the context explains, and a model that reads another document's context
instead of the true one loses up to 2·R²·Var(z0) (it predicts E[z0 | c′], which is off by as much
again). These functions estimate R² with simple predictors fitted on training windows and scored
on held-out ones, in the prior's own (normalised) latent space
(``bench/bench_latent_predictability.py`` runs them). Simple predictors explain less than the
best one could, so each estimate is a **lower bound** on the true R² (a floor under the ceiling):

- :func:`bigram_r2`: R² of z_i from its own token (≈ 1 for a lookup-table latent) and from the
  previous token (a bigram predictor of z0);
- :func:`ridge_prev_block_r2`: R² of a block from a ridge regression on the previous block;
- :func:`token_space_prev_r2`: the bigram R² of one-hot tokens, for scale.

Legend: ``b`` windows, ``T`` tokens per window, ``c`` latent channels.
"""

from __future__ import annotations

import torch


def r2(pred: torch.Tensor, target: torch.Tensor, base: torch.Tensor) -> float:
    """1 − MSE(pred)/MSE(base): the share of the variance (around ``base``) that ``pred`` explains."""
    return float(1 - (pred - target).pow(2).mean() / (base - target).pow(2).mean())


def conditional_means(keys: torch.Tensor, values: torch.Tensor, n_keys: int, prior_weight: float = 1.0):
    """Mean of ``values`` (N, c) per key (N,), shrunk toward the global mean by ``prior_weight``
    pseudo-counts (so rare keys do not overfit)."""
    c = values.shape[1]
    total = torch.zeros(n_keys, c).index_add_(0, keys, values)
    count = torch.zeros(n_keys).index_add_(0, keys, torch.ones(len(keys)))
    glob = values.mean(0)
    return (total + prior_weight * glob) / (count + prior_weight)[:, None]


def bigram_r2(ids_tr, ids_va, z_tr, z_va, n_vocab):
    """R² of z_i from the token i itself and from the previous token i − 1."""
    c = z_tr.shape[-1]
    glob = z_tr.reshape(-1, c).mean(0)
    own = conditional_means(ids_tr.reshape(-1), z_tr.reshape(-1, c), n_vocab)
    prev = conditional_means(ids_tr[:, :-1].reshape(-1), z_tr[:, 1:].reshape(-1, c), n_vocab)
    target = z_va[:, 1:].reshape(-1, c)
    base = glob.expand_as(target)
    return {"token": r2(own[ids_va[:, 1:].reshape(-1)], target, base),
            "prev_token": r2(prev[ids_va[:, :-1].reshape(-1)], target, base)}


def token_space_prev_r2(ids_tr, ids_va, n_vocab):
    """The same bigram R² for one-hot tokens: 1 − E‖onehot − p(·|prev)‖² / E‖onehot − p(·)‖²."""
    def mse(p_rows, nxt):  # E‖e_y − p‖² = 1 − 2 p_y + ‖p‖²
        return float((1 - 2 * p_rows.gather(1, nxt[:, None]).squeeze(1) + p_rows.pow(2).sum(1)).mean())

    prev, nxt = ids_tr[:, :-1].reshape(-1), ids_tr[:, 1:].reshape(-1)
    uni = torch.bincount(nxt, minlength=n_vocab).float() + 1.0
    uni = uni / uni.sum()
    counts = torch.zeros(n_vocab, n_vocab)
    counts.index_put_((prev, nxt), torch.ones(len(prev)), accumulate=True)
    big = (counts + uni[None]) / (counts.sum(1, keepdim=True) + 1.0)
    pv, nv = ids_va[:, :-1].reshape(-1), ids_va[:, 1:].reshape(-1)
    return 1 - mse(big[pv], nv) / mse(uni.expand(len(nv), -1), nv)


def ridge_prev_block_r2(z_tr, z_va, block: int, lam: float = 10.0):
    """R² of each block (after the first) from a ridge regression on the previous block's
    latents, flattened: (block·c) features → (block·c) targets."""
    def pairs(z):
        b, T, c = z.shape
        blocks = z.reshape(b, T // block, block * c)
        return blocks[:, :-1].reshape(-1, block * c), blocks[:, 1:].reshape(-1, block * c)

    x_tr, y_tr = pairs(z_tr)
    x_va, y_va = pairs(z_va)
    mx, my = x_tr.mean(0), y_tr.mean(0)
    xc = x_tr - mx
    w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(xc.shape[1]), xc.T @ (y_tr - my))
    pred = (x_va - mx) @ w + my
    return r2(pred, y_va, my.expand_as(y_va))
