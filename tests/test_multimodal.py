"""Image VAE, the unified segment layout, mixed-job training rows and the image pipelines (tiny, CPU)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from cola_mm.core.components import CheckpointError
from cola_mm.core.images import ImageInputError
from cola_mm.core.sequence import (Segment, drop_condition, image_to_text, layout_row, stack_layouts, text_to_image,
                              text_to_text)
from cola_mm.core.sequence import SEGMENT_TYPES
from cola_mm.pipeline import ColaPipeline
from cola_mm.prior.dit import DiT, preset as dit_preset
from cola_mm.prior.masks import dense_from_mask_mod, packed_two_copy_mask, packed_two_copy_mask_mod
from cola_mm.prior.sampler import BlockSampler, SamplerConfig
from cola_mm.prior.training import packed_two_copy_forward
from cola_mm.vae_image.model import ImageVAE, patchify, preset as vae_preset, unpatchify

from conftest import REPO

G = (4, 4)  # the image token grid at 64 px with the defaults


# --------------------------------------------------------------------------- layout and masks


def test_layout_blocks_positions_types_and_loss_from_segments():
    row = layout_row([text_to_image(20, G), image_to_text(G, 32, n_loss=10)], length=120)
    # sample 0: prompt text 20 latents = blocks 0 (16) and 1 (4); image = block 2
    assert row.block_ids[:36].tolist() == [0] * 16 + [1] * 4 + [2] * 16
    # sample 1: image = block 3, caption 32 latents = blocks 4, 5; padding = its own block
    assert row.block_ids[36:84].tolist() == [3] * 16 + [4] * 16 + [5] * 16
    assert set(row.block_ids[84:].tolist()) == {6} and set(row.sample_ids[84:].tolist()) == {2}
    assert row.sample_ids[:36].eq(0).all() and row.sample_ids[36:84].eq(1).all()
    # 1-D positions for text, (start, start+row, start+col) for image patches
    assert row.positions[:20].tolist() == [[p, p, p] for p in range(20)]
    assert row.positions[20:36].tolist() == [[20, 20 + i, 20 + j] for i in range(4) for j in range(4)]
    assert row.positions[36:52].tolist() == [[0, i, j] for i in range(4) for j in range(4)]
    assert row.positions[52:84, 0].tolist() == list(range(4, 36))  # text after an image starts at max(rows, cols)
    assert row.segments[:20].eq(SEGMENT_TYPES["prompt_text"]).all()
    assert row.segments[20:36].eq(SEGMENT_TYPES["image"]).all() and row.segments[36:52].eq(SEGMENT_TYPES["image"]).all()
    assert row.segments[52:84].eq(SEGMENT_TYPES["text"]).all() and row.segments[84:].eq(SEGMENT_TYPES["pad"]).all()
    # loss only on targets: the image of sample 0, the first 10 caption latents of sample 1
    assert row.loss_weight.nonzero().flatten().tolist() == list(range(20, 36)) + list(range(52, 62))
    assert row.is_image.nonzero().flatten().tolist() == list(range(20, 52))


def test_segment_checks():
    with pytest.raises(ValueError, match="grid"):
        Segment("image", "target", 16, grid=(3, 4))
    with pytest.raises(ValueError, match="role"):
        Segment("text", "answer", 4)
    with pytest.raises(ValueError, match="row holds"):
        layout_row([text_to_text(40)], length=32)
    assert [s.role for s in drop_condition(text_to_image(8, G))] == ["target"]


def test_masks_image_bidirectional_text_block_causal_samples_apart():
    row = layout_row([text_to_image(20, G), image_to_text(G, 32)], length=96)
    b = stack_layouts([row])
    m = packed_two_copy_mask(b["block_ids"], b["sample_ids"])[0]  # (2L, 2L)
    L = 96
    noisy = lambda i: L + i  # noqa: E731
    img = range(20, 36)
    # an image block is bidirectional inside (noisy and clean copies), and sees its whole prompt
    assert all(m[noisy(q), noisy(k)] for q in img for k in img)
    assert all(m[q, k] for q in img for k in img)
    assert all(m[noisy(q), k] for q in img for k in range(20))
    assert not any(m[noisy(q), k] for q in img for k in img)  # not its own clean copy
    # text prompt blocks are block-causal: block 0 never sees block 1
    assert not any(m[q, k] for q in range(16) for k in range(16, 20))
    # a generated text block never sees later segments or later blocks, in either copy
    cap0, cap1 = range(52, 68), range(68, 84)
    assert not any(m[noisy(q), k] or m[noisy(q), noisy(k)] for q in cap0 for k in cap1)
    assert all(m[noisy(q), k] for q in cap1 for k in list(range(36, 52)) + list(cap0))  # image + earlier block
    # samples never see each other; padding only itself
    assert not m[:36, 36:84].any() and not m[36:84, :36].any()
    assert not m[noisy(40), 10] and not m[noisy(10), 40]
    assert torch.equal(m, dense_from_mask_mod(packed_two_copy_mask_mod(b["block_ids"], b["sample_ids"]), 2 * L, 2 * L))


def _tiny_dit(seed=0):
    torch.manual_seed(seed)
    dit = DiT(dit_preset("tiny", d_latent=8))
    for p in dit.parameters():  # adaLN-Zero starts at identity: randomise so the check has teeth
        torch.nn.init.normal_(p, std=0.2)
    return dit.eval()


@pytest.mark.parametrize("job", ["text_to_image", "image_to_text"])
def test_training_forward_equals_sampler_velocity_for_both_jobs(job):
    """2L velocity of the generated block == the sampler's velocity given the cached context."""
    dit = _tiny_dit()
    sample = text_to_image(20, G) if job == "text_to_image" else image_to_text(G, 16)
    row = layout_row([sample])
    b = {k: v[None] for k, v in stack_layouts([row]).items()}
    b = {k: v[0] for k, v in b.items()}
    L = row.block_ids.shape[0]
    z0, zt = torch.randn(1, L, 8), torch.randn(1, L, 8)
    t = torch.zeros(1, L)
    target = slice(L - 16, L)
    t[:, target] = 0.43
    with torch.no_grad():
        v_train = packed_two_copy_forward(dit, z0, zt, t, b["positions"], b["segments"], b["block_ids"],
                                          b["sample_ids"])[:, target]
        for use_cache in (True, False):
            sampler = BlockSampler(dit, SamplerConfig(use_cache=use_cache))
            ctx = slice(0, L - 16)
            sampler.start(z0[:, ctx], b["positions"][:, ctx], b["segments"][:, ctx], b["block_ids"][:, ctx],
                          torch.ones(1, L - 16, dtype=torch.bool))
            v = sampler.velocity(zt[:, target], 0.43, b["positions"][:, target], b["segments"][:, target])
            assert torch.allclose(v, v_train, atol=1e-5), (job, use_cache, (v - v_train).abs().max())
        # CFG's unconditional pass = the block alone = the 2L forward of the sample without its prompt
        alone = layout_row([drop_condition(sample)]) if job == "text_to_image" else None
        if alone is not None:
            a = stack_layouts([alone])
            v_alone = packed_two_copy_forward(dit, z0[:, target], zt[:, target], t[:, target], row.positions[None, target],
                                              a["segments"], a["block_ids"], a["sample_ids"])
            v_u = sampler.unconditional_velocity(zt[:, target], 0.43, b["positions"][:, target], b["segments"][:, target])
            assert torch.allclose(v_u, v_alone, atol=1e-5)


# --------------------------------------------------------------------------- image VAE


def test_patchify_round_trip_and_token_order():
    z = torch.randn(2, 4, 8, 8)
    tokens = patchify(z, 2)
    assert tokens.shape == (2, 16, 16)
    assert torch.equal(tokens[0, 1], z[0, :, 0:2, 2:4].flatten())  # token 1 = row 0, column 1
    assert torch.equal(unpatchify(tokens, 2, 4, (4, 4)), z)
    vae = ImageVAE(vae_preset("tiny")).with_latent_stats(0.3, 2.0)
    assert torch.allclose(vae.from_tokens(vae.to_tokens(z)), z, atol=1e-6)


def test_latent_noise_is_relative_to_the_latents_scale_and_off_by_default():
    from cola_mm.vae_image.losses import ImageVAELossConfig, add_latent_noise, image_vae_loss
    from cola_mm.vae_image.model import ImageVAE, ImageVAEConfig

    z = torch.randn(64, 4, 8, 8)
    for scale in (0.1, 10.0):  # the same relative perturbation whatever the latents' scale
        noisy = add_latent_noise(scale * z, 0.5, torch.Generator().manual_seed(0))
        rel = (noisy - scale * z).std() / (scale * z).std()
        assert 0.2 < rel < 0.4, rel  # E[σ²] = 0.5²/3 → rms ≈ 0.29
    per_image = (add_latent_noise(z, 0.5, torch.Generator().manual_seed(1)) - z).flatten(1).std(1)
    assert per_image.max() > 3 * per_image.min()  # σ is drawn per image
    with pytest.raises(ValueError, match="latent_noise"):
        ImageVAELossConfig(latent_noise=-0.1)

    torch.manual_seed(0)
    vae = ImageVAE(ImageVAEConfig(block_out_channels=(8, 8), norm_num_groups=4, image_size=16, patch_size=1))
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    loss = lambda cfg: image_vae_loss(vae, x, cfg, torch.Generator().manual_seed(0))[0]
    assert loss(ImageVAELossConfig()) == loss(ImageVAELossConfig(latent_noise=0.0))
    noisy = loss(ImageVAELossConfig(latent_noise=1.0))
    assert noisy != loss(ImageVAELossConfig())
    noisy.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in vae.named_parameters() if "encoder" in n
               and p.requires_grad and "conv" in n)


def test_our_vae_loads_with_diffusers_and_a_diffusers_folder_loads_in_ours(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    ours = ImageVAE(vae_preset("tiny")).with_latent_stats(0.1, 1.5).eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs = AutoencoderKL.from_pretrained(str(tmp_path / "ours")).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(theirs(x, sample_posterior=False).sample, ours.decode(ours.encode(x)[0]), atol=1e-5)
    assert (theirs.config.scaling_factor, theirs.config.shift_factor) == (1.5, 0.1)
    # a folder written by diffusers itself (SD-style config, no cola_mm.json)
    sd = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                       block_out_channels=(8, 16, 16, 16), norm_num_groups=8, latent_channels=4, sample_size=64,
                       scaling_factor=0.18215)
    sd.save_pretrained(str(tmp_path / "sd"))
    loaded = ImageVAE.from_pretrained(tmp_path / "sd")
    assert (loaded.config.patch_size, loaded.config.image_size, loaded.config.token_dim) == (2, 64, 16)
    assert loaded.config.latent_scale == pytest.approx(0.18215) and loaded.config.latent_shift == 0.0
    with torch.no_grad():
        # float32 rounding only (|x| ~ 3): the torch backend runs attention through SDPA
        assert torch.allclose(loaded.decode(loaded.encode(x)[0]), sd(x, sample_posterior=False).sample, atol=1e-4)
    (tmp_path / "notvae").mkdir()
    (tmp_path / "notvae" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(CheckpointError, match="expected a diffusers AutoencoderKL"):
        ImageVAE.from_pretrained(tmp_path / "notvae")


def _diffusers_vae(seed: int, **config):
    """A diffusers AutoencoderKL with every parameter (norms and biases too) randomised."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    levels = len(config["block_out_channels"])
    ae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * levels,
                       up_block_types=("UpDecoderBlock2D",) * levels, **config).eval()
    with torch.no_grad():
        for param in ae.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return ae


@pytest.mark.parametrize("config", [
    dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=8, mid_block_add_attention=False),
    dict(block_out_channels=(8, 16, 16), norm_num_groups=4, layers_per_block=2, latent_channels=8,
         use_post_quant_conv=False, sample_size=32, scaling_factor=0.5, shift_factor=0.2),
], ids=["tiny-no-attention", "sd-like-attention"])
def test_torch_backend_matches_diffusers_both_ways(tmp_path, config):
    from diffusers import AutoencoderKL
    from cola_mm.vae_image.kl import KLAutoencoder

    theirs = _diffusers_vae(1, **config)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours = ImageVAE.from_pretrained(tmp_path / "theirs", backend="torch").eval()
    assert isinstance(ours.ae, KLAutoencoder)
    size = config.get("sample_size", 64)
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        posterior = theirs.encode(x).latent_dist
        mean, logvar = ours.encode(x)
        assert torch.allclose(mean, posterior.mean, atol=1e-5)
        assert torch.allclose(logvar, posterior.logvar, atol=1e-5)
        assert torch.allclose(ours.decode(mean), theirs.decode(mean).sample, atol=1e-4)
    assert (ours.config.latent_scale, ours.config.latent_shift) == (config.get("scaling_factor", 0.18215),
                                                                     config.get("shift_factor", 0.0))
    # saved by the torch backend (fp32 and fp16) → read back by diffusers itself
    ours.with_latent_stats(0.3, 1.25).save_pretrained(tmp_path / "ours")
    ours.save_pretrained(tmp_path / "ours16", dtype=torch.float16)
    back = AutoencoderKL.from_pretrained(str(tmp_path / "ours")).eval()
    back16 = AutoencoderKL.from_pretrained(str(tmp_path / "ours16"), torch_dtype=torch.float32).eval()
    assert (back.config.shift_factor, back.config.scaling_factor) == (0.3, 1.25)
    with torch.no_grad():
        assert torch.allclose(back(x, sample_posterior=False).sample, theirs(x, sample_posterior=False).sample,
                              atol=1e-4)
        assert torch.allclose(back16(x, sample_posterior=False).sample, theirs(x, sample_posterior=False).sample,
                              atol=5e-2)


def test_backend_choice_and_fallback(tmp_path):
    _diffusers_vae(2, block_out_channels=(8, 16), norm_num_groups=8, act_fn="gelu").save_pretrained(str(tmp_path / "g"))
    assert type(ImageVAE.from_pretrained(tmp_path / "g").ae).__name__ == "AutoencoderKL"  # auto → diffusers
    with pytest.raises(CheckpointError, match="torch backend cannot load this VAE .*act_fn gelu"):
        ImageVAE.from_pretrained(tmp_path / "g", backend="torch")
    with pytest.raises(ValueError, match="backend must be"):
        ImageVAE.from_pretrained(tmp_path / "g", backend="jax")


def test_loading_the_bundled_pipeline_imports_neither_diffusers_nor_dynamo():
    """The app's cold start: diffusers' import alone costs ~5 s on 2 cores (issue 6)."""
    code = ("import sys; from cola_mm.pipeline import ColaPipeline; "
            "p = ColaPipeline.from_pretrained('checkpoints/demo'); "
            "assert type(p.image_vae.ae).__name__ == 'KLAutoencoder'; "
            "print(sorted(m for m in ('diffusers', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- rows, dropout, resume


def _rows(datasets, dropout=0.1, seed=0, jobs=None, prompts="original", targets="original", digit_warp=(0.0, 0.0)):
    from cola_mm.data.multimodal import MultimodalRows
    from cola_mm.data.pairs import ImagePairs, PairSource
    from cola_mm.data.windows import Source, TokenWindows
    from cola_mm.vae_text.tokenizer import load_tokenizer

    tok = load_tokenizer(datasets / "tokenizer")
    windows = TokenWindows([Source(str(datasets / "text" / "train"))], tok, 64, seed=seed, shuffle_buffer=10)
    pairs = ImagePairs([Source(str(datasets / "shapes" / "train"), 2),
                        PairSource(str(datasets / "digits" / "train"), 1, *digit_warp)],
                       64, seed=seed, shuffle_buffer=10)
    jobs = jobs or {"text_to_text": 1, "text_to_image": 1, "image_to_text": 1}
    return MultimodalRows(windows, pairs, tok, jobs, 64, 4, 16, 32, dropout, seed=seed,
                          caption_prompts=prompts, caption_targets=targets)


def test_canonical_captions_parse_back_one_phrasing_per_scene():
    import random

    from cola_mm.data.shapes import grade_caption as grade_shapes_caption
    from cola_mm.data.captions import canonical_caption
    from cola_mm.data.digits import parse_digit_caption
    from cola_mm.data.shapes import caption_attributes, generate_sample, sample_scene
    from cola_mm.data.shards import DataError

    rng = random.Random(0)
    seen: dict[str, str] = {}
    for i in range(300):
        scene = sample_scene(rng, "novel" if i % 3 == 0 else "train", 64, max_objects=2)
        meta = {**scene, "dataset": "shapes"}
        text = canonical_caption(meta)
        assert grade_shapes_caption(text, scene)["all"], text
        assert text == text.strip().lower() and not text.endswith(".")
        key = json.dumps(caption_attributes(scene), sort_keys=True)
        assert seen.setdefault(key, text) == text  # the same facts always get the same words
    assert len(set(seen.values())) == len(seen)  # and different facts different words
    # a real shard sample's json works, whatever phrasing its txt drew
    _, caption, meta = generate_sample(0, "test", 5)
    assert canonical_caption(json.loads(json.dumps(meta))) == canonical_caption({**meta, "caption": "x"})
    for label in range(10):
        assert parse_digit_caption(canonical_caption({"dataset": "digits", "label": label})) == label
    for bad, msg in ((None, "json"), ({"dataset": "laion"}, "no canonical caption"),
                     ({"dataset": "shapes"}, "lacks"), ({"dataset": "digits", "label": 12}, "0..9")):
        with pytest.raises(DataError, match=msg):
            canonical_caption(bad)


def _caption_texts(item, tok):
    """(job, decoded caption text) for every caption segment of a row item."""
    by_start = dict(item["captions"])
    roles = {start: seg.role for _, start, _, seg in item["layout"].spans if seg.modality == "text"}
    out = []
    for start, ids in by_start.items():
        ids = ids.tolist()
        text = tok.decode(ids[1:ids.index(tok.eos_token_id)])
        out.append(("text_to_image" if roles[start] == "prompt" else "image_to_text", text))
    return out


def test_rows_take_canonical_text_per_role(tiny_datasets):
    from cola_mm.data.captions import canonical_caption
    from cola_mm.data.loader import ShardDataset
    from cola_mm.data.shards import DataError
    from cola_mm.vae_text.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_datasets / "tokenizer")
    canon, original = set(), set()
    for name in ("shapes", "digits"):
        for s in ShardDataset(str(tiny_datasets / name / "train"), required=("txt", "json"), epochs=1):
            for texts, text in ((canon, canonical_caption(s["json"])), (original, s["txt"])):
                texts.add(tok.decode(tok.encode(text, add_special_tokens=False)[:30]))  # as cut to 32 tokens
    jobs = {"text_to_image": 1, "image_to_text": 1}

    def texts(**styles):
        it = iter(_rows(tiny_datasets, dropout=0.0, jobs=jobs, **styles))
        return [t for _ in range(60) for t in _caption_texts(next(it), tok)]

    got = texts(targets="canonical")
    targets = [t for job, t in got if job == "image_to_text"]
    prompts = [t for job, t in got if job == "text_to_image"]
    assert len(targets) > 20 and len(prompts) > 20
    assert all(t in canon for t in targets)
    assert all(t in original for t in prompts) and sum(t not in canon for t in prompts) > len(prompts) // 2
    got = texts(prompts="canonical", targets="canonical")
    assert all(t in canon for _, t in got)
    got = texts()
    assert all(t in original for _, t in got) and sum(t not in canon for _, t in got) > len(got) // 2
    with pytest.raises(DataError, match="caption_targets"):
        _rows(tiny_datasets, targets="canon")


def _roles(item):
    return [(seg.modality, seg.role) for _, _, _, seg in item["layout"].spans]


def test_condition_dropout_rate(tiny_datasets):
    jobs = {"text_to_image": 1, "image_to_text": 1}
    for p, lo, hi in ((0.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.35, 0.65)):
        it = iter(_rows(tiny_datasets, dropout=p, jobs=jobs))
        samples = []
        for _ in range(40):
            item = next(it)
            by_sample: dict[int, list] = {}
            for k, _, _, seg in item["layout"].spans:
                by_sample.setdefault(k, []).append(seg)
            samples += list(by_sample.values())
        kept = sum(any(s.role == "prompt" for s in segs) for segs in samples) / len(samples)
        assert lo <= kept <= hi, (p, kept, len(samples))
        # a dropped sample is just its target: an image alone or a caption alone
        assert all(len(segs) in (1, 2) for segs in samples)


@pytest.mark.parametrize("digit_warp", [(0.0, 0.0), (10.0, 0.1)], ids=["plain", "digits-warped"])
def test_rows_mix_jobs_and_resume_exactly(tiny_datasets, digit_warp):
    from cola_mm.data.multimodal import collate_rows

    ds = _rows(tiny_datasets, digit_warp=digit_warp)
    it = iter(ds)
    first = [next(it) for _ in range(7)]
    state = json.loads(json.dumps(ds.state_dict()))  # must survive JSON (the loader state file)
    expected = [next(it) for _ in range(6)]
    kinds = {tuple(r for r in _roles(x)) for x in first + expected}
    assert any(("text", "target") in k and len(k) == 1 for k in kinds)  # text windows
    assert any(("image", "target") in k for k in kinds) and any(("image", "prompt") in k for k in kinds)
    again = _rows(tiny_datasets, digit_warp=digit_warp)
    again.load_state_dict(state)
    got = [x for _, x in zip(range(6), iter(again))]
    for a, b in zip(expected, got):
        assert _roles(a) == _roles(b)
        assert torch.equal(a["layout"].positions, b["layout"].positions)
        assert (a["window"] is None) == (b["window"] is None)
        if a["window"] is not None:
            assert torch.equal(a["window"], b["window"])
        assert all(torch.equal(p, q) for (_, p), (_, q) in zip(a["images"], b["images"]))
    batch = collate_rows(expected)
    assert batch["block_ids"].shape == (6, 64) and batch["positions"].shape == (6, 64, 3)
    assert batch["pixels"].shape[0] == batch["image_at"].shape[0] == sum(len(x["images"]) for x in expected)


def test_warped_pairs_warp_only_their_own_source(tiny_datasets):
    """A warped digits source rotates/zooms its own images, each differently; the shapes (whose
    captions name cells and sizes) come out bit-identical, in the same order, as with no warp."""
    from cola_mm.data.pairs import ImagePairs, PairSource

    def draw(warp):
        ds = ImagePairs([PairSource(str(tiny_datasets / "shapes" / "train"), 2),
                         PairSource(str(tiny_datasets / "digits" / "train"), 1, *warp)], 64, seed=5, shuffle_buffer=10)
        return [x for _, x in zip(range(40), iter(ds))]

    plain, warped = draw((0.0, 0.0)), draw((10.0, 0.1))
    assert [x["txt"] for x in plain] == [x["txt"] for x in warped]  # same samples, same order
    digit = [("label" in (x["json"] or {})) for x in plain]
    assert 0 < sum(digit) < len(digit)
    for a, b, is_digit in zip(plain, warped, digit):
        if is_digit:
            assert not torch.equal(a["pixels"], b["pixels"])
            assert b["pixels"].shape == a["pixels"].shape and b["pixels"].abs().max() <= 1.0
            # a small warp moves ink but keeps the background (edges replicated) and roughly the ink mass
            assert torch.equal(b["pixels"][:, 0, 0], a["pixels"][:, 0, 0])
            ink_a, ink_b = (1 - a["pixels"]).sum(), (1 - b["pixels"]).sum()
            assert abs(float(ink_b / ink_a) - 1) < 0.35
        else:
            assert torch.equal(a["pixels"], b["pixels"])
    again = draw((10.0, 0.1))  # seeded: a second pass draws the same warps
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(warped, again))


def test_warps_are_for_pair_sources_only():
    from cola_mm.core.config import ConfigError
    from cola_mm.training.config import DataConfig, SourceConfig

    pairs = DataConfig.from_dict({"train": [{"shards": "t"}], "pairs": [{"shards": "d", "warp_degrees": 10,
                                                                          "warp_scale": 0.1}]})
    assert pairs.pairs[0].warps and not pairs.train[0].warps
    with pytest.raises(ConfigError, match="data.pairs sources only"):
        DataConfig.from_dict({"train": [{"shards": "t", "warp_degrees": 5}]})
    with pytest.raises(ConfigError, match="data.pairs sources only"):
        DataConfig.from_dict({"train": [{"shards": "t"}], "val_pairs": [{"shards": "v", "warp_scale": 0.1}]})
    from cola_mm.data.pairs import ImagePairs, PairSource
    from cola_mm.data.shards import DataError

    with pytest.raises(DataError, match="warp_degrees and warp_scale"):
        ImagePairs([PairSource("d", 1.0, -5.0)])
    for bad in ({"warp_degrees": -1}, {"warp_degrees": 90}, {"warp_scale": 0.5}):
        with pytest.raises(ConfigError, match="warp_"):
            SourceConfig.from_dict({"shards": "d", **bad})


# --------------------------------------------------------------------------- training + pipelines


@pytest.fixture(scope="module")
def mm_pipeline(tiny_mm_pipeline):
    return tiny_mm_pipeline


def test_stages_export_and_log(mm_pipeline):
    assert sorted(p.name for p in mm_pipeline.iterdir()) == ["README.md", "dit", "image_vae", "pipeline.json",
                                                             "text_vae", "tokenizer"]
    card = (mm_pipeline / "README.md").read_text()  # the model card the app shows: parts and training data
    assert "Text VAE" in card and "DiT prior" in card and "image VAE" in card
    assert "shapes/train` (50%)" in card and "digits/train` (50%)" in card and "text_to_image 1" in card
    metrics = [json.loads(l) for l in (mm_pipeline.parent / "metrics.jsonl").read_text().splitlines()]
    assert {"flow_image", "flow_text", "vae_recon"} <= set().union(*[r.keys() for r in metrics if "loss" in r])
    assert {"val_flow_image", "val_flow_text"} <= metrics[-1].keys()
    img_metrics = [json.loads(l) for l in (mm_pipeline.parent.parent / "img" / "metrics.jsonl").read_text().splitlines()]
    assert "val_psnr" in img_metrics[-1]
    pipe_cfg = json.loads((mm_pipeline / "pipeline.json").read_text())
    assert pipe_cfg["jobs"] == ["text_to_text", "text_to_image", "image_to_text"]


def test_generate_image_and_caption_round_trip_and_seeds(mm_pipeline, tmp_path):
    pipe = ColaPipeline.from_pretrained(mm_pipeline)
    images = pipe.generate_image("a small red circle in the top left corner", steps=3, seed=5, n=3)
    assert len(images) == 3 and all(im.size == (64, 64) and im.mode == "RGB" for im in images)
    assert images[0].tobytes() != images[1].tobytes()  # n images use seeds 5, 6, 7
    caps = pipe.caption(images[:2], steps=3, seed=1)
    assert len(caps) == 2 and all(isinstance(c, str) for c in caps)
    pipe.save_pretrained(tmp_path / "copy")
    again = ColaPipeline.from_pretrained(tmp_path / "copy")
    images2 = again.generate_image("a small red circle in the top left corner", steps=3, seed=5, n=3)
    assert [im.tobytes() for im in images] == [im.tobytes() for im in images2]
    assert again.caption(images[:2], steps=3, seed=1) == caps
    # with text rounding, a batch of captions still gives each image the caption it gets alone
    rounded = pipe.caption(images[:2], steps=3, seed=1, rounding=True)
    assert [pipe.caption(images[i], steps=3, seed=1 + i, rounding=True)[0] for i in range(2)] == rounded
    assert again.generate_text("the king", max_new_tokens=8, steps=2) == pipe.generate_text("the king", max_new_tokens=8, steps=2)
    # batching prompts of different lengths gives each the image it gets alone
    long_prompt = "a large blue square at the bottom right of the picture next to nothing at all really"
    both = pipe.generate_image(["red", long_prompt], steps=2, seed=0)
    alone = pipe.generate_image(long_prompt, steps=2, seed=1)
    assert both[1].tobytes() == alone[0].tobytes()


def test_caption_takes_odd_images_and_refuses_bad_ones(mm_pipeline, tmp_path):
    pipe = ColaPipeline.from_pretrained(mm_pipeline)
    rgba = Image.new("RGBA", (30, 50), (255, 0, 0, 128))
    gray16 = Image.new("I;16", (100, 80), 40000)
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))
    pal = Image.new("P", (9, 9), 3)
    buf = io.BytesIO()
    Image.new("RGB", (70, 64), (0, 0, 255)).save(buf, format="JPEG")
    caps = pipe.caption([rgba, gray16, cmyk, pal, buf.getvalue()], steps=2)
    assert len(caps) == 5
    assert len(pipe.caption(io.BytesIO(buf.getvalue()), steps=2)) == 1  # one file object = one image
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageInputError, match="not an image"):
        pipe.caption([str(bad)], steps=2)


def test_text_only_pipeline_refuses_image_jobs(tiny_datasets, tmp_path):
    from cola_mm.prior.dit import preset as dp
    from cola_mm.vae_text.model import TextVAE, preset as tp
    from cola_mm.vae_text.tokenizer import load_tokenizer
    from cola_mm.pipeline import PipelineConfig

    tok = load_tokenizer(tiny_datasets / "tokenizer")
    pipe = ColaPipeline(TextVAE(tp("tiny", vocab_size=len(tok))), DiT(dp("tiny")), tok, PipelineConfig())
    with pytest.raises(CheckpointError, match="no image VAE"):
        pipe.generate_image("a red circle")


def test_cli_generate_image_caption_and_eval(mm_pipeline, tiny_datasets, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cola_mm.cli", *args], cwd=REPO, capture_output=True, text=True,
                              env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})

    grid = tmp_path / "grid.png"
    r = run("generate", "image", "--ckpt", str(mm_pipeline), "--prompt", "a red square", "--n", "4", "--steps", "2",
            "--out", str(grid))
    assert r.returncode == 0, r.stderr
    assert Image.open(grid).size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)  # a 2×2 grid with 2 px gaps
    r = run("caption", "--ckpt", str(mm_pipeline), str(grid), "--steps", "2")
    assert r.returncode == 0 and r.stdout.startswith(str(grid)), r.stderr
    r = run("eval", "image-vae", "--ckpt", str(mm_pipeline), "--data", str(tiny_datasets / "shapes" / "test"),
            "--limit", "8")
    assert r.returncode == 0 and "psnr_db" in r.stdout, r.stderr
    r = run("eval", "caption", "--ckpt", str(mm_pipeline), "--data", str(tiny_datasets), "--limit", "3", "--steps", "2")
    assert r.returncode == 0 and "shapes_test_1obj_all_acc" in r.stdout and "digits_test_all_acc" in r.stdout, r.stderr
    r = run("caption", "--ckpt", str(mm_pipeline), str(tmp_path / "missing.png"))
    assert r.returncode == 2 and "image not found" in r.stderr
    r = run("generate", "image", "--ckpt", str(tmp_path), "--prompt", "x")
    assert r.returncode == 2 and "pipeline" in r.stderr


def test_cli_eval_text_to_image_with_a_probe(mm_pipeline, tiny_datasets, tmp_path):
    from cola_mm.evaluation.probe import train_probe

    probe = train_probe(tiny_datasets, tmp_path / "probe", steps=2, batch_size=8, progress=False, eval_limit=4)
    grid = tmp_path / "t2i.png"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "eval", "text-to-image", "--ckpt", str(mm_pipeline),
                        "--data", str(tiny_datasets), "--probe", str(probe), "--limit", "3", "--steps", "2",
                        "--grid", str(grid), "--json", str(tmp_path / "r.json")],
                       cwd=REPO, capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["shapes_test_n"] == 3 and results["digits_test_n"] == 3
    assert {"shapes_test_all_acc", "shapes_test_shape_acc", "shapes_novel_all_acc", "digits_test_all_acc"} <= results.keys()
    assert all(0 <= v <= 1 for k, v in results.items() if k.endswith("_acc"))
    sizes = [k for k in results if k.startswith("shapes_test_") and k.endswith("_n") and k != "shapes_test_n"]
    assert sizes and sum(results[k] for k in sizes) == 3  # every 1-object prompt counted under its size
    assert Image.open(grid).size[0] > 64


def test_caption_grader_accepts_every_true_caption_and_rejects_wrong_ones():
    import random

    from cola_mm.data.shapes import grade_caption as grade_shapes_caption
    from cola_mm.data.shapes import caption_templates, make_caption, sample_scene

    rng = random.Random(0)
    for i in range(200):
        scene = sample_scene(rng, "test", 64, max_objects=2)
        for template in range(len(caption_templates(scene))):
            text = make_caption(scene, random.Random(i), template)
            assert grade_shapes_caption(text, scene)["all"], text
    one = {"objects": [{"shape": "circle", "color": "red", "size": "large", "cell": "top left"}], "relation": None}
    assert grade_shapes_caption("a large red circle in the top left corner", one)["all"]
    assert not grade_shapes_caption("a large blue circle in the top left corner", one)["all"]
    assert not grade_shapes_caption("a large red circle in the bottom left corner", one)["all"]
    assert not grade_shapes_caption("red red red", one)["parsed"]


def test_export_fp16_halves_the_folder_and_loads_as_float32(mm_pipeline, tmp_path):
    out = tmp_path / "half"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(mm_pipeline), str(out), "--dtype", "fp16"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "MB" in r.stdout and (out / "README.md").read_text() == (mm_pipeline / "README.md").read_text()

    def weights(folder):
        return sum(f.stat().st_size for f in folder.rglob("*.safetensors"))

    assert weights(out) < 0.55 * weights(mm_pipeline)
    from safetensors import safe_open

    with safe_open(str(out / "dit" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    full, half = ColaPipeline.from_pretrained(mm_pipeline), ColaPipeline.from_pretrained(out)
    for module in (half.dit, half.text_vae, half.image_vae):
        assert {p.dtype for p in module.parameters()} == {torch.float32}
    # the same weights up to fp16 rounding
    for a, b in zip(full.dit.parameters(), half.dit.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    for a, b in zip(full.image_vae.parameters(), half.image_vae.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    img_full = full.generate_image("a red circle", steps=2, seed=0)[0]
    img_half = half.generate_image("a red circle", steps=2, seed=0)[0]
    diff = (torch.tensor(list(img_full.getdata()), dtype=torch.float32)
            - torch.tensor(list(img_half.getdata()), dtype=torch.float32)).abs().mean()
    assert diff < 3.0  # mean |Δ| in 0..255 pixel units
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(out), str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "same folder" in r.stderr and "Traceback" not in r.stderr


def test_export_sets_the_sampler_defaults_and_the_card(mm_pipeline, tmp_path):
    """`cola-mm export --text-cfg/--image-cfg/--caption-cfg/--steps/--card`: the settings chosen on val
    travel in pipeline.json with the weights; bad values are one-line errors and write nothing."""
    card = tmp_path / "card.md"
    card.write_text("# A described model\n")
    out = tmp_path / "tuned"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(mm_pipeline), str(out), "--text-cfg", "3",
                        "--image-cfg", "4.5", "--caption-cfg", "2", "--steps", "8", "--card", str(card)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "pipeline.json").read_text())
    assert (cfg["default_cfg_scale"], cfg["default_image_cfg_scale"], cfg["default_caption_cfg_scale"],
            cfg["default_steps"]) == (3.0, 4.5, 2.0, 8)
    before = json.loads((mm_pipeline / "pipeline.json").read_text())
    assert {k: v for k, v in cfg.items() if not k.startswith("default_")} == \
        {k: v for k, v in before.items() if not k.startswith("default_")}
    assert (out / "README.md").read_text() == "# A described model\n"
    assert ColaPipeline.from_pretrained(out).config.default_image_cfg_scale == 4.5
    for bad in (["--text-cfg", "0"], ["--image-cfg", "nan"], ["--steps", "-1"], ["--card", str(tmp_path / "none.md")]):
        dst = tmp_path / f"bad{len(bad[1])}"
        r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(mm_pipeline), str(dst), *bad],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "error" in r.stderr.strip().splitlines()[-1], r.stderr
        assert not dst.exists()
