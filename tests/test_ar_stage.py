"""Stage ``ar``: a tiny LLaMA trains through the generic loop on the text windows, its loss falls,
it exports as plain Hugging Face folders that reload, and config mistakes are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig


def ar_config(datasets: Path, run_dir: Path, **over) -> dict:
    cfg = {
        "stage": "ar",
        "run_dir": str(run_dir),
        "model": {"preset": "tiny"},
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


def test_ar_trains_exports_and_reloads(tiny_datasets, tmp_path):
    from transformers import LlamaForCausalLM

    from cola_mm.training.loop import train
    from cola_mm.training.stages.ar import token_nll
    from cola_mm.vae_text.tokenizer import load_tokenizer

    run = tmp_path / "run"
    out = train(TrainConfig.from_dict(ar_config(tiny_datasets, run)), progress=False)
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, (first, last)  # ln(400) ≈ 6.0 at the start
    val = [r for r in recs if "val_loss" in r][-1]
    assert val["val_ppl"] == pytest.approx(torch.tensor(val["val_loss"]).exp().item(), rel=1e-6)
    assert val["val_loss"] < first

    lm = LlamaForCausalLM.from_pretrained(out / "ar").eval()
    tok = load_tokenizer(out / "tokenizer")
    assert lm.config.vocab_size == len(tok) and lm.config.bos_token_id == tok.bos_token_id
    # the reloaded model is the trained one: same held-out loss as the run's last validation
    from cola_mm.training.stages.ar import ARStage

    stage = ARStage(TrainConfig.from_dict(ar_config(tiny_datasets, tmp_path / "again")))
    batches = stage.val_batches(2)
    with torch.no_grad():
        nll = [token_nll(lm, b["ids"]) for b in batches]
    assert sum(n.item() for n, _ in nll) / sum(c for _, c in nll) == pytest.approx(val["val_loss"], rel=1e-4)

    # the evaluation wrapper: the pipeline's generate_text signature, seeded like the prior's sampler
    from cola_mm.evaluation.ar import ARFolderError, ARGenerator

    gen = ARGenerator.from_pretrained(out)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = gen.generate_text("the king", max_new_tokens=8, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert isinstance(a, str) and a == gen.generate_text("the king", max_new_tokens=8, steps=4, seed=0)
    assert len({gen.generate_text("the king", max_new_tokens=8, seed=s) for s in range(4)}) > 1
    with pytest.raises(ARFolderError, match="expected an AR model folder"):
        ARGenerator.from_pretrained(tmp_path)


def test_ar_config_errors_are_one_line(tiny_datasets, tmp_path):
    from cola_mm.training.stages.ar import ARStage

    def stage(**model):
        return ARStage(TrainConfig.from_dict(ar_config(tiny_datasets, tmp_path / "r", model=model)))

    with pytest.raises(ConfigError) as err:
        stage(preset="tiny", vocab_size=123)
    msg = str(err.value)
    assert "\n" not in msg and "vocab_size=123" in msg and "400" in msg, msg
    with pytest.raises(ConfigError, match="unknown AR preset 'huge'"):
        stage(preset="huge")
    with pytest.raises(ConfigError, match="unknown key 'hidden'"):
        stage(preset="tiny", hidden=64)
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        stage(preset="tiny", max_position_embeddings=16)
    assert stage(preset="tiny", hidden_size=48, num_attention_heads=4).model_config.hidden_size == 48


def test_parameter_counts_report_embeddings_apart():
    from cola_mm.training.stages.ar import build_model, llama_config, parameter_counts

    tok = type("Tok", (), {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "__len__": lambda s: 8192})()
    c = parameter_counts(build_model(llama_config({"preset": "small"}, tok, 128)))
    assert c["embedding"] == 8192 * 256  # tied with the output layer: counted once
    assert c["non_embedding"] == 6 * (4 * 256 * 256 + 3 * 256 * 704 + 2 * 256) + 256
    assert c["total"] == c["embedding"] + c["non_embedding"]


def test_ar_resumes_from_a_checkpoint_with_tied_weights(tiny_datasets, tmp_path, monkeypatch):
    """accelerate drops the tied lm_head from its saved state; a run stopped right after its
    step-3 checkpoint and resumed must end with the weights of one uninterrupted run."""
    from transformers import LlamaForCausalLM

    from cola_mm.training import loop

    class Stop(Exception):
        pass

    def cfg(name):
        return TrainConfig.from_dict(ar_config(tiny_datasets, tmp_path / name, max_steps=6, ckpt_every=3,
                                               val_batches=1))

    whole = loop.train(cfg("whole"), progress=False)
    plot = loop.plot_loss_curve

    def stop_after_first_checkpoint(records, out):  # runs right after a checkpoint is committed
        raise Stop

    monkeypatch.setattr(loop, "plot_loss_curve", stop_after_first_checkpoint)
    with pytest.raises(Stop):
        loop.train(cfg("split"), progress=False)
    monkeypatch.setattr(loop, "plot_loss_curve", plot)
    split = loop.train(cfg("split"), resume=True, progress=False)
    a = LlamaForCausalLM.from_pretrained(whole / "ar").state_dict()
    b = LlamaForCausalLM.from_pretrained(split / "ar").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
