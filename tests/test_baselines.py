"""Matched baselines (issue 19): the size/FLOP harness counts what its formula says, every family
loads through one door and the wrong family is a one-line error naming both, a run resumes only
its own model, and one suite run scores the prior and both baselines."""

from __future__ import annotations

import json

import pytest

from cola_mm.training import matching
from cola_mm.core.families import detect_family
from cola_mm.evaluation.generators import load_text_generator
from cola_mm.core.components import CheckpointError
from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig


def _cfg(datasets, run_dir, stage, model, **over):
    cfg = {"stage": stage, "run_dir": str(run_dir), "model": model,
           "data": {"train": [{"shards": str(datasets / "text" / "train")}], "tokenizer": str(datasets / "tokenizer"),
                    "seq_len": 32, "shuffle_buffer": 10},
           "batch_size": 4, "max_steps": 10, "log_every": 2, "val_batches": 1, "ckpt_every": 4}
    cfg.update(over)
    return TrainConfig.from_dict(cfg)


def test_matching_counts_parameters_and_flops_by_one_formula(tiny_datasets, tiny_mm_pipeline, tmp_path):
    from cola_mm.baselines.masked_diffusion import MaskedDiffusionConfig

    text_vae = tiny_mm_pipeline / "text_vae"
    prior = _cfg(tiny_datasets, tmp_path / "p", "prior", {"vae": str(tiny_mm_pipeline), "dit": {"preset": "tiny"}},
                 loss={"freeze_vae": True})
    ar = _cfg(tiny_datasets, tmp_path / "a", "ar", {"preset": "tiny"})
    mdm = _cfg(tiny_datasets, tmp_path / "m", "masked-diffusion", {"preset": "tiny"})
    rows = matching.compare([("prior", prior), ("ar", ar), ("mdm", mdm)])
    p, a, m = rows
    V = json.loads((text_vae / "config.json").read_text())["vocab_size"]
    # the masked diffusion LM by hand: 2 blocks of (attn 4·d², SwiGLU 3·d·64, 2 norms d) + final norm d
    d, layers = 32, 2
    assert m["non_embedding"] == layers * (4 * d * d + 3 * d * 64 + 2 * d) + d
    assert m["embedding"] == V * d and m["n_matmul"] == m["non_embedding"] + V * d  # the tied output layer
    assert m["flops_per_row"] == 6 * m["n_matmul"] * 32
    assert a["embedding"] == V * d and a["n_matmul"] == a["non_embedding"] + V * d  # LLaMA tied as well
    # the prior: its DiT at 2L positions, plus one forward of the frozen Text VAE's encoder
    assert p["tokens_per_row"] == 64 and p["vae_frozen"] is True
    assert p["flops_per_row"] == 6 * p["n_matmul"] * 64 + p["vae_flops_per_row"]
    assert p["vae_flops_per_row"] > 0 and p["other"] > 0 and p["embedding"] > 0  # segment-type table
    for r in rows:
        assert r["training_flops"] == r["flops_per_row"] * 4 * 10
        # the matched step count gives the first config's FLOPs (to rounding)
        assert r["matched_max_steps"] * r["flops_per_row"] * 4 == pytest.approx(p["training_flops"],
                                                                                rel=r["flops_per_row"] * 4 / p["training_flops"])
    joint = matching.count(prior.replace(loss={"freeze_vae": False}))
    assert joint["vae_flops_per_row"] > p["vae_flops_per_row"]
    assert "±5%" in matching.table(rows) and matching.table(rows).count("\n") == 3


def test_matching_cli_writes_json_and_refuses_a_multimodal_prior(tiny_datasets, tmp_path, capsys):
    cfg = tmp_path / "ar.yaml"
    cfg.write_text(json.dumps(_cfg(tiny_datasets, tmp_path / "a", "ar", {"preset": "tiny"}).to_dict()))
    out = tmp_path / "m.json"
    assert matching.main([str(cfg), str(cfg), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[1]["within_5_percent"] and rows[1]["flops_ratio"] == 1.0
    bad = tmp_path / "vae.yaml"
    bad.write_text(json.dumps(_cfg(tiny_datasets, tmp_path / "v", "vae-text", {"preset": "tiny"}).to_dict()))
    assert matching.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "counts the text families" in err and err.count("\n") == 1


def test_every_family_loads_through_one_door_and_the_wrong_one_names_both(tiny_mm_pipeline, tiny_baselines, tmp_path):
    from cola_mm.baselines.masked_diffusion import MaskedDiffusionGenerator
    from cola_mm.evaluation.ar import ARGenerator, load_ar
    from cola_mm.pipeline import ColaPipeline

    ar, mdm = tiny_baselines["ar"], tiny_baselines["masked_diffusion"]
    assert detect_family(tiny_mm_pipeline) == "cola_mm" and detect_family(ar) == "ar"
    assert detect_family(mdm) == "masked_diffusion" and detect_family(tmp_path) is None
    for folder, family in ((tiny_mm_pipeline, "cola_mm"), (ar, "ar"), (mdm, "masked_diffusion")):
        gen = load_text_generator(folder)
        assert gen.family == family
        assert isinstance(gen.generate_text("the king", max_new_tokens=4, steps=2, seed=0), str)
    for load, folder, found, wanted in ((ColaPipeline.from_pretrained, ar, "an AR model", "a Cola-MM pipeline"),
                                        (ColaPipeline.from_pretrained, mdm, "a masked diffusion model", "a Cola-MM"),
                                        (load_ar, mdm, "a masked diffusion model", "not an AR model"),
                                        (ARGenerator.from_pretrained, tiny_mm_pipeline, "a Cola-MM pipeline", "an AR"),
                                        (MaskedDiffusionGenerator.from_pretrained, ar, "an AR model", "a masked")):
        with pytest.raises(CheckpointError) as err:
            load(folder)
        assert found in str(err.value) and wanted in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="no model of a known family"):
        load_text_generator(tmp_path)


def test_an_ar_with_another_tokenizer_is_a_one_line_error(tiny_baselines, tmp_path):
    import shutil

    from cola_mm.evaluation.ar import load_ar

    folder = tmp_path / "ar_model"
    shutil.copytree(tiny_baselines["ar"], folder)
    cfg = json.loads((folder / "ar" / "config.json").read_text())
    cfg["vocab_size"] += 3
    (folder / "ar" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        load_ar(folder)
    assert f"vocabulary of {cfg['vocab_size']}" in str(err.value) and "\n" not in str(err.value)


def test_resume_refuses_another_family_or_model_naming_both(tiny_datasets, tmp_path):
    from cola_mm.training.loop import train

    run = tmp_path / "run"
    train(_cfg(tiny_datasets, run, "ar", {"preset": "tiny"}, max_steps=4), progress=False)
    with pytest.raises(ConfigError) as err:
        train(_cfg(tiny_datasets, run, "masked-diffusion", {"preset": "tiny"}, max_steps=8), resume=True,
              progress=False)
    assert "stage 'ar'" in str(err.value) and "stage 'masked-diffusion'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(_cfg(tiny_datasets, run, "ar", {"preset": "tiny", "num_hidden_layers": 3}, max_steps=8), resume=True,
              progress=False)
    assert '"preset": "tiny"' in str(err.value) and '"num_hidden_layers": 3' in str(err.value)
    assert "\n" not in str(err.value)
    train(_cfg(tiny_datasets, run, "ar", {"preset": "tiny"}, max_steps=8), resume=True, progress=False)  # same: fine


def test_one_suite_run_scores_the_prior_and_both_baselines(tiny_mm_pipeline, tiny_baselines, tiny_datasets, tmp_path):
    from cola_mm.evaluation import suite

    report = suite.run_suite([tiny_mm_pipeline, tiny_baselines["ar"], tiny_baselines["masked_diffusion"]],
                             data_root=tiny_datasets, probe_dir=None, seeds=(0, 1), limit=2, steps=2, text_prompts=3,
                             context_windows=2, caption_rows=2, jobs=("text", "context"), progress=False,
                             ar_dir=tiny_baselines["ar"])
    entries = list(report["checkpoints"].values())
    assert [e["family"] for e in entries] == ["cola_mm", "ar", "masked_diffusion"]
    for e in entries:
        s = e["text"]["summary"]
        assert s["corpus_word_rate"]["n"] == 2 and s["gen_ppl"]["mean"] > 1 and s["ngram_ppl"]["mean"] > 1
    assert entries[1]["sampling"] == {"temperature": 1.0, "top_p": 1.0}  # a trained AR folder: pure sampling
    assert isinstance(entries[0]["context"], dict)
    assert entries[1]["context"] == entries[2]["context"] == suite.NOT_AVAILABLE
    md = tmp_path / "r.md"
    suite.write_markdown(report, md, "cola-mm eval suite …", None)
    text = md.read_text()
    assert "masked_diffusion)" in text and "Text continuation" in text


def test_batched_generation_of_the_baselines(tiny_baselines):
    from cola_mm.baselines.masked_diffusion import MaskedDiffusionGenerator
    from cola_mm.evaluation.ar import ARGenerator

    prompts = ["the king said", "a lazy dog and the cat sat on the mat"]  # two lengths
    for gen in (ARGenerator.from_pretrained(tiny_baselines["ar"]),
                MaskedDiffusionGenerator.from_pretrained(tiny_baselines["masked_diffusion"])):
        texts, tokens = gen.generate_texts(prompts, max_new_tokens=6, seed=0)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts) and 0 <= tokens <= 12
        assert gen.generate_texts(prompts, max_new_tokens=6, seed=0) == (texts, tokens)  # seeded


def test_generate_text_takes_a_masked_diffusion_folder(tiny_baselines, capsys):
    """`cola-mm generate text --ckpt MDM`: --steps (in all) and --temperature reach its sampler,
    greedy ignores the seed, options of the other families and an impossible length are one line."""
    from cola_mm.baselines.masked_diffusion import MaskedDiffusionGenerator
    from cola_mm.cli import main

    folder = tiny_baselines["masked_diffusion"]
    argv = ["generate", "text", "--ckpt", str(folder), "--prompt", "the king", "--max-new-tokens", "6"]
    assert main(argv + ["--steps", "3", "--temperature", "0.5", "--seed", "4"]) in (0, None)
    gen = MaskedDiffusionGenerator.from_pretrained(folder, temperature=0.5)
    assert capsys.readouterr().out == "the king" + gen.generate_text("the king", max_new_tokens=6, steps=3, seed=4) + "\n"
    greedy = set()
    for seed in ("0", "1"):
        main(argv + ["--temperature", "0", "--seed", seed])
        greedy.add(capsys.readouterr().out)
    assert len(greedy) == 1
    for extra, flag in ((["--top-p", "0.9"], "--top-p"), (["--cfg-scale", "3"], "--cfg-scale"),
                        (["--solver", "heun"], "--solver")):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("cola-mm: error:") and f"a masked diffusion model (mdm/, stage masked-diffusion): " \
            f"{flag} do not apply to it (it takes --steps, --temperature" in err, err
    assert main(["generate", "text", "--ckpt", str(folder), "--prompt", "x", "--max-new-tokens", "100000"]) == 2
    assert "must be below the model's trained length" in capsys.readouterr().err


def test_matching_counts_a_multimodal_prior_on_its_own_rows(tiny_mm_pipeline, tiny_datasets, tmp_path):
    d = tiny_datasets
    cfg = _cfg(d, tmp_path / "mm", "prior", {"vae": str(tiny_mm_pipeline), "image_vae": str(tiny_mm_pipeline),
                                             "dit": {"preset": "tiny"}},
               loss={"freeze_vae": True},
               data={"train": [{"shards": str(d / "text" / "train")}], "pairs": [{"shards": str(d / "shapes" / "train")}],
                     "jobs": {"text_to_text": 1, "text_to_image": 1, "image_to_text": 1},
                     "tokenizer": str(d / "tokenizer"), "seq_len": 64, "shuffle_buffer": 10})
    r = matching.count(cfg, rows_sampled=30)
    assert 0 < r["images_per_row"] < 64 and 0 < r["text_positions_per_row"] <= 64
    assert r["vae_flops_per_row"] > 0 and r["flops_per_row"] == 6 * r["n_matmul"] * 128 + r["vae_flops_per_row"]
    text_only = matching.count(cfg.replace(model={k: v for k, v in cfg.model.items() if k != "image_vae"},
                                           data=cfg.data.replace(pairs=(), jobs={})))
    assert r["other"] > text_only["other"]  # the image VAE is counted apart too
