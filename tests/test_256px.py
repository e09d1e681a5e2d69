"""256 px with a pretrained-style VAE: an SD-shaped diffusers AutoencoderKL (random weights, saved
by diffusers itself, no download; 8× down, 4 channels, 2×2 patches → 256 tokens, one image
block) under the prior, end to end: training from images and from a latent cache, text → image
and image → text at 256 px, the app."""

from __future__ import annotations

import pytest
import torch

from cola_mm.pipeline import ColaPipeline


@pytest.fixture(scope="module")
def sd_vae(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    ae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                       up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[16, 16, 32, 32],
                       layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=256)
    folder = tmp_path_factory.mktemp("sd_vae")
    ae.save_pretrained(str(folder))  # diffusers' own folder: config.json + diffusion_pytorch_model.safetensors
    return folder


@pytest.fixture(scope="module")
def shapes_256(tmp_path_factory):
    from cola_mm.cli import main

    root = tmp_path_factory.mktemp("shapes256")
    assert main(["data", "shapes", "--out", str(root), "--count", "24", "--size", "256"]) == 0
    return root


@pytest.fixture(scope="module")
def pipe_256(sd_vae, shapes_256, tiny_datasets, tmp_path_factory):
    from cola_mm.training.config import TrainConfig
    from cola_mm.training.loop import train

    d, root = tiny_datasets, tmp_path_factory.mktemp("p256")
    base = {"optim": {"lr": 0.003, "warmup_steps": 2}, "batch_size": 2, "log_every": 1, "val_batches": 1,
            "val_every": 0, "max_steps": 3, "ckpt_every": 3}
    txt = train(TrainConfig.from_dict({
        **base, "stage": "vae-text", "run_dir": str(root / "txt"), "model": {"preset": "tiny", "d_latent": 16},
        "data": {"train": [{"shards": str(d / "text" / "train")}], "tokenizer": str(d / "tokenizer"), "seq_len": 32,
                 "shuffle_buffer": 10}}), progress=False)
    prior = {**base, "stage": "prior", "model": {"vae": str(txt), "image_vae": str(sd_vae), "dit": {"preset": "tiny"}},
             "loss": {"cond_dropout": 0.2},
             "data": {"train": [{"shards": str(d / "text" / "train")}],
                      "pairs": [{"shards": str(shapes_256 / "train")}],
                      "jobs": {"text_to_text": 1, "text_to_image": 1, "image_to_text": 1},
                      "tokenizer": str(d / "tokenizer"), "seq_len": 320, "shuffle_buffer": 10}}
    out = train(TrainConfig.from_dict({**prior, "run_dir": str(root / "prior")}), progress=False)
    return {"folder": out, "prior": prior, "root": root}


def test_sd_shaped_vae_gives_one_block_of_256_tokens(sd_vae):
    from cola_mm.vae_image.model import ImageVAE

    vae = ImageVAE.from_pretrained(sd_vae)
    c = vae.config
    assert (c.image_size, c.downsample, c.latent_channels, c.patch_size, c.grid, c.n_tokens, c.token_dim) == \
        (256, 8, 4, 2, 16, 256, 16)
    tokens = vae.images_to_tokens(torch.zeros(1, 3, 256, 256))
    assert tokens.shape == (1, 256, 16)


def test_256px_jobs_end_to_end(pipe_256):
    pipe = ColaPipeline.from_pretrained(pipe_256["folder"])
    images = pipe.generate_image("a large red circle in the center", steps=2, n=2, seed=1)
    assert [im.size for im in images] == [(256, 256)] * 2
    assert pipe.generate_image("a large red circle in the center", steps=2, n=2, seed=1)[1].tobytes() == \
        images[1].tobytes()
    captions = pipe.caption(images, steps=2, max_tokens=6)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    big = images[0].resize((1024, 700))  # any input size is fitted to 256 px
    assert isinstance(pipe.caption([big], steps=2, max_tokens=4)[0], str)


def test_256px_prior_trains_from_a_latent_cache(pipe_256, sd_vae, shapes_256):
    from cola_mm.training.config import TrainConfig
    from cola_mm.training.loop import train
    from cola_mm.vae_image.latent_cache import encode_shards
    from cola_mm.vae_image.model import ImageVAE

    root = pipe_256["root"]
    entry = encode_shards(ImageVAE.from_pretrained(sd_vae), shapes_256 / "train", root / "cache", progress=False)
    assert entry["count"] == 24 and entry["image_size"] == 256
    cfg = {**pipe_256["prior"], "run_dir": str(root / "prior_cached")}
    cfg["data"] = {**cfg["data"], "pairs": [{"shards": str(root / "cache" / "train")}]}
    out = train(TrainConfig.from_dict(cfg), progress=False)
    pipe = ColaPipeline.from_pretrained(out)
    assert pipe.generate_image("a red circle", steps=1)[0].size == (256, 256)


def test_app_at_256px(pipe_256, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import REPO

    monkeypatch.setenv("COLA_MM_CKPT", str(pipe_256["folder"]))
    at = AppTest.from_file(str(REPO / "apps" / "app.py"), default_timeout=180)
    at.run()
    at.text_input(key="t2i_prompt").input("a red circle")
    at.slider(key="t2i_steps").set_value(1)
    at.slider(key="t2i_n").set_value(1)
    at.button(key="t2i_go").click().run()
    assert not at.exception, at.exception
    assert len(at.image) == 1
    assert "256 px" in " ".join(m.value for m in at.sidebar.markdown)
