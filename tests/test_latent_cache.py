"""`cola-mm data encode`: latent shards the prior trains on without running the image VAE's
encoder; the same token distribution as live encoding; a cache of another VAE is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cola_mm.data.loader import ShardDataset
from cola_mm.data.pairs import LATENT_FIELD, ImagePairs, PairSource, pixels_from_image, read_latent
from cola_mm.data.shards import DataError, read_manifest
from cola_mm.vae_image.latent_cache import encode_shards
from cola_mm.vae_image.model import ImageVAE


@pytest.fixture(scope="module")
def cache(tiny_mm_pipeline, tiny_datasets, tmp_path_factory):
    vae = ImageVAE.from_pretrained(tiny_mm_pipeline)
    out = tmp_path_factory.mktemp("cache")
    entry = encode_shards(vae, tiny_datasets / "shapes" / "train", out, "train", batch_size=32, shard_size=64,
                          vae_path=str(tiny_mm_pipeline), progress=False)
    return {"vae": vae, "root": out, "entry": entry}


def test_cache_holds_the_posterior_of_every_image(cache, tiny_datasets):
    vae, entry = cache["vae"], cache["entry"]
    assert entry["count"] == 200 and len(entry["shards"]) == 4 and entry["skipped"] == {}
    assert read_manifest(cache["root"])["splits"]["train"]["vae_fingerprint"] == vae.fingerprint()
    cached = {s["__key__"]: s for s in ShardDataset(cache["root"] / "train", required=("txt",))}
    source = {s["__key__"]: s for s in ShardDataset(tiny_datasets / "shapes" / "train", required=("image", "txt"))}
    assert cached.keys() == source.keys()
    key = sorted(source)[7]
    latent = read_latent(cached[key][LATENT_FIELD], "x", vae.fingerprint())
    with torch.no_grad():
        mean, logvar = vae.encode(pixels_from_image(source[key]["image"], vae.config.image_size)[None])
    torch.testing.assert_close(latent, torch.stack([mean[0], logvar[0]]), atol=1e-5, rtol=0)
    assert cached[key]["txt"] == source[key]["txt"] and cached[key]["json"] == source[key]["json"]
    # the tokens a cached posterior gives are drawn from what live encoding draws from
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    live = vae.images_to_tokens(pixels_from_image(source[key]["image"], vae.config.image_size)[None], sample=True,
                                generator=g1)
    from_cache = vae.to_tokens(vae.sample(latent[None, 0], latent[None, 1], g2))
    torch.testing.assert_close(live, from_cache, atol=1e-5, rtol=0)


def test_pairs_from_a_cache_of_another_vae_are_refused(cache):
    other = "0" * 16
    pairs = ImagePairs([PairSource(str(cache["root"] / "train"))], 64, epochs=1, latent_fingerprint=other)
    with pytest.raises(DataError, match="made by another image VAE") as err:
        next(iter(pairs))
    assert "\n" not in str(err.value) and str(cache["root"] / "train") in str(err.value)
    ok = ImagePairs([PairSource(str(cache["root"] / "train"))], 64, epochs=1,
                    latent_fingerprint=cache["vae"].fingerprint())
    item = next(iter(ok))
    assert item["latent"].shape[0] == 2 and "pixels" not in item


def _prior_config(tiny_mm_pipeline, tiny_datasets, run, pairs, image_vae):
    from cola_mm.training.config import TrainConfig

    d = tiny_datasets
    return TrainConfig.from_dict({
        "stage": "prior", "run_dir": str(run), "optim": {"lr": 0.003, "warmup_steps": 2}, "batch_size": 4,
        "max_steps": 3, "log_every": 1, "val_batches": 1, "ckpt_every": 3, "val_every": 0,
        "model": {"vae": str(tiny_mm_pipeline), "image_vae": str(image_vae), "dit": {"preset": "tiny"}},
        "data": {"train": [{"shards": str(d / "text" / "train")}], "pairs": [{"shards": str(pairs)}],
                 "jobs": {"text_to_text": 1, "text_to_image": 1, "image_to_text": 1},
                 "tokenizer": str(d / "tokenizer"), "seq_len": 64, "shuffle_buffer": 10}})


def test_prior_trains_from_the_cache_without_the_encoder(cache, tiny_mm_pipeline, tiny_datasets, tmp_path,
                                                        monkeypatch):
    from cola_mm.training.loop import train

    def no_encoder(self, x):
        raise AssertionError("the image VAE encoder ran although the pairs are cached")

    monkeypatch.setattr(ImageVAE, "encode", no_encoder)
    out = train(_prior_config(tiny_mm_pipeline, tiny_datasets, tmp_path / "run", cache["root"] / "train",
                              tiny_mm_pipeline), progress=False)
    metrics = [json.loads(l) for l in (out.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics if "loss" in r] == [1, 2, 3]
    assert all(r["flow_image"] == r["flow_image"] for r in metrics if "flow_image" in r)  # finite, image rows ran
    assert any("flow_image" in r for r in metrics)
    assert cache["vae"].fingerprint() in (out / "README.md").read_text()


def test_training_on_a_cache_of_another_vae_is_one_line(cache, tiny_mm_pipeline, tiny_datasets, tmp_path):
    vae = ImageVAE.from_pretrained(tiny_mm_pipeline)
    with torch.no_grad():
        next(vae.parameters()).add_(0.01)  # another VAE: the same shapes, other weights
    vae.save_pretrained(tmp_path / "other_vae")
    cfg = _prior_config(tiny_mm_pipeline, tiny_datasets, tmp_path / "run", cache["root"] / "train",
                        tmp_path / "other_vae")
    import yaml

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "train", "--config", str(tmp_path / "run.yaml"),
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "made by another image VAE" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) > 20


def test_encode_cli(tiny_mm_pipeline, tiny_datasets, tmp_path):
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "data", "encode", "--vae", str(tiny_mm_pipeline),
                        "--data", str(tiny_datasets / "digits" / "val"), "--out", str(tmp_path / "c"), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "encoded 150 images" in r.stdout
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "data", "encode", "--vae", str(tiny_mm_pipeline),
                        "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "c2")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("cola-mm: error: shard path does not exist")
