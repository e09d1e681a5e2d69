"""The LLaDA-style masked diffusion baseline: its loss, its sampler's order of unmasking, that it
learns a toy language and continues it, and the stage that trains and exports it through the
generic loop (issue 19)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cola_mm.baselines.masked_diffusion import (MaskedDiffusionConfig, MaskedDiffusionLM, mask_tokens,
                                                masked_diffusion_loss, sample, transfer_counts)
from cola_mm.core.components import CheckpointError
from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig

MASK = 3


def tiny(vocab=20, max_len=32, **over) -> MaskedDiffusionLM:
    torch.manual_seed(0)
    return MaskedDiffusionLM(MaskedDiffusionConfig(vocab_size=vocab, mask_token_id=MASK, d_model=32, n_heads=2,
                                                   n_layers=2, mlp_hidden=64, max_len=max_len, **over))


def test_loss_is_cross_entropy_on_masked_places_weighted_by_one_over_p():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    masked = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    p = torch.tensor([0.4, 0.25])
    want = 0.0
    for r in range(2):
        for i in range(5):
            if masked[r, i]:
                want += -torch.log_softmax(logits[r, i], -1)[ids[r, i]].item() / p[r].item()
    assert masked_diffusion_loss(logits, ids, masked, p).item() == pytest.approx(want / 10, rel=1e-5)
    # unmasked places cost nothing, whatever the model predicts there
    other = logits.clone()
    other[~masked] = torch.randn_like(other[~masked]) * 10
    assert masked_diffusion_loss(other, ids, masked, p).item() == pytest.approx(want / 10, rel=1e-5)


def test_masking_rate_follows_each_rows_p():
    ids = torch.full((4000, 64), 7)
    x_t, masked, p = mask_tokens(ids, MASK, torch.Generator().manual_seed(0))
    assert torch.equal(x_t == MASK, masked) and torch.equal(x_t[~masked], ids[~masked])
    assert p.min() >= 1e-3 and p.max() <= 1.0
    assert abs(masked.float().mean().item() - 0.5) < 0.01  # E[p] = 1/2
    rate = masked.float().mean(1)
    assert torch.corrcoef(torch.stack([rate, p]))[0, 1] > 0.95  # each row masked at its own rate


def test_the_network_is_bidirectional():
    model = tiny().eval()
    x = torch.randint(5, 20, (1, 12))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1 - 5) % 15 + 5  # change only the last token
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a[0, 0], b[0, 0])  # the first position sees the last


def test_transfer_counts():
    assert transfer_counts(16, 4) == [4, 4, 4, 4]
    assert transfer_counts(10, 4) == [3, 3, 2, 2]
    assert transfer_counts(3, 8) == [1, 1, 1]  # never more steps than places
    assert sum(transfer_counts(7, 1)) == 7


class Recorder(torch.nn.Module):
    """A stand-in model that records each input and is most confident at the latest places
    (so the sampler's choice shows), predicting token 10 + position."""

    def __init__(self, vocab=60, max_len=64):
        super().__init__()
        self.config = MaskedDiffusionConfig(vocab_size=vocab, mask_token_id=MASK, max_len=max_len, d_model=2,
                                            n_heads=1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        b, n = x.shape
        logits = torch.zeros(b, n, self.config.vocab_size)
        for i in range(n):
            logits[:, i, 10 + i] = i / 4  # place i predicts 10 + i, more surely the later it is
        return logits


def test_sampler_keeps_the_prompt_fills_blocks_left_to_right_and_unmasks_the_surest_first():
    model = Recorder()
    prompt = torch.tensor([[1, 5, 6, 7]])
    out = sample(model, prompt, max_new_tokens=8, steps=8, block_size=4, temperature=0.0)
    assert out.tolist() == [[10 + i for i in range(4, 12)]]  # every place filled with its prediction
    assert len(model.seen) == 8  # 8 steps over 2 blocks: 4 steps per block, one token each
    for x in model.seen:
        assert x[0, :4].tolist() == [1, 5, 6, 7]  # the prompt is never touched
    # while block 1 (places 4-7) is open, block 2 (8-11) stays masked
    for x in model.seen[:4]:
        assert (x[0, 8:] == MASK).all()
    # inside a block, the place the model is surest of (the latest) is unmasked first
    assert model.seen[1][0, 4:8].tolist() == [MASK, MASK, MASK, 17]
    assert model.seen[2][0, 4:8].tolist() == [MASK, MASK, 16, 17]
    # fewer steps unmask several places at once
    model = Recorder()
    sample(model, prompt, max_new_tokens=8, steps=2, block_size=4, temperature=0.0)
    assert len(model.seen) == 2 and (model.seen[1][0, 4:8] != MASK).all()
    with pytest.raises(ValueError, match="longer than the model's trained length"):
        sample(Recorder(max_len=10), prompt, max_new_tokens=8, steps=8, block_size=4)


def test_a_tiny_model_learns_a_toy_language_and_continues_it():
    """Sequences count up mod 40 from a random start (ids 5…44): after training, a prompt's
    continuation must go on counting, which only a model that reads the prompt can do."""
    torch.manual_seed(0)
    model = tiny(vocab=45, max_len=24)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / 1500)
    for _ in range(1500):  # ~10 s
        start = torch.randint(0, 40, (32, 1))
        ids = (start + torch.arange(24)) % 40 + 5
        x_t, masked, p = mask_tokens(ids, MASK)
        loss = masked_diffusion_loss(model(x_t), ids, masked, p)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    model.eval()
    starts = torch.arange(0, 40, 5)[:, None]
    prompts = (starts + torch.arange(8)) % 40 + 5
    out = sample(model, prompts, max_new_tokens=12, steps=12, block_size=4, temperature=0.0)
    want = (starts + torch.arange(8, 20)) % 40 + 5
    assert (out == want).float().mean().item() > 0.95, (out, want)  # measured: 1.0


def mdm_config(datasets: Path, run_dir: Path, **over) -> dict:
    cfg = {
        "stage": "masked-diffusion",
        "run_dir": str(run_dir),
        "model": {"preset": "tiny", "sample_block_size": 8},
        "data": {"train": [{"shards": str(datasets / "text" / "train")}],
                 "val": [{"shards": str(datasets / "text" / "val")}],
                 "tokenizer": str(datasets / "tokenizer"), "seq_len": 32, "shuffle_buffer": 20},
        "optim": {"lr": 0.01, "warmup_steps": 2},
        "batch_size": 8,
        "max_steps": 30,
        "log_every": 1,
        "val_batches": 2,
        "ckpt_every": 30,
    }
    cfg.update(over)
    return cfg


def test_stage_trains_exports_reloads_and_generates(tiny_datasets, tmp_path):
    from cola_mm.baselines.masked_diffusion import MaskedDiffusionGenerator, load_masked_diffusion
    from cola_mm.training.loop import train
    from cola_mm.training.stages.masked_diffusion import MaskedDiffusionStage

    run = tmp_path / "run"
    out = train(TrainConfig.from_dict(mdm_config(tiny_datasets, run)), progress=False)
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    val = [r for r in recs if "val_loss" in r][-1]
    assert val["val_nll_bound_ppl"] == pytest.approx(math.exp(val["val_loss"]), rel=1e-6)

    model, tok = load_masked_diffusion(out)
    assert model.config.vocab_size == len(tok) and model.config.mask_token_id == tok.mask_token_id
    assert model.config.max_len == 32
    # the reloaded weights are the trained ones: the same held-out loss as the run's last validation
    stage = MaskedDiffusionStage(TrainConfig.from_dict(mdm_config(tiny_datasets, tmp_path / "again")))
    stage.module.lm.load_state_dict(model.state_dict())
    assert stage.validate(stage.module.eval(), stage.val_batches(2), torch.device("cpu"))["loss"] == \
        pytest.approx(val["val_loss"], rel=1e-5)

    gen = MaskedDiffusionGenerator.from_pretrained(out)
    assert gen.block_size == 8  # from the exported config
    state = torch.random.get_rng_state()
    a = gen.generate_text("the king", max_new_tokens=8, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert isinstance(a, str) and a == gen.generate_text("the king", max_new_tokens=8, seed=0)
    assert len({gen.generate_text("the king", max_new_tokens=8, seed=s) for s in range(4)}) > 1
    assert "<mask>" not in a
    gen.generate_text("word " * 200, max_new_tokens=8, steps=2)  # a long prompt keeps its end

    with pytest.raises(CheckpointError, match="expected a masked diffusion model folder"):
        MaskedDiffusionGenerator.from_pretrained(tmp_path)


def test_a_tokenizer_of_another_vocabulary_is_a_one_line_error(tiny_datasets, tmp_path):
    from cola_mm.baselines.masked_diffusion import COMPONENT, load_masked_diffusion
    from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer

    tok = load_tokenizer(tiny_datasets / "tokenizer")
    model = MaskedDiffusionLM(MaskedDiffusionConfig(vocab_size=len(tok) + 7, mask_token_id=tok.mask_token_id,
                                                    d_model=8, n_heads=2, n_layers=1))
    model.save_pretrained(tmp_path / COMPONENT)
    save_tokenizer(tok, tmp_path / "tokenizer")
    with pytest.raises(CheckpointError) as err:
        load_masked_diffusion(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and f"{len(tok)} tokens" in msg and f"vocabulary of {len(tok) + 7}" in msg


@pytest.mark.parametrize("over, match", [
    ({"model": {"preset": "huge"}}, "unknown masked-diffusion preset 'huge'"),
    ({"model": {"preset": "tiny", "depth": 3}}, "unknown key 'depth'"),
    ({"model": {"preset": "tiny", "vocab_size": 5}}, "does not match the tokenizer's vocabulary"),
    ({"model": {"preset": "tiny", "max_len": 8}}, r"model.max_len \(8\) is shorter than data.seq_len \(32\)"),
    ({"model": {"preset": "tiny", "sample_block_size": 0}}, "sample_block_size must be an integer >= 1"),
    ({"loss": {"beta": 1.0}}, "has no loss options"),
])
def test_config_errors_are_one_line(tiny_datasets, tmp_path, over, match):
    from cola_mm.training.stages.masked_diffusion import MaskedDiffusionStage

    with pytest.raises(ConfigError, match=match) as err:
        MaskedDiffusionStage(TrainConfig.from_dict(mdm_config(tiny_datasets, tmp_path, **over)))
    assert "\n" not in str(err.value)
