"""Text VAE: shapes, block-causality, streaming == full pass, masks, loss terms, save/load."""

from __future__ import annotations

import pytest
import torch

from cola_mm.core.config import ConfigError
from cola_mm.prior.masks import block_causal_mask, block_causal_mask_mod, dense_from_mask_mod
from cola_mm.vae_text.losses import TextVAELossConfig, active_dims, kl_per_token, text_vae_loss
from cola_mm.vae_text.model import PRESETS, TextVAE, TextVAEConfig, preset

VOCAB = 64


@pytest.fixture
def vae() -> TextVAE:
    torch.manual_seed(0)
    return TextVAE(preset("tiny", vocab_size=VOCAB, d_latent=8)).eval()


def test_shapes_and_latent_layernorm(vae):
    ids = torch.randint(0, VOCAB, (3, 10))
    mean, logvar = vae.encode(ids)
    assert mean.shape == logvar.shape == (3, 10, 8)
    torch.testing.assert_close(mean.mean(-1), torch.zeros(3, 10), atol=1e-5, rtol=0)  # LayerNorm
    assert vae.decode(mean).shape == (3, 10, VOCAB)


def test_block_causal_mask_rule_and_flex_mod_agree():
    m = block_causal_mask(8, 4)
    expected = torch.tensor([[j // 4 <= i // 4 for j in range(8)] for i in range(8)])
    assert torch.equal(m, expected)
    for offset in (0, 4, 8):
        dense = block_causal_mask(4, 4, q_offset=offset)
        assert torch.equal(dense, dense_from_mask_mod(block_causal_mask_mod(4, q_offset=offset), 4, offset + 4))
    assert torch.equal(block_causal_mask(12, 4), dense_from_mask_mod(block_causal_mask_mod(4), 12, 12))


def test_later_blocks_do_not_change_earlier_outputs(vae):
    ids = torch.randint(0, VOCAB, (2, 12))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % VOCAB  # third VAE block
    mean_a, _ = vae.encode(ids)
    mean_b, _ = vae.encode(changed)
    torch.testing.assert_close(mean_a[:, :8], mean_b[:, :8])
    assert not torch.allclose(mean_a[:, 8:], mean_b[:, 8:])
    z = mean_a.clone()
    z2 = z.clone()
    z2[:, 4:] += 1.0
    torch.testing.assert_close(vae.decode(z)[:, :4], vae.decode(z2)[:, :4])


@pytest.mark.parametrize("n", [4, 11, 16])  # whole blocks and a ragged tail
def test_streaming_equals_full_pass(vae, n):
    ids = torch.randint(0, VOCAB, (2, n))
    mean, logvar = vae.encode(ids)
    parts = list(vae.encode_stream(ids))
    assert len(parts) == -(-n // vae.config.block_size)
    torch.testing.assert_close(torch.cat([m for m, _ in parts], 1), mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([lv for _, lv in parts], 1), logvar, atol=1e-5, rtol=1e-5)
    logits = vae.decode(mean)
    torch.testing.assert_close(torch.cat(list(vae.decode_stream(mean)), 1), logits, atol=1e-5, rtol=1e-5)


def test_sliding_window_mask_rule():
    m = block_causal_mask(12, 4, window=8)  # a query sees its own block and the one before
    expected = torch.tensor([[i // 4 - 1 <= j // 4 <= i // 4 for j in range(12)] for i in range(12)])
    assert torch.equal(m, expected) and int(m.sum(1).max()) == 8
    # keys 4..11 only (the oldest block dropped from a cache): the same columns of the full mask
    assert torch.equal(block_causal_mask(4, 4, q_offset=8, k_offset=4, window=8), m[8:, 4:])
    assert torch.equal(m, dense_from_mask_mod(block_causal_mask_mod(4, window=8), 12, 12))
    with pytest.raises(ValueError, match="multiple of the block size"):
        block_causal_mask(8, 4, window=6)


@pytest.mark.parametrize("chunk", [4, 8])  # one VAE block or two per streaming call
def test_windowed_streaming_drops_keys_and_equals_the_windowed_full_pass(vae, chunk):
    """Decoding past the window with a cache that forgets old keys gives exactly the full pass
    under the sliding-window mask, and differs from the unwindowed pass."""
    from cola_mm.core.layers import KVCache

    z = torch.randn(2, 24, 8)
    full = vae.decode(z, window=8)
    cache, parts = KVCache(), []
    for start in range(0, 24, chunk):
        parts.append(vae.decode(z[:, start:start + chunk], cache, update_cache=True, window=8))
        assert cache.length <= 8 + chunk - 4 and cache.position == start + chunk
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[:, :8], vae.decode(z)[:, :8])  # inside the window: unchanged
    assert not torch.allclose(full[:, 8:], vae.decode(z)[:, 8:])
    z2 = z.clone()
    z2[:, :4] += 1.0  # a block that left every later query's window (2 blocks) ...
    torch.testing.assert_close(vae.decode(z2, window=8)[:, 16:], full[:, 16:])  # ... 2 blocks on


def test_decoder_reads_only_latents(vae):
    """Same latents → same logits, whatever tokens produced them: decode takes no ids."""
    z = torch.randn(1, 8, 8)
    torch.testing.assert_close(vae.decode(z), vae.decode(z.clone()))
    import inspect
    assert list(inspect.signature(vae.decode).parameters)[0] == "z"


def test_loss_terms_and_masking(vae):
    ids = torch.randint(5, VOCAB, (4, 16))
    valid = torch.ones_like(ids, dtype=torch.bool)
    torch.manual_seed(1)
    loss, logs = text_vae_loss(vae, ids, valid, TextVAELossConfig(beta=0.5, mask_ratio=0.3, mask_weight=0.7),
                               mask_id=3)
    expected = logs["recon"] + 0.5 * logs["kl"] + 0.7 * logs["mask_ce"]
    assert abs(loss.item() - expected) < 1e-4
    torch.manual_seed(1)
    _, no_mask = text_vae_loss(vae, ids, valid, TextVAELossConfig(mask_ratio=0.0), mask_id=3)
    assert no_mask["mask_ce"] == 0.0
    # KL of the prior itself is zero, and grows with the mean
    assert kl_per_token(torch.zeros(3), torch.zeros(3)).sum() == 0
    assert kl_per_token(torch.ones(3), torch.zeros(3)).sum() > 0


def test_overfits_a_batch_and_keeps_dims_active():
    torch.manual_seed(0)
    vae = TextVAE(preset("tiny", vocab_size=VOCAB, d_latent=8))
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-2)
    ids = torch.randint(5, VOCAB, (8, 16))
    valid = torch.ones_like(ids, dtype=torch.bool)
    cfg = TextVAELossConfig(beta=1e-3, mask_ratio=0.15)
    for _ in range(150):
        loss, logs = text_vae_loss(vae, ids, valid, cfg, mask_id=3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        mean, _ = vae.encode(ids)
        acc = (vae.decode(mean).argmax(-1) == ids).float().mean().item()
    assert acc > 0.95
    assert active_dims(mean.flatten(0, 1)) >= 4


def test_save_load_round_trip_and_prior_boundary(vae, tmp_path):
    vae.with_latent_stats(0.25, 2.0)
    vae.save_pretrained(tmp_path / "vae")
    loaded = TextVAE.from_pretrained(tmp_path / "vae").eval()
    assert loaded.config == vae.config
    ids = torch.randint(0, VOCAB, (2, 9))
    torch.testing.assert_close(loaded.encode(ids)[0], vae.encode(ids)[0], atol=0, rtol=0)
    z = torch.randn(2, 9, 8)
    torch.testing.assert_close(loaded.from_prior(loaded.to_prior(z)), z)
    torch.testing.assert_close(loaded.to_prior(z), (z - 0.25) * 2.0)


def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="multiple of n_heads"):
        TextVAEConfig(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="unknown key"):
        TextVAEConfig.from_dict({"d_modell": 32})
    assert set(PRESETS) == {"tiny", "small", "base"}
    sizes = [TextVAE(preset(p, vocab_size=512)).num_params() for p in ("tiny", "small")]
    assert sizes[0] < sizes[1]
    with pytest.raises(ValueError, match="unknown TextVAE preset"):
        preset("huge")
