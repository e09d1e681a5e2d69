"""The AR baseline's sampling settings: a temperature and top-p per call or stored in the folder
(``cola-mm export``), so a comparison can give the AR its own best sampling as the prior gets its
noise temperature. Checked on a random tiny LLaMA: what matters is which distribution is sampled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cola_mm.cli import main


@pytest.fixture(scope="module")
def ar_folder(tiny_datasets, tmp_path_factory) -> Path:
    """An ``ar`` model folder as `cola-mm train` exports it (ar/ + tokenizer/), random weights."""
    from cola_mm.training.stages.ar import build_model, export_lm, llama_config
    from cola_mm.vae_text.tokenizer import load_tokenizer

    folder = tmp_path_factory.mktemp("ar_model")
    tok = load_tokenizer(tiny_datasets / "tokenizer")
    torch.manual_seed(0)
    config = llama_config({"preset": "tiny"}, tok, 64)
    lm = build_model(config)
    with torch.no_grad():  # sharpen the output layer: a random tiny LM is nearly uniform otherwise
        for p in lm.parameters():
            p.mul_(4)
    export_lm(config, lm.state_dict(), folder / "ar", prefix="")
    shutil.copytree(tiny_datasets / "tokenizer", folder / "tokenizer")
    return folder


def first_token_counts(gen, temperature=None, top_p=None, n=64) -> torch.Tensor:
    """How often each token comes first after one prompt, over ``n`` seeds."""
    counts = torch.zeros(len(gen.tokenizer))
    prompt = [gen.tokenizer.bos_token_id] + gen.tokenizer.encode("the king", add_special_tokens=False)
    ids = torch.tensor([prompt])
    for seed in range(n):
        out = gen._generate(ids, torch.ones_like(ids), 1, seed, temperature, top_p)
        counts[out[0, -1]] += 1
    return counts


def test_defaults_reproduce_pure_sampling_and_per_call_settings_override(ar_folder):
    from cola_mm.evaluation.ar import ARGenerator

    gen = ARGenerator.from_pretrained(ar_folder)
    assert gen.sampling == {"temperature": 1.0, "top_p": 1.0}  # a trained folder's generation_config says nothing
    # the default is the full softmax at temperature 1: the same text as asking for it explicitly
    assert gen.generate_text("the king", max_new_tokens=8, seed=3) == \
        gen.generate_text("the king", max_new_tokens=8, seed=3, temperature=1.0, top_p=1.0)
    # temperature 0 is greedy: the argmax, whatever the seed
    greedy = {gen.generate_text("the king", max_new_tokens=6, seed=s, temperature=0) for s in range(4)}
    assert len(greedy) == 1
    prompt = [gen.tokenizer.bos_token_id] + gen.tokenizer.encode("the king", add_special_tokens=False)
    with torch.no_grad():
        argmax = gen.lm(torch.tensor([prompt])).logits[0, -1].argmax().item()
    assert first_token_counts(gen, temperature=0, n=4)[argmax] == 4
    # a lower temperature concentrates the samples; a small top-p keeps only the head of the distribution
    hot, cold = first_token_counts(gen, 1.0), first_token_counts(gen, 0.3)
    assert (cold > 0).sum() < (hot > 0).sum() and cold.max() > hot.max()
    with torch.no_grad():
        probs = gen.lm(torch.tensor([prompt])).logits[0, -1].softmax(-1)
    order = probs.argsort(descending=True)
    nucleus = set(order[:int((probs[order].cumsum(0) < 0.5).sum()) + 1].tolist())
    picked = set(first_token_counts(gen, 1.0, top_p=0.5).nonzero().flatten().tolist())
    assert picked <= nucleus and len(nucleus) < (hot > 0).sum()
    # batched and one-by-one generation sample alike
    texts, _ = gen.generate_texts(["the king"], max_new_tokens=6, seed=2, temperature=0.5)
    assert texts == [gen.generate_text("the king", max_new_tokens=6, seed=2, temperature=0.5)]


@pytest.mark.parametrize("kwargs, match", [({"temperature": -0.1}, "temperature must be in"),
                                           ({"temperature": 2.5}, "temperature must be in"),
                                           ({"top_p": 0}, "top_p must be in"),
                                           ({"top_p": 1.2}, "top_p must be in")])
def test_bad_sampling_settings_are_one_line_errors(ar_folder, kwargs, match):
    from cola_mm.evaluation.ar import ARGenerator

    gen = ARGenerator.from_pretrained(ar_folder)
    with pytest.raises(ValueError, match=match):
        gen.generate_text("the king", max_new_tokens=2, **kwargs)
    with pytest.raises(ValueError, match=match):
        ARGenerator.from_pretrained(ar_folder, **kwargs)


def test_export_stores_the_defaults_in_the_folder(ar_folder, tmp_path, capsys):
    from cola_mm.evaluation.ar import ARGenerator
    from cola_mm.evaluation.suite import sampling_settings

    dst = tmp_path / "ar_t07"
    main(["export", str(ar_folder), str(dst), "--text-temperature", "0.7", "--text-top-p", "0.9"])
    assert "temperature 0.7, top-p 0.9" in capsys.readouterr().out
    stored = json.loads((dst / "ar" / "generation_config.json").read_text())
    assert stored["do_sample"] is True and stored["temperature"] == 0.7 and stored["top_p"] == 0.9
    assert stored["top_k"] == 0
    gen = ARGenerator.from_pretrained(dst)
    assert sampling_settings(gen) == {"temperature": 0.7, "top_p": 0.9}
    # the exported folder samples what the source samples when asked for those settings
    src = ARGenerator.from_pretrained(ar_folder)
    assert gen.generate_text("the king", max_new_tokens=8, seed=1) == \
        src.generate_text("the king", max_new_tokens=8, seed=1, temperature=0.7, top_p=0.9)
    # transformers' own generate reads the same defaults from the folder
    from transformers import LlamaForCausalLM

    assert LlamaForCausalLM.from_pretrained(dst / "ar").generation_config.temperature == 0.7
    # exporting the export keeps what it does not change
    again = tmp_path / "ar_p08"
    main(["export", str(dst), str(again), "--text-top-p", "0.8"])
    assert ARGenerator.from_pretrained(again).sampling == {"temperature": 0.7, "top_p": 0.8}


@pytest.mark.parametrize("extra, match", [(["--text-temperature", "0"], "must be > 0"),
                                          (["--text-cfg", "3"], "--text-cfg apply to Cola-MM pipelines only"),
                                          (["--dtype", "fp16"], "--dtype apply to Cola-MM pipelines only")])
def test_export_of_an_ar_folder_refuses_what_it_cannot_store(ar_folder, tmp_path, capsys, extra, match):
    assert main(["export", str(ar_folder), str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bar, if any
    assert err.startswith("cola-mm: error: export:") and match in err, err
    assert not (tmp_path / "out" / "ar").exists()


def test_top_p_is_refused_for_a_pipeline(tiny_mm_pipeline, tmp_path, capsys):
    assert main(["export", str(tiny_mm_pipeline), str(tmp_path / "out"), "--text-top-p", "0.9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cola-mm: error: export:") and "--text-top-p applies to an AR model folder" in err, err
    with pytest.raises(SystemExit):
        main(["export", str(tiny_mm_pipeline), str(tmp_path / "out"), "--text-top-p", "1.5"])
    assert "top-p must be in (0, 1]" in capsys.readouterr().err


def test_generate_text_takes_an_ar_folder(ar_folder, capsys):
    from cola_mm.evaluation.ar import ARGenerator

    gen = ARGenerator.from_pretrained(ar_folder)
    assert main(["generate", "text", "--ckpt", str(ar_folder), "--prompt", "the king", "--max-new-tokens", "6",
                 "--temperature", "0.5", "--top-p", "0.9", "--seed", "4"]) in (0, None)
    out = capsys.readouterr().out
    assert out == "the king" + gen.generate_text("the king", max_new_tokens=6, seed=4, temperature=0.5,
                                                 top_p=0.9) + "\n"
    # greedy: one text whatever the seed
    texts = set()
    for seed in (0, 1):
        main(["generate", "text", "--ckpt", str(ar_folder), "--prompt", "the king", "--max-new-tokens", "6",
              "--temperature", "0", "--seed", str(seed)])
        texts.add(capsys.readouterr().out)
    assert len(texts) == 1


@pytest.mark.parametrize("extra, flag", [(["--steps", "4"], "--steps"), (["--cfg-scale", "3"], "--cfg-scale"),
                                         (["--lead-blocks", "1"], "--lead-blocks"), (["--solver", "heun"], "--solver"),
                                         (["--min-new-tokens", "2"], "--min-new-tokens")])
def test_generate_text_with_an_ar_folder_refuses_prior_options(ar_folder, capsys, extra, flag):
    assert main(["generate", "text", "--ckpt", str(ar_folder), "--prompt", "x", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cola-mm: error:") and f"an AR model (ar/, stage ar): {flag} do not apply" in err, err


def test_generate_text_refuses_top_p_for_a_pipeline(tiny_mm_pipeline, capsys):
    assert main(["generate", "text", "--ckpt", str(tiny_mm_pipeline), "--prompt", "x", "--top-p", "0.9"]) == 2
    assert "--top-p applies to an AR model folder" in capsys.readouterr().err
