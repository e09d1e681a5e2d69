"""Property-based fuzzing (hypothesis) of every input surface: prompts (Python API, CLI, app),
images (random bytes, mutated PNG/JPEG/WebP/GIF/TIFF/BMP), shards (byte flips, truncation),
configs (random values for every key) and checkpoint folders (missing, truncated, flipped,
wrong dtype/shape/class/version).

Each property ends in a result or in one clear, one-line error of the expected kind — never a
traceback, a hang or a crash. Budgets are small in the default profile (the suite's time
limit); ``pytest tests/test_fuzz.py --hypothesis-profile fuzz`` runs 30× more cases, and
``COLA_MM_FUZZ_COUNTS=FILE`` writes the cases tried per surface (docs/results.md)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import tarfile
import time
import zlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from cola_mm.core.components import CheckpointError
from cola_mm.core.config import ConfigError
from cola_mm.core.images import ImageInputError, load_image
from cola_mm.data.loader import ShardDataset
from cola_mm.data.shards import ShardWriter
from cola_mm.pipeline import ColaPipeline, Result

from conftest import REPO, count_case, fuzz_budget

SPECIALS = ["\ud800", "\udcff", "\udfff", "\x00", "\u202e", "\u200f", "\u0301", "\ufeff", "\U0010ffff", "\r\n",
            "\t", "\x1b[31m", "\u0000\u0000", "\uffff", "𝕏", "\u0e47" * 5]
CHAR = st.one_of(st.integers(0, 0x10FFFF).map(chr), st.integers(0xD800, 0xDFFF).map(chr),
                 st.characters(codec="ascii"))
PIECE = st.one_of(CHAR, st.sampled_from(SPECIALS))
PROMPTS = st.one_of(st.lists(PIECE, max_size=60).map("".join),
                    st.tuples(st.lists(PIECE, min_size=1, max_size=8).map("".join), st.integers(50, 3000)).map(
                        lambda t: t[0] * t[1]))  # very long strings
FAST = dict(steps=1, seed=0)
NO_FIXTURE_CHECK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


def one_line(err: BaseException) -> bool:
    return bool(str(err)) and "\n" not in str(err)


@pytest.fixture(scope="module")
def pipe(tiny_mm_pipeline):
    return ColaPipeline.from_pretrained(tiny_mm_pipeline)


# --------------------------------------------------------------------------- prompts


@settings(max_examples=fuzz_budget(25), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(prompt=PROMPTS)
def test_fuzz_prompts_python_api(pipe, prompt):
    count_case("prompts: Python API")
    text = pipe.generate_text(prompt, max_new_tokens=2, return_result=True, **FAST)
    assert isinstance(text, Result) and isinstance(text.outputs[0], str)
    images = pipe.generate_image(prompt, return_result=True, **FAST)
    assert len(images.outputs) == 1 and images.outputs[0].size == (64, 64)
    for notice in text.notices + images.notices:
        assert one_line(ValueError(notice))


@settings(max_examples=fuzz_budget(6), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(prompt=PROMPTS)
def test_fuzz_prompts_cli(tiny_mm_pipeline, tmp_path, prompt):
    from cola_mm import cli

    count_case("prompts: CLI")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["generate", "text", "--ckpt", str(tiny_mm_pipeline), f"--prompt={prompt}",
                         "--max-new-tokens", "2", "--steps", "1"])
    assert code == 0, err.getvalue()
    assert "Traceback" not in err.getvalue()
    out.getvalue().encode("utf-8")  # printable: no lone surrogate reaches stdout


@pytest.fixture(scope="module")
def app_test(tiny_mm_pipeline):
    from streamlit.testing.v1 import AppTest

    mp = pytest.MonkeyPatch()
    mp.setenv("COLA_MM_CKPT", str(tiny_mm_pipeline))
    at = AppTest.from_file(str(REPO / "apps" / "app.py"), default_timeout=120)
    at.run()
    at.slider(key="t2i_steps").set_value(1)
    at.slider(key="t2i_n").set_value(1)
    at.number_input(key="t2t_max").set_value(2)
    at.slider(key="t2t_steps").set_value(1)
    yield at
    mp.undo()


@settings(max_examples=fuzz_budget(4), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(prompt=PROMPTS)
def test_fuzz_prompts_app(app_test, prompt):
    """A browser sends UTF-8: a lone surrogate typed or pasted arrives as U+FFFD (the widget
    protocol cannot carry one), so the app is fuzzed with what a browser can send."""
    count_case("prompts: app")
    at = app_test
    sent = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in prompt)
    at.text_input(key="t2i_prompt").input(sent)
    at.button(key="t2i_go").click().run()
    assert not at.exception, at.exception
    at.text_area(key="t2t_prompt").input(sent)
    at.button(key="t2t_go").click().run()
    assert not at.exception, at.exception


# --------------------------------------------------------------------------- images

FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"]


def _valid_image_bytes(fmt: str) -> bytes:
    img = Image.new("RGB", (40, 30), (10, 200, 30))
    img.paste((200, 10, 10), (5, 5, 20, 20))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


VALID = {fmt: _valid_image_bytes(fmt) for fmt in FORMATS}


def _huge(fmt: str, data: bytes, width: int, height: int) -> bytes:
    """Declare a huge size in the header (PNG with a correct CRC, so the size is what is read)."""
    b = bytearray(data)
    if fmt == "PNG":
        b[16:24] = struct.pack(">II", width, height)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    elif fmt == "GIF":
        b[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
    elif fmt == "BMP":
        b[18:26] = struct.pack("<ii", width & 0x7FFFFFFF, height & 0x7FFFFFFF)
    return bytes(b)


MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), min_size=1, max_size=8)),
    st.tuples(st.just("huge"), st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))),
)


def _mutate(fmt: str, mutation) -> bytes:
    data = VALID[fmt]
    kind, arg = mutation
    if kind == "truncate":
        return data[:int(arg * len(data))]
    if kind == "flip":
        b = bytearray(data)
        for where, bit in arg:
            i = min(int(where * len(b)), len(b) - 1)
            b[i] ^= 1 << bit
        return bytes(b)
    return _huge(fmt, data, *arg)


def _load_bounded(data: bytes):
    start = time.monotonic()
    try:
        img = load_image(data, 64)
    except ImageInputError as err:
        assert one_line(err), repr(str(err))
        img = None
    assert time.monotonic() - start < 10, "an image took more than 10 s to accept or refuse"
    return img


@settings(max_examples=fuzz_budget(60), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.binary(max_size=4096))
def test_fuzz_image_random_bytes(data):
    count_case("images: random bytes")
    img = _load_bounded(data)
    assert img is None or img.size == (64, 64)


@settings(max_examples=fuzz_budget(60), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(fmt=st.sampled_from(FORMATS), mutation=MUTATION)
def test_fuzz_image_mutated_files(fmt, mutation):
    count_case("images: mutated files")
    img = _load_bounded(_mutate(fmt, mutation))
    assert img is None or (img.size == (64, 64) and img.mode == "RGB")


@settings(max_examples=fuzz_budget(8), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(fmt=st.sampled_from(FORMATS), mutation=MUTATION)
def test_fuzz_image_caption(pipe, fmt, mutation):
    """Through the captioning job: a caption or one ImageInputError."""
    count_case("images: caption job")
    try:
        out = pipe.caption([_mutate(fmt, mutation)], max_tokens=2, **FAST)
    except ImageInputError as err:
        assert one_line(err)
    else:
        assert isinstance(out[0], str)


def test_huge_declared_png_is_refused_quickly():
    start = time.monotonic()
    with pytest.raises(ImageInputError, match="too many pixels"):
        load_image(_huge("PNG", VALID["PNG"], 100_000, 100_000), 64)
    assert time.monotonic() - start < 2


# --------------------------------------------------------------------------- shards

N_SAMPLES = 6


def _write_shards(folder: Path) -> tuple[Path, Path]:
    with ShardWriter(folder, max_count=N_SAMPLES) as w:
        for i in range(2 * N_SAMPLES):
            img = Image.new("RGB", (8, 8), (i * 20, 0, 0))
            w.write(f"{i:06d}", {"txt": f"sample {i}", "json": {"i": i}, "png": img})
    shards = sorted(folder.glob("*.tar"))
    assert len(shards) == 2
    return shards[0], shards[1]


@pytest.fixture(scope="module")
def shard_pair(tmp_path_factory):
    return _write_shards(tmp_path_factory.mktemp("shards"))


def _read(paths) -> tuple[list[dict], dict]:
    ds = ShardDataset([str(p) for p in paths], required=("txt", "json", "image"))
    return list(ds), dict(ds.stats)


@settings(max_examples=fuzz_budget(40), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(mutation=st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), min_size=1, max_size=6))))
def test_fuzz_shards(shard_pair, tmp_path_factory, mutation):
    """A damaged shard: bad samples are skipped and counted, never a crash, the shard after it
    is read in full, and samples after a damaged stretch of the same shard are still read."""
    count_case("shards: flips and truncations")
    damaged, intact = shard_pair
    data = bytearray(damaged.read_bytes())
    kind, arg = mutation
    if kind == "truncate":
        data = data[:int(arg * len(data))]
    else:
        for where, bit in arg:
            i = min(int(where * len(data)), len(data) - 1)
            data[i] ^= 1 << bit
    bad = tmp_path_factory.mktemp("bad") / "000000.tar"
    bad.write_bytes(bytes(data))
    samples, stats = _read([bad, intact])
    from_intact = [s for s in samples if s["__url__"] == str(intact)]
    assert [s["__key__"] for s in from_intact] == [f"{i:06d}" for i in range(N_SAMPLES, 2 * N_SAMPLES)]
    from_bad = [s for s in samples if s["__url__"] == str(bad)]
    assert len(from_bad) <= N_SAMPLES
    if kind == "flip" and len(arg) == 1:  # one flipped bit loses at most the sample it hit (+ its neighbour)
        assert len(from_bad) >= N_SAMPLES - 2, (stats, [s["__key__"] for s in from_bad])
    if len(from_bad) < N_SAMPLES:
        assert sum(stats.values()) >= 1  # what was lost is counted


def test_regression_damaged_tar_header_reads_on(shard_pair, tmp_path):
    """A flipped byte in one member's header once ended the shard there: the samples after it
    were lost. Now the reader resynchronises on the next valid header."""
    damaged, _ = shard_pair
    data = bytearray(damaged.read_bytes())
    with tarfile.open(damaged) as tar:
        members = tar.getmembers()
    third = next(m for m in members if m.name.startswith("000002."))
    data[third.offset + 10] ^= 0xFF  # inside the name field: the checksum no longer matches
    bad = tmp_path / "000000.tar"
    bad.write_bytes(bytes(data))
    samples, stats = _read([bad])
    keys = [s["__key__"] for s in samples]
    assert keys == ["000000", "000001", "000003", "000004", "000005"]
    assert stats.get("damaged_tar") == 1 and sum(stats.values()) >= 2  # the header + the partial sample


# --------------------------------------------------------------------------- configs


def _flatten(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, dict) and v:
            keys += _flatten(v, path + ".")
    return keys


BASE_CONFIGS = {name: yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
                for name in ("demo", "vae_text_small", "vae_image_small")}
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                   st.lists(PIECE, max_size=12).map("".join), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _config_layers() -> dict:
    """Every typed config a YAML file reaches: the run keys (data, optim …) and the sections a
    stage parses (model presets, losses, the sampler)."""
    from cola_mm.prior.dit import PRESETS as DIT, DiTConfig
    from cola_mm.prior.sampler import SamplerConfig
    from cola_mm.training.config import TrainConfig
    from cola_mm.training.stages.prior import JointLossConfig
    from cola_mm.vae_image.losses import ImageVAELossConfig
    from cola_mm.vae_image.model import PRESETS as IMG, ImageVAEConfig
    from cola_mm.vae_text.losses import TextVAELossConfig
    from cola_mm.vae_text.model import PRESETS as TXT, TextVAEConfig

    layers = {}
    for name, raw in BASE_CONFIGS.items():
        run = {k: v for k, v in raw.items() if k not in ("model", "loss")}
        layers[f"train:{name}"] = (TrainConfig, run)
    layers["model.dit"] = (DiTConfig, {**DIT["small"], "d_latent": 32})
    layers["model (Text VAE)"] = (TextVAEConfig, {**TXT["small"], "vocab_size": 512})
    layers["model (image VAE)"] = (ImageVAEConfig, dict(IMG["small"]))
    for cls in (JointLossConfig, TextVAELossConfig, ImageVAELossConfig, SamplerConfig):
        layers[cls.__name__] = (cls, cls().to_dict())
    return layers


CONFIG_LAYERS = _config_layers()


@settings(max_examples=fuzz_budget(80), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data())
def test_fuzz_config_values(data):
    """Any value of any type at any key: a valid config or one ConfigError line naming the key."""
    count_case("configs: random values")
    layer = data.draw(st.sampled_from(sorted(CONFIG_LAYERS)))
    cls, base = CONFIG_LAYERS[layer]
    cfg = json.loads(json.dumps(base))
    key = data.draw(st.sampled_from(_flatten(cfg)))
    value = data.draw(VALUES)
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    try:
        cls.from_dict(cfg)
    except ConfigError as err:
        assert one_line(err), repr(str(err))
        assert leaf in str(err), (layer, key, value, str(err))


@settings(max_examples=fuzz_budget(20), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(key=st.lists(PIECE, min_size=1, max_size=10).map("".join), where=st.sampled_from(["", "optim", "data"]))
def test_fuzz_config_unknown_keys(key, where):
    from cola_mm.training.config import TrainConfig

    cfg = json.loads(json.dumps(BASE_CONFIGS["demo"]))
    node = cfg[where] if where else cfg
    assume(key not in node and isinstance(node, dict))
    count_case("configs: unknown keys")
    node[key] = 1
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(cfg)
    assert one_line(err.value)


# --------------------------------------------------------------------------- checkpoint folders

COMPONENT_FILES = ["pipeline.json", "dit/config.json", "dit/model.safetensors", "text_vae/config.json",
                   "text_vae/model.safetensors", "tokenizer/tokenizer.json", "image_vae/config.json",
                   "image_vae/cola_mm.json", "image_vae/diffusion_pytorch_model.safetensors"]


def _corrupt(folder: Path, rel: str, kind: str, where: float, value: int) -> None:
    path = folder / rel
    data = bytearray(path.read_bytes())
    if kind == "missing":
        path.unlink()
    elif kind == "truncate":
        path.write_bytes(bytes(data[:int(where * len(data))]))
    elif kind == "flip":
        i = min(int(where * len(data)), len(data) - 1)
        data[i] ^= max(1, value)
        path.write_bytes(bytes(data))
    elif kind == "json-class":
        meta = json.loads(data)
        meta["_class_name" if "_class_name" in meta else "_class"] = "SomethingElse"
        path.write_text(json.dumps(meta))
    elif kind == "json-version":
        meta = json.loads(data)
        meta["_format_version"] = 99
        path.write_text(json.dumps(meta))


def _retype_weights(folder: Path, rel: str, kind: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / rel))
    name = sorted(weights)[0]
    if kind == "dtype":
        weights[name] = weights[name].to(torch.int32)
    else:
        weights[name] = torch.zeros(*[s + 1 for s in weights[name].shape])
    save_file(weights, str(folder / rel))


@settings(max_examples=fuzz_budget(25), deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(rel=st.sampled_from(COMPONENT_FILES), kind=st.sampled_from(["missing", "truncate", "flip", "json-class",
                                                                  "json-version", "dtype", "shape"]),
       where=st.floats(0, 1), value=st.integers(0, 255))
def test_fuzz_checkpoint_folders(tiny_mm_pipeline, tmp_path_factory, rel, kind, where, value):
    if kind.startswith("json"):
        assume(rel.endswith("config.json") or rel == "pipeline.json")
    if kind in ("dtype", "shape"):
        assume(rel.endswith(".safetensors"))
    count_case("checkpoint folders")
    folder = tmp_path_factory.mktemp("ckpt") / "p"
    shutil.copytree(tiny_mm_pipeline, folder)
    if kind in ("dtype", "shape"):
        _retype_weights(folder, rel, kind)
    else:
        _corrupt(folder, rel, kind, where, value)
    try:
        pipe = ColaPipeline.from_pretrained(folder)
    except CheckpointError as err:
        assert one_line(err), repr(str(err))
        return
    # a flip the format cannot see (inside a weight) still loads and runs; the image VAE's
    # sidecar is optional (a plain diffusers folder has none)
    assert kind in ("flip", "truncate") or kind.startswith("json") or rel == "image_vae/cola_mm.json"
    assert isinstance(pipe.generate_text("love", max_new_tokens=2, **FAST), str)


# --------------------------------------------------------------------------- what the fuzzing found


def test_regression_tar_cut_on_member_boundary_is_counted(shard_pair, tmp_path):
    """A shard cut exactly between two members once read as a complete, shorter shard: the lost
    samples were not counted. A whole tar ends with zero blocks; without them it is truncated."""
    damaged, _ = shard_pair
    with tarfile.open(damaged) as tar:
        cut = next(m for m in tar.getmembers() if m.name.startswith("000001.")).offset
    bad = tmp_path / "000000.tar"
    bad.write_bytes(damaged.read_bytes()[:cut])
    samples, stats = _read([bad])
    assert [s["__key__"] for s in samples] == ["000000"] and stats == {"truncated_tar": 1}


def _copy(tiny_mm_pipeline, tmp_path) -> Path:
    folder = tmp_path / "p"
    shutil.copytree(tiny_mm_pipeline, folder)
    return folder


@pytest.mark.parametrize("content", [b"\xfb\x00{", b'{"block_size": 16,,}', b"[1, 2]", b""])
def test_regression_corrupt_pipeline_json_is_one_line(tiny_mm_pipeline, tmp_path, content):
    """A flipped byte in pipeline.json once crashed with a JSONDecodeError/UnicodeDecodeError traceback."""
    folder = _copy(tiny_mm_pipeline, tmp_path)
    (folder / "pipeline.json").write_bytes(content)
    with pytest.raises(CheckpointError, match="pipeline.json") as err:
        ColaPipeline.from_pretrained(folder)
    assert one_line(err.value)
    (folder / "pipeline.json").write_bytes(b"\xfb")
    (folder / "dit" / "config.json").write_bytes(b"\xfb\xfe")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ColaPipeline.from_pretrained(folder)


@pytest.mark.parametrize("rel", ["dit/model.safetensors", "image_vae/diffusion_pytorch_model.safetensors"])
@pytest.mark.parametrize("kind", ["dtype", "nan"])
def test_regression_integer_or_nan_weights_are_refused(tiny_mm_pipeline, tmp_path, rel, kind):
    """Integer weights once loaded silently (cast to float by load_state_dict)."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_mm_pipeline, tmp_path)
    weights = load_file(str(folder / rel))
    name = sorted(weights)[0]
    weights[name] = weights[name].to(torch.int32) if kind == "dtype" else weights[name].fill_(float("nan"))
    save_file(weights, str(folder / rel))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as err:
        ColaPipeline.from_pretrained(folder)
    assert one_line(err.value)


def test_regression_truncated_image_vae_safetensors(tiny_mm_pipeline, tmp_path):
    """A truncated image VAE weights file once escaped as a SafetensorError traceback."""
    folder = _copy(tiny_mm_pipeline, tmp_path)
    path = folder / "image_vae" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(CheckpointError, match="cannot load the AutoencoderKL") as err:
        ColaPipeline.from_pretrained(folder)
    assert one_line(err.value)


def test_regression_corrupt_tokenizer_json(tiny_mm_pipeline, tmp_path):
    """A flipped byte in tokenizer.json once escaped as a bare Exception from the tokenizers library."""
    folder = _copy(tiny_mm_pipeline, tmp_path)
    path = folder / "tokenizer" / "tokenizer.json"
    text = path.read_text()
    i = text.index('"vocab"') + 40
    path.write_text(text[:i] + "\x00" + text[i + 1:])
    with pytest.raises(CheckpointError, match="cannot load the tokenizer") as err:
        ColaPipeline.from_pretrained(folder)
    assert one_line(err.value)


@pytest.mark.parametrize("layer,key,value", [("model.dit", "n_heads", 3), ("model.dit", "n_heads", 0),
                                             ("model (image VAE)", "norm_num_groups", 0),
                                             ("model (Text VAE)", "n_heads", 3)])
def test_regression_config_checks_name_their_keys(layer, key, value):
    """n_heads 3 or 0 once gave "d_model (256) must split into …" (the key not named) or a
    ZeroDivisionError traceback."""
    cls, base = CONFIG_LAYERS[layer]
    with pytest.raises(ConfigError, match=key) as err:
        cls.from_dict({**base, key: value})
    assert one_line(err.value)


def test_regression_cli_prompt_double_dash(tiny_mm_pipeline):
    """argparse reads --prompt=-- as an empty list; the CLI once answered "no prompt given"."""
    from cola_mm import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["generate", "text", "--ckpt", str(tiny_mm_pipeline), "--prompt=--", "--max-new-tokens", "2",
                         "--steps", "1"]) == 0
    assert out.getvalue().startswith("--")
