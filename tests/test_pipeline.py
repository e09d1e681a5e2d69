"""Joint stage 2 (Text VAE + DiT) and the text-continuation pipeline, end to end on tiny configs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cola_mm.core.components import CheckpointError
from cola_mm.core.config import ConfigError
from cola_mm.pipeline import ColaPipeline
from cola_mm.training.config import TrainConfig
from cola_mm.training.loop import train

from conftest import REPO


def base_cfg(datasets, run_dir, **over):
    cfg = {
        "stage": "vae-text", "run_dir": str(run_dir), "model": {"preset": "tiny"},
        "data": {"train": [{"shards": str(datasets / "text" / "train"), "weight": 3},
                           {"shards": str(datasets / "shapes" / "train"), "weight": 1}],
                 "val": [{"shards": str(datasets / "text" / "val")}],
                 "tokenizer": str(datasets / "tokenizer"), "seq_len": 32, "shuffle_buffer": 20},
        "optim": {"lr": 0.003, "warmup_steps": 2}, "batch_size": 4, "max_steps": 6,
        "log_every": 2, "val_every": 0, "val_batches": 1, "ckpt_every": 6,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def stage1(tiny_datasets, tmp_path_factory):
    run = tmp_path_factory.mktemp("stage1")
    return train(TrainConfig.from_dict(base_cfg(tiny_datasets, run)), progress=False)


@pytest.fixture(scope="module")
def joint(tiny_datasets, stage1, tmp_path_factory):
    run = tmp_path_factory.mktemp("joint")
    cfg = base_cfg(tiny_datasets, run, stage="prior",
                   model={"vae": str(stage1), "dit": {"preset": "tiny"}},
                   loss={"ref_weight": 0.1}, max_steps=6)
    return train(TrainConfig.from_dict(cfg), progress=False)


def test_joint_stage_exports_a_pipeline_folder(joint, stage1):
    assert sorted(p.name for p in joint.iterdir()) == ["README.md", "dit", "pipeline.json", "text_vae", "tokenizer"]
    metrics = [json.loads(l) for l in (joint.parent / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in metrics if "loss" in r]
    assert {"flow", "ref_kl", "vae_recon"} <= train_recs[-1].keys()
    assert {"val_flow", "val_ref_kl"} <= metrics[-1].keys()
    # the VAE trained jointly (weights moved) but kept the stage-1 prior boundary
    before, after = load_file(str(stage1 / "text_vae" / "model.safetensors")), load_file(str(joint / "text_vae" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    cfg1 = json.loads((stage1 / "text_vae" / "config.json").read_text())
    cfg2 = json.loads((joint / "text_vae" / "config.json").read_text())
    assert (cfg1["latent_shift"], cfg1["latent_scale"]) == (cfg2["latent_shift"], cfg2["latent_scale"])


def test_frozen_vae_option_keeps_vae_weights(tiny_datasets, stage1, tmp_path):
    cfg = base_cfg(tiny_datasets, tmp_path / "run", stage="prior",
                   model={"vae": str(stage1), "dit": {"preset": "tiny"}},
                   loss={"freeze_vae": True}, max_steps=2, ckpt_every=2)
    out = train(TrainConfig.from_dict(cfg), progress=False)
    before, after = load_file(str(stage1 / "text_vae" / "model.safetensors")), load_file(str(out / "text_vae" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fine_tune_grows_position_tables(tiny_datasets, joint, tmp_path):
    """model.init from a RoPE-only prior into one with model.dit.position_embed: the tables start
    at zero and train at position_lr_ratio × lr; any other change of the DiT is refused."""
    from cola_mm.prior.dit import DiT
    from cola_mm.training.stages.prior import JointStage

    dit = {"preset": "tiny", "position_embed": 8}
    cfg = base_cfg(tiny_datasets, tmp_path / "grow", stage="prior", model={"vae": str(joint), "init": str(joint),
                   "dit": dit}, loss={"position_lr_ratio": 10.0}, max_steps=2, ckpt_every=2)
    stage = JointStage(TrainConfig.from_dict(cfg))
    base = DiT.from_pretrained(joint / "dit")
    grown = stage.module.dit
    assert all(torch.equal(t.weight, torch.zeros_like(t.weight)) for t in grown.position_tables)
    assert all(torch.equal(v, grown.state_dict()[k]) for k, v in base.state_dict().items())
    lr = TrainConfig.from_dict(cfg).optim.lr
    tables = {id(p) for p in grown.position_tables.parameters()}
    groups = stage.param_groups(TrainConfig.from_dict(cfg).optim)
    assert [g["lr"] for g in groups if any(id(p) in tables for p in g["params"])] == [10 * lr]
    assert all(g["lr"] == lr for g in groups if not any(id(p) in tables for p in g["params"]))
    assert sum(len(g["params"]) for g in groups) == len([p for p in stage.module.parameters() if p.requires_grad])
    out = train(TrainConfig.from_dict(cfg), progress=False)
    assert DiT.from_pretrained(out / "dit").position_tables[0].weight.abs().sum() > 0
    for other in ({"preset": "tiny", "position_embed": 8, "n_layers": 3}, {"preset": "small", "position_embed": 8}):
        bad = base_cfg(tiny_datasets, tmp_path / "bad", stage="prior",
                       model={"vae": str(joint), "init": str(joint), "dit": other})
        with pytest.raises(ConfigError, match="another config than model.dit"):
            JointStage(TrainConfig.from_dict(bad))


def test_joint_stage_config_errors(tiny_datasets, stage1, tmp_path):
    cfg = base_cfg(tiny_datasets, tmp_path / "r", stage="prior", model={"vae": str(stage1)}, loss={"flow_wieght": 1})
    with pytest.raises(ConfigError, match="unknown key 'flow_wieght'"):
        train(TrainConfig.from_dict(cfg), progress=False)
    cfg = base_cfg(tiny_datasets, tmp_path / "r", stage="prior", model={"vae": str(stage1)})
    cfg["data"]["seq_len"] = 30
    with pytest.raises(ConfigError, match="multiple of the DiT block"):
        train(TrainConfig.from_dict(cfg), progress=False)


def test_generate_text_and_stream(joint):
    pipe = ColaPipeline.from_pretrained(joint)
    text = pipe.generate_text("the king", max_new_tokens=20, steps=4, seed=0)
    assert isinstance(text, str)
    again = pipe.generate_text("the king", max_new_tokens=20, steps=4, seed=0)
    assert text == again  # a seed gives the same output
    deltas = list(pipe.stream_text("the king", max_new_tokens=20, steps=4, seed=0))
    assert len(deltas) >= 1 and "".join(d[0] for d in deltas) == text
    result = pipe.generate_text("the king", max_new_tokens=20, steps=4, seed=0, return_result=True)
    assert result.outputs == [text] and result.notices == []
    assert 0 < len(result.tokens[0]) <= 20
    assert pipe.tokenizer.decode(result.tokens[0], skip_special_tokens=True) == text


def test_batched_prompts_match_one_by_one(joint):
    pipe = ColaPipeline.from_pretrained(joint)
    prompts = ["the king", "a lazy dog sat on the mat while the queen", "love"]
    together = pipe.generate_text(prompts, max_new_tokens=24, steps=3, cfg_scale=2.0, seed=7)
    for i, p in enumerate(prompts):
        assert pipe.generate_text(p, max_new_tokens=24, steps=3, cfg_scale=2.0, seed=7 + i) == together[i]


def test_generation_past_the_trained_context_slides_a_window(joint):
    """seq_len 32 here: a 28-token prompt + 64 new tokens runs past it. The DiT and the Text VAE
    decoder then attend to at most 32 latents; batches still match one-by-one."""
    pipe = ColaPipeline.from_pretrained(joint)
    assert pipe.config.trained_context == 32
    prompts = ["the king said to the queen that the lazy dog sat on the mat while " * 2, "love"]
    assert len(pipe.tokenizer.encode(prompts[0], add_special_tokens=False)) >= 27
    spans, decoder_keys = [], []
    dit_forward, vae_decode = pipe.dit.forward, pipe.text_vae.decode

    def dit_spy(x, t, positions, segments, mask=None, cache=None, update_cache=False):
        if mask is not None:
            spans.append(int(mask.sum(-1).max()))
        return dit_forward(x, t, positions, segments, mask, cache, update_cache)

    def vae_spy(z, cache=None, update_cache=False, window=0):
        out = vae_decode(z, cache, update_cache, window)
        decoder_keys.append(cache.position - cache.dropped if cache is not None else z.shape[1])
        return out

    pipe.dit.forward, pipe.text_vae.decode = dit_spy, vae_spy
    kw = dict(max_new_tokens=64, steps=3, seed=11)
    result = pipe.generate_text(prompts, **kw, return_result=True)
    together = result.outputs
    assert len(result.tokens[0]) >= 8  # ran past position 32 (28 + 8 > 32)
    assert max(spans) == 32 and max(decoder_keys) <= 32 + 16 - 4  # window + one block − a VAE block
    assert pipe.generate_text(prompts[0], **kw) == together[0]
    assert pipe.generate_text(prompts[1], **{**kw, "seed": 12}) == together[1]
    spans.clear()
    pipe.config = pipe.config.replace(trained_context=4096)  # no window: spans grow
    pipe.generate_text(prompts[0], **kw)
    assert max(spans) > 32


def test_save_load_round_trip_gives_identical_outputs(joint, tmp_path):
    pipe = ColaPipeline.from_pretrained(joint)
    pipe.save_pretrained(tmp_path / "copy")
    other = ColaPipeline.from_pretrained(tmp_path / "copy")
    kw = dict(max_new_tokens=16, steps=3, seed=3)
    assert pipe.generate_text("my lord", **kw) == other.generate_text("my lord", **kw)


def test_long_prompt_is_truncated_with_notice_and_bad_input(joint):
    pipe = ColaPipeline.from_pretrained(joint)
    result = pipe.generate_text("the dog " * 400, max_new_tokens=4, steps=2, return_result=True)
    assert result.notices and "truncated" in result.notices[0]
    assert not hasattr(pipe, "notices")  # nothing about one call is kept on the shared pipeline
    with pytest.raises(ValueError):
        pipe.generate_text("x", max_new_tokens=0)
    with pytest.raises(ValueError):
        pipe.generate_text([], max_new_tokens=4)


@pytest.mark.parametrize("rounding", [False, True])
def test_min_new_tokens_keeps_the_end_of_text_out_of_the_first_tokens(joint, monkeypatch, rounding):
    """A decoder that puts <eos> first everywhere: min_new_tokens 0 returns nothing (the old
    behaviour, which gave '' for 'ROMEO. But soft' on the bundle), the default 1 one token, and
    a block and more exactly that many (the prompt's tail fills the first block's start); none
    of them a special token."""
    pipe = ColaPipeline.from_pretrained(joint)
    tok = pipe.tokenizer
    special = {tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}
    real_decode = pipe.text_vae.decode

    def eos_first(*args, **kwargs):
        logits = real_decode(*args, **kwargs)
        logits[..., tok.eos_token_id] = 1e4
        return logits

    monkeypatch.setattr(pipe.text_vae, "decode", eos_first)
    spans_two = pipe.dit.config.block_size + 2  # more than the first block's free positions
    for n in (0, 1, spans_two):
        result = pipe.generate_text("the king", max_new_tokens=spans_two + 4, min_new_tokens=n, steps=1, rounding=rounding,
                                    return_result=True)
        assert len(result.tokens[0]) == n and not special & set(result.tokens[0])
        assert (result.outputs[0] == "") == (n == 0)
    assert pipe.generate_text("the king", max_new_tokens=8, steps=1, rounding=rounding) != ""  # the default is 1
    for bad in (-1, 9, 1.5):
        with pytest.raises(ValueError, match="min_new_tokens"):
            pipe.generate_text("the king", max_new_tokens=8, min_new_tokens=bad)


def test_pipeline_folder_errors(joint, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ColaPipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match="pipeline.json"):
        ColaPipeline.from_pretrained(tmp_path / "half")


def test_cli_generate_text(joint):
    proc = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "text", "--ckpt", str(joint),
                           "--prompt", "the queen", "--max-new-tokens", "8", "--steps", "2"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("the queen")
    proc = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "text", "--ckpt", "/nonexistent",
                           "--prompt", "x"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_pipeline_refuses_inconsistent_parts(joint):
    from cola_mm.pipeline import PipelineConfig

    pipe = ColaPipeline.from_pretrained(joint)
    with pytest.raises(CheckpointError, match="block_size"):
        ColaPipeline(pipe.text_vae, pipe.dit, pipe.tokenizer, PipelineConfig(block_size=pipe.dit.config.block_size * 2))
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        PipelineConfig(max_prompt_tokens=1)


def test_pipeline_folder_with_pickle_files_is_refused_unless_trusted(joint, tmp_path):
    """The trust boundary: loading reads safetensors and JSON only; a folder that also carries
    pickle files is refused (one line) unless the user says so, and even then they are not read."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(joint, folder)
    (folder / "dit" / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match=r"holds pickle files \(dit/pytorch_model.bin\)") as err:
        ColaPipeline.from_pretrained(folder)
    assert "\n" not in str(err.value) and "trust_pickle_files=True" in str(err.value)
    pipe = ColaPipeline.from_pretrained(folder, trust_pickle_files=True)  # the bogus pickle is never opened
    assert pipe.generate_text("love", max_new_tokens=2, steps=1) is not None
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "text", "--ckpt", str(folder), "--prompt", "x",
                        "--max-new-tokens", "2", "--steps", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--trust-pickle-files" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "text", "--ckpt", str(folder), "--prompt", "x",
                        "--max-new-tokens", "2", "--steps", "1", "--trust-pickle-files"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_text_rounding_commits_the_encoders_latents_of_the_decoded_tokens(joint, tmp_path, monkeypatch):
    """With rounding, the latents the prior reads as the context of later blocks are the Text VAE
    encoder's posterior means of the tokens each sampled block decodes to (the first block keeps
    the prompt's own tail), exactly what encoding the whole text at once gives."""
    from cola_mm.pipeline import TextDecoder
    from cola_mm.prior.sampler import BlockSampler

    pipe = ColaPipeline.from_pretrained(joint)
    prompt, kw = "the king", dict(max_new_tokens=16, steps=3, cfg_scale=2.0, seed=5)
    plain = pipe.generate_text(prompt, **kw, return_result=True)
    committed, decoded = [], []
    commit, decode = BlockSampler.commit, TextDecoder._decode
    monkeypatch.setattr(BlockSampler, "commit", lambda self, z, *a, **k: (committed.append(z.clone()), commit(self, z, *a, **k))[1])
    monkeypatch.setattr(TextDecoder, "_decode", lambda self, z, i: (decoded.append(decode(self, z, i)), decoded[-1])[1])
    rounded = pipe.generate_text(prompt, **kw, rounding=True, return_result=True)
    monkeypatch.undo()

    B = pipe.config.block_size
    ids = pipe._prompt_ids(prompt, [])  # as stream_text encodes it
    whole, tail = (len(ids) // B) * B, ids[(len(ids) // B) * B:]
    generated = [list(tail) + decoded[0][len(tail):]] + decoded[1:]
    assert len(committed) == len(decoded) >= 2  # every generated block was committed rounded
    full = torch.tensor([ids[:whole] + [t for block in generated for t in block]])
    mean, _ = pipe.text_vae.encode(full)
    expected = pipe.text_vae.to_prior(mean[0, whole:]).reshape(len(decoded), B, -1)
    for got, want in zip(committed, expected):
        torch.testing.assert_close(got[0], want, atol=1e-4, rtol=1e-4)
    # the first block is sampled before rounding can matter: its text is the plain run's
    n = len(decoded[0]) - len(tail)
    assert rounded.tokens[0][:n] == plain.tokens[0][:n] == decoded[0][len(tail):][:len(rounded.tokens[0])]

    # batches match one by one; pipeline.json's text_rounding is the default
    prompts = ["the king", "a lazy dog sat on the mat while the queen"]
    together = pipe.generate_text(prompts, max_new_tokens=12, steps=2, seed=7, rounding=True)
    for i, p in enumerate(prompts):
        assert pipe.generate_text(p, max_new_tokens=12, steps=2, seed=7 + i, rounding=True) == together[i]
    pipe.config = pipe.config.replace(text_rounding=True)
    pipe.save_pretrained(tmp_path / "rounded")
    other = ColaPipeline.from_pretrained(tmp_path / "rounded")
    assert other.config.text_rounding
    assert other.generate_text(prompts, max_new_tokens=12, steps=2, seed=7) == together
    assert other.generate_text(prompts, max_new_tokens=12, steps=2, seed=7, rounding=False) == \
        ColaPipeline.from_pretrained(joint).generate_text(prompts, max_new_tokens=12, steps=2, seed=7)
