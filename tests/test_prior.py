"""Block-causal DiT prior: masks, causality, train/inference consistency, KV cache, flow
matching on a 2-D toy, batched generation."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from cola_mm.prior.dit import DiT, preset
from cola_mm.prior.flow import (euler_step, flow_loss, interpolate, sample_block_times, time_grid,
                        velocity_target)
from cola_mm.prior.masks import (block_causal_mask, block_ids_for, dense_from_mask_mod, two_copy_mask,
                         two_copy_mask_mod)
from cola_mm.prior.sampler import BlockSampler, SamplerConfig, generate_blocks
from cola_mm.prior.training import flow_matching_loss, two_copy_forward

C, B = 4, 4  # latent channels, block size


@pytest.fixture
def dit() -> DiT:
    torch.manual_seed(0)
    model = DiT(preset("tiny", d_latent=C, block_size=B)).eval()
    with torch.no_grad():  # adaLN-Zero starts as identity; give the test a non-trivial network
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def clean_inputs(b: int, L: int):
    positions = torch.arange(L).expand(b, L)
    segments = torch.zeros(b, L, dtype=torch.long)
    return positions, segments


# --------------------------------------------------------------------------- masks


def test_two_copy_mask_structure_and_flex_equivalence():
    blk = block_ids_for(8, B)  # 2 blocks
    m = two_copy_mask(blk)
    L = 8
    assert torch.equal(m[:L, :L], block_causal_mask(L, B))  # clean copy: block-causal
    assert not m[:L, L:].any()  # clean never sees noisy
    noisy_to_clean = m[L:, :L]
    assert not noisy_to_clean[:4].any() and noisy_to_clean[4:, :4].all() and not noisy_to_clean[4:, 4:].any()
    noisy_to_noisy = m[L:, L:]
    assert noisy_to_noisy[:4, :4].all() and noisy_to_noisy[4:, 4:].all()
    assert not noisy_to_noisy[:4, 4:].any() and not noisy_to_noisy[4:, :4].any()
    uneven = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])  # blocks of any size (e.g. an image block)
    assert torch.equal(two_copy_mask(uneven), dense_from_mask_mod(two_copy_mask_mod(uneven), 18, 18))


def _flex_twin(dit):
    flex = DiT(dit.config.replace(attention="flex")).eval()
    flex.load_state_dict(dit.state_dict())
    return flex


def test_flex_training_forward_equals_dense_on_cpu(dit):
    """The DiT's 2L training forward through flex_attention (a BlockMask from the same rule) gives
    the dense-mask velocity: single-layout and packed rows with uneven blocks and two samples.
    Forward only: PyTorch has no CPU backward for flex (the GPU test below checks gradients)."""
    from cola_mm.prior.training import packed_two_copy_forward

    flex = _flex_twin(dit)
    b, L = 2, 12
    z0, zt, t = torch.randn(b, L, C), torch.randn(b, L, C), torch.rand(b, L)
    pos, seg = clean_inputs(b, L)
    with torch.no_grad():
        torch.testing.assert_close(two_copy_forward(flex, z0, zt, t, pos, seg, block_ids_for(L, B)),
                                   two_copy_forward(dit, z0, zt, t, pos, seg, block_ids_for(L, B)),
                                   atol=1e-5, rtol=1e-5)
        blocks = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]])
        samples = torch.tensor([[0] * 7 + [1] * 5, [0] * 12])
        pos3 = pos[..., None].expand(b, L, 3)
        args = (z0, zt, t, pos3, seg, blocks, samples)
        torch.testing.assert_close(packed_two_copy_forward(flex, *args), packed_two_copy_forward(dit, *args),
                                   atol=1e-5, rtol=1e-5)
    for run in (lambda: flow_matching_loss(flex, z0, block_ids_for(L, B), pos, seg),
                lambda: packed_two_copy_forward(flex, *args)):  # both layouts really take the flex path
        with pytest.raises(RuntimeError, match="flex attention trains on CUDA only"):
            run()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled flex_attention and its backward need a GPU")
def test_flex_training_step_matches_dense_on_gpu(dit):
    dit = dit.cuda()
    flex = _flex_twin(dit).cuda()
    b, L = 2, 256
    z0 = torch.randn(b, L, C, device="cuda")
    pos, seg = (x.cuda() for x in clean_inputs(b, L))
    blocks = block_ids_for(L, B, device="cuda")
    losses, grads = [], []
    for model in (dit, flex):
        gen = torch.Generator(device="cuda").manual_seed(0)
        loss, _ = flow_matching_loss(model, z0, blocks, pos, seg, generator=gen)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))
    torch.testing.assert_close(losses[1], losses[0], atol=1e-4, rtol=1e-4)
    for g_dense, g_flex in zip(*grads):
        if g_dense is not None:
            torch.testing.assert_close(g_flex, g_dense, atol=1e-3, rtol=1e-3)


# --------------------------------------------------------------------------- causality


def test_training_forward_is_block_causal(dit):
    b, L = 2, 12
    z0, zt = torch.randn(b, L, C), torch.randn(b, L, C)
    t = torch.rand(b, L)
    pos, seg = clean_inputs(b, L)
    blk = block_ids_for(L, B)
    v = two_copy_forward(dit, z0, zt, t, pos, seg, blk)
    z0b, ztb = z0.clone(), zt.clone()
    z0b[:, 8:] += 1.0
    ztb[:, 8:] -= 1.0  # change the last block in both copies
    v2 = two_copy_forward(dit, z0b, ztb, t, pos, seg, blk)
    torch.testing.assert_close(v[:, :8], v2[:, :8])
    assert not torch.allclose(v[:, 8:], v2[:, 8:])


def test_sampling_forward_is_block_causal(dit):
    b, L = 2, 12
    x = torch.randn(b, L, C)
    pos, seg = clean_inputs(b, L)
    mask = block_causal_mask(L, B)[None]
    out = dit(x, torch.zeros(b, L), pos, seg, mask)
    x2 = x.clone()
    x2[:, 4:] += 1.0
    out2 = dit(x2, torch.zeros(b, L), pos, seg, mask)
    torch.testing.assert_close(out[:, :4], out2[:, :4])


def test_training_velocity_equals_cached_sampler_velocity(dit):
    """Noisy block k in the 2L forward == the sampler's velocity for block k given the KV
    cache of clean blocks < k (fp32, 1e-5)."""
    b, L = 2, 12
    z0, zt = torch.randn(b, L, C), torch.randn(b, L, C)
    t = torch.full((b, L), 0.37)
    pos, seg = clean_inputs(b, L)
    v_train = two_copy_forward(dit, z0, zt, t, pos, seg, block_ids_for(L, B))
    for k in range(3):
        sampler = BlockSampler(dit, SamplerConfig())
        sampler.prefill(z0[:, :k * B] if k else torch.zeros(b, 1, C), torch.full((b,), k * B))
        v = sampler.velocity(zt[:, k * B:(k + 1) * B], 0.37, pos[:, k * B:(k + 1) * B])
        torch.testing.assert_close(v, v_train[:, k * B:(k + 1) * B], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- sampling


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_cached_sampling_equals_recomputation(dit):
    prefixes = [torch.randn(6, C), torch.randn(9, C)]
    cached = generate_blocks(dit, prefixes, 3, SamplerConfig(steps=4, cfg_scale=2.0), _gens([1, 2]))
    plain = generate_blocks(dit, prefixes, 3, SamplerConfig(steps=4, cfg_scale=2.0, use_cache=False), _gens([1, 2]))
    for a, b_ in zip(cached, plain):
        torch.testing.assert_close(a, b_, atol=1e-5, rtol=1e-5)


def test_batched_generation_matches_one_by_one(dit):
    prefixes = [torch.randn(3, C), torch.randn(10, C), torch.randn(4, C)]  # different lengths
    together = generate_blocks(dit, prefixes, 2, SamplerConfig(steps=3, solver="heun"), _gens([5, 6, 7]))
    for i, p in enumerate(prefixes):
        alone = generate_blocks(dit, [p], 2, SamplerConfig(steps=3, solver="heun"), _gens([5 + i]))
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-5)


def test_window_start_takes_whole_newest_blocks():
    from cola_mm.prior.sampler import window_start

    blocks = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3])  # the last latent is padding
    valid = torch.arange(13) < 12
    assert window_start(blocks, valid, 3, 4, 0) == 0  # no window: everything
    assert window_start(blocks, valid, 3, 4, 12) == 1  # 2 blocks + itself
    assert window_start(blocks, valid, 3, 4, 15) == 1  # 3.75 blocks: whole blocks only
    assert window_start(blocks, valid, 3, 4, 16) == 0
    assert window_start(blocks, valid, 3, 4, 6) == 3  # not even the previous block fits


@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
def test_windowed_sampling_cached_equals_recomputed_and_bounds_attention(dit, cfg_scale):
    """Past the window the cached sampler (old keys masked) and the uncached recomputation (the
    same windows on every clean block) agree; a batch matches one-by-one; and no block attends
    to more than the window."""
    prefixes = [torch.randn(6, C), torch.randn(13, C)]
    cfg = SamplerConfig(steps=3, cfg_scale=cfg_scale, window=3 * B)
    cached = generate_blocks(dit, prefixes, 4, cfg, _gens([1, 2]))
    plain = generate_blocks(dit, prefixes, 4, cfg.replace(use_cache=False), _gens([1, 2]))
    for a, b_ in zip(cached, plain):
        torch.testing.assert_close(a, b_, atol=1e-5, rtol=1e-5)
    alone = generate_blocks(dit, prefixes[1:], 4, cfg, _gens([2]))
    torch.testing.assert_close(cached[1], alone[0], atol=1e-5, rtol=1e-5)
    unwindowed = generate_blocks(dit, prefixes, 4, cfg.replace(window=0), _gens([1, 2]))
    torch.testing.assert_close(cached[0][:2 * B], unwindowed[0][:2 * B], atol=1e-5, rtol=1e-5)  # fits: same
    assert not torch.allclose(cached[1], unwindowed[1])  # 13 latents + a block > 12: the window acts
    sampler = BlockSampler(dit, cfg)
    sampler.prefill(torch.randn(1, 16, C), torch.tensor([16]))
    for j in range(3):
        assert int(sampler._new_block_mask(1, B)[0, 0].sum()) == 3 * B  # 2 cached blocks + itself
        sampler.denoise_block(j, _gens([j]))


def test_prompt_tail_is_pinned_and_seed_is_deterministic(dit):
    prefix = torch.randn(6, C)  # 1 whole block + 2 latents inside the first generated block
    out = generate_blocks(dit, [prefix], 2, SamplerConfig(steps=4), _gens([3]))
    torch.testing.assert_close(out[0][:2], prefix[4:6])
    again = generate_blocks(dit, [prefix], 2, SamplerConfig(steps=4), _gens([3]))
    assert torch.equal(out[0], again[0])
    other = generate_blocks(dit, [prefix], 2, SamplerConfig(steps=4), _gens([4]))
    assert not torch.allclose(out[0][2:], other[0][2:])


def test_stopping_per_sample(dit):
    calls = []

    def on_block(j, z):
        calls.append(j)
        return torch.tensor([True, j >= 2])

    out = generate_blocks(dit, [torch.randn(4, C), torch.randn(4, C)], 10, SamplerConfig(steps=2),
                             _gens([0, 1]), on_block)
    assert calls == [0, 1, 2] and out[0].shape == (3 * B, C)


# --------------------------------------------------------------------------- flow matching


def test_flow_math_identities():
    z0, eps = torch.randn(2, 3, C), torch.randn(2, 3, C)
    t = torch.rand(2, 3)
    zt = interpolate(z0, eps, t)
    torch.testing.assert_close(interpolate(z0, eps, torch.zeros(2, 3)), z0)
    torch.testing.assert_close(interpolate(z0, eps, torch.ones(2, 3)), eps)
    # moving along the target velocity from t to 0 lands on the data exactly
    torch.testing.assert_close(zt - t[..., None] * velocity_target(z0, eps), z0, atol=1e-6, rtol=0)
    assert flow_loss(velocity_target(z0, eps), z0, eps).item() == 0
    g = time_grid(8)
    assert g[0] == 1 and g[-1] == 0 and len(g) == 9 and (g[1:] < g[:-1]).all()
    times = sample_block_times(4000, 1, loc=1.0, scale=1.0, generator=torch.Generator().manual_seed(0))
    assert 0.6 < times.mean() < 0.75  # logit-normal centred at sigmoid(1) ≈ 0.73, pulled in


def test_flow_matching_transports_noise_to_a_2d_mixture():
    """A tiny MLP trained on the rectified path for a few hundred steps turns N(0, I) into
    a 2-D mixture of Gaussians: sample mean and covariance match the data's."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])

    def data(n):
        idx = torch.randint(0, 3, (n,), generator=gen)
        return centres[idx] + 0.3 * torch.randn(n, 2, generator=gen)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(600):
        z0 = data(512)
        eps = torch.randn(512, 2, generator=gen)
        t = torch.rand(512, generator=gen)
        zt = (1 - t[:, None]) * z0 + t[:, None] * eps
        loss = flow_loss(net(torch.cat([zt, t[:, None]], 1))[:, None], z0[:, None], eps[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = torch.randn(4000, 2, generator=gen)
    grid = time_grid(32).tolist()
    with torch.no_grad():
        for t, t_next in zip(grid[:-1], grid[1:]):
            z = euler_step(z, net(torch.cat([z, torch.full((4000, 1), t)], 1)), t, t_next)
    ref = data(4000)
    assert (z.mean(0) - ref.mean(0)).abs().max() < 0.15
    assert (torch.cov(z.T) - torch.cov(ref.T)).abs().max() < 0.25
    # and it is really the mixture: most samples lie near a centre
    near = torch.cdist(z, centres).min(1).values < 1.0
    assert near.float().mean() > 0.9


def test_flow_matching_loss_trains_the_dit():
    torch.manual_seed(0)
    model = DiT(preset("tiny", d_latent=C, block_size=B))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    z0 = torch.randn(1, 8, C).expand(8, 8, C).contiguous()  # one fixed sequence
    pos, seg = clean_inputs(8, 8)
    first = None
    for step in range(60):
        loss, _ = flow_matching_loss(model, z0, block_ids_for(8, B), pos, seg)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first


def test_dit_save_load_round_trip(dit, tmp_path):
    dit.save_pretrained(tmp_path / "dit")
    loaded = DiT.from_pretrained(tmp_path / "dit").eval()
    x = torch.randn(1, 8, C)
    pos, seg = clean_inputs(1, 8)
    args = (x, torch.rand(1, 8), pos, seg, block_causal_mask(8, B)[None])
    assert torch.equal(loaded(*args), dit(*args))


def test_absolute_position_tables_start_as_the_rope_only_function(dit):
    """model.dit.position_embed: zero tables leave a trained RoPE-only DiT's function unchanged
    (so a fine-tune can add them), then read position in the sample, image row and column."""
    grown = DiT(preset("tiny", d_latent=C, block_size=B, position_embed=6)).eval()
    missing, unexpected = grown.load_state_dict(dit.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == [f"position_tables.{i}.weight" for i in range(3)]
    L = 8
    x, t = torch.randn(2, L, C), torch.rand(2, L)
    image = torch.tensor([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4], [4, 4, 5], [4, 5, 4], [4, 5, 5]])
    for pos in (clean_inputs(2, L)[0], image.expand(2, L, 3)):
        args = (x, t, pos, torch.zeros(2, L, dtype=torch.long), block_causal_mask(L, B)[None])
        assert torch.allclose(grown(*args), dit(*args), atol=1e-6)
    with torch.no_grad():
        for table in grown.position_tables:
            table.weight.normal_()
    feats = grown.absolute_positions(image[None])[0]
    tables = [table.weight for table in grown.position_tables]
    assert torch.allclose(feats[5], tables[0][4] + tables[1][0] + tables[2][1])  # row 0, column 1 of the image
    assert torch.allclose(feats[2], tables[0][2] + tables[1][0] + tables[2][0])  # text at position 2
    far = grown.absolute_positions(torch.tensor([[40]]))[0, 0]  # past the table: its last row
    assert torch.allclose(far, tables[0][5] + tables[1][0] + tables[2][0])
    args = (x, t, image.expand(2, L, 3), torch.zeros(2, L, dtype=torch.long), block_causal_mask(L, B)[None])
    assert not torch.allclose(grown(*args), dit(*args), atol=1e-4)
    with pytest.raises(Exception, match="position_embed must be >= 0"):
        preset("tiny", position_embed=-1)
