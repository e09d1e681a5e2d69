"""Text VAE evaluation: loading a model folder (and its clear errors), metrics that are sane and
seeded, and a model overfitted on a tiny text that the metric must score as nearly perfect."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from cola_mm.core.components import CheckpointError
from cola_mm.data.shards import ShardWriter
from cola_mm.data.windows import Source, TokenWindows, collate_windows
from cola_mm.evaluation.text_vae import evaluate_text_vae, format_report, load_text_vae
from cola_mm.vae_text.losses import TextVAELossConfig, active_dims, reconstruction_metrics, text_vae_loss
from cola_mm.vae_text.model import TextVAE, preset
from cola_mm.vae_text.tokenizer import save_tokenizer, train_tokenizer

CORPUS = [
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    "Rough winds do shake the darling buds of May, and summer's lease hath all too short a date.",
    "A red circle sits left of a small blue square.",
    "To be, or not to be, that is the question.",
] * 4
SEQ_LEN = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and two OpenMP threads slow down ~40x
    when another process holds the other core (a shared CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=300, progress=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text") / "val"
    with ShardWriter(out, max_count=5) as w:
        for i, text in enumerate(CORPUS):
            w.write(f"{i:06d}", {"txt": text})
    return out


def make_model_folder(path: Path, tok, vae: TextVAE | None = None) -> Path:
    torch.manual_seed(0)
    vae = vae or TextVAE(preset("tiny", vocab_size=len(tok)))
    vae.save_pretrained(path / "text_vae")
    save_tokenizer(tok, path / "tokenizer")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("model"), tok)


def test_metrics_are_sane_and_seeded(model_dir, shards):
    res = evaluate_text_vae(model_dir, shards, seq_len=SEQ_LEN, batch_size=4, progress=False)
    assert set(res) == {"acc_mean", "acc_sample", "kl_per_token", "active_dims", "d_latent", "tokens"}
    assert 0.0 <= res["acc_mean"] <= 1.0 and 0.0 <= res["acc_sample"] <= 1.0
    assert res["kl_per_token"] >= 0.0
    assert 0 <= res["active_dims"] <= res["d_latent"] == 16
    assert res["tokens"] > 0 and res["tokens"] % SEQ_LEN == 0
    assert evaluate_text_vae(model_dir, shards, seq_len=SEQ_LEN, batch_size=4, progress=False) == res
    # max_batches bounds the pass; the batch size does not change the metrics of the mean
    one = evaluate_text_vae(model_dir, shards, seq_len=SEQ_LEN, batch_size=2, max_batches=1, progress=False)
    assert one["tokens"] == 2 * SEQ_LEN
    other = evaluate_text_vae(model_dir, shards, seq_len=SEQ_LEN, batch_size=3, progress=False)
    assert other["tokens"] == res["tokens"] and other["acc_mean"] == pytest.approx(res["acc_mean"])
    report = format_report(res)
    assert "token accuracy" in report and f"/ {res['d_latent']}" in report


def test_metrics_match_one_big_batch(model_dir, shards):
    """Accumulating over batches gives what one batch over every window gives."""
    res = evaluate_text_vae(model_dir, shards, seq_len=SEQ_LEN, batch_size=3, seed=5, progress=False)
    vae, tok = load_text_vae(model_dir)
    windows = TokenWindows([Source(str(shards))], tok, SEQ_LEN, shuffle_buffer=0, epochs=1,
                           rank=0, world_size=1)
    ids = collate_windows(list(windows))["ids"]
    out = reconstruction_metrics(vae, ids, torch.ones_like(ids, dtype=torch.bool),
                                 torch.Generator().manual_seed(5))
    assert res["tokens"] == ids.numel()
    assert res["acc_mean"] == pytest.approx(out["correct_mean"].item() / ids.numel())
    assert res["acc_sample"] == pytest.approx(out["correct_sample"].item() / ids.numel())
    assert res["kl_per_token"] == pytest.approx(out["kl_sum"].item() / ids.numel(), rel=1e-5)
    assert res["active_dims"] == active_dims(out["means"])


def test_text_vae_folder_with_explicit_tokenizer(model_dir, shards, tok):
    res = evaluate_text_vae(model_dir / "text_vae", shards, tokenizer=model_dir / "tokenizer",
                            seq_len=SEQ_LEN, max_batches=1, progress=False)
    assert res["tokens"] > 0
    vae, loaded = load_text_vae(model_dir / "text_vae", tokenizer=tok)
    assert loaded is tok and not vae.training


def test_vocab_mismatch_is_a_checkpoint_error(tmp_path, tok, shards):
    folder = make_model_folder(tmp_path / "m", tok, TextVAE(preset("tiny", vocab_size=len(tok) + 7)))
    with pytest.raises(CheckpointError, match=f"tokenizer has {len(tok)} tokens but .* trained with {len(tok) + 7}"):
        evaluate_text_vae(folder, shards, seq_len=SEQ_LEN, progress=False)


def test_missing_parts_are_checkpoint_errors(tmp_path, model_dir, tok):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(CheckpointError, match="tokenizer folder not found"):
        load_text_vae(folder)
    with pytest.raises(CheckpointError, match="pass the tokenizer"):
        load_text_vae(folder / "text_vae")
    (folder / "tokenizer").mkdir()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_text_vae(folder)
    with pytest.raises(CheckpointError, match="not found"):
        load_text_vae(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="neither a model folder"):
        load_text_vae(tmp_path)
    (folder / "text_vae" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError):
        load_text_vae(folder, tokenizer=tok)


def test_overfitted_model_reconstructs_its_text(tmp_path, tok, shards):
    """Memorise the eval windows themselves; the metric must then report (nearly) perfect
    reconstruction, which a broken metric (misaligned ids, wrong argmax axis…) would not."""
    windows = TokenWindows([Source(str(shards))], tok, SEQ_LEN, shuffle_buffer=0, epochs=1,
                           rank=0, world_size=1)
    ids = collate_windows(list(windows))["ids"]  # (b, n): the whole eval pass
    torch.manual_seed(0)
    vae = TextVAE(preset("tiny", vocab_size=len(tok)))
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-2)
    cfg = TextVAELossConfig(mask_ratio=0.0)
    valid = torch.ones_like(ids, dtype=torch.bool)
    before = evaluate_text_vae(make_model_folder(tmp_path / "before", tok, vae), shards,
                               seq_len=SEQ_LEN, progress=False)
    for _ in range(100):  # converges by ~50 steps
        loss, _ = text_vae_loss(vae, ids, valid, cfg, tok.mask_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    res = evaluate_text_vae(make_model_folder(tmp_path / "after", tok, vae), shards,
                            seq_len=SEQ_LEN, progress=False)
    assert res["tokens"] == ids.numel()
    assert before["acc_mean"] < 0.2
    assert res["acc_mean"] > 0.9 and res["acc_sample"] > 0.9
