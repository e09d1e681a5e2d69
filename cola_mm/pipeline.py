"""The inference pipeline: one folder, one object, the generation jobs.

    pipe = ColaPipeline.from_pretrained("runs/prior_small/model")
    pipe.generate_text("To be, or not to be", max_new_tokens=48, steps=16, cfg_scale=3.0, seed=0)
    for deltas in pipe.stream_text("Now is the winter"):  # text appears block by block
        print(deltas[0], end="")
    result = pipe.generate_image("a red circle", return_result=True)  # .outputs, .notices

Nothing about one call is kept on the pipeline: every call returns its own notices and token
ids (:class:`Result`, :class:`TextStream`), so one pipeline can serve several threads at once.
Text enters the pipeline in one place, :func:`clean_text`: characters that are not valid
Unicode (lone surrogates, what Python makes of invalid UTF-8 in ``argv``) are replaced.

A pipeline folder holds ``pipeline.json`` (this file's :class:`PipelineConfig`), ``text_vae/``,
``dit/`` and ``tokenizer/``. Text continuation (Cola DLM §3.3): the prompt ``<bos> text`` is
encoded by the Text VAE (posterior mean), normalised at the prior boundary, cached as clean
context; the prior generates 16-latent blocks (:mod:`cola_mm.prior.sampler`), and after each block
the Text VAE decoder — with its own key/value cache, per sample — turns the new latents into
tokens; a sample stops at ``<eos>`` or at ``max_new_tokens``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from cola_mm.core.components import CheckpointError
from cola_mm.core.config import Config, ConfigError, check
from cola_mm.core.layers import KVCache
from cola_mm.core.sequence import SEGMENT_TYPES
from cola_mm.prior.dit import DiT
from cola_mm.prior.sampler import BlockSampler, SamplerConfig
from cola_mm.vae_text.model import TextVAE
from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer

PIPELINE_FILE = "pipeline.json"
PIPELINE_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # formats that unpickle on load
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Result:
    """What one generation call made: ``outputs`` (texts, or PIL images), ``notices`` (what the
    call changed about its input, e.g. a truncated prompt) and, for text jobs, ``tokens`` (the
    generated token ids per output)."""

    outputs: list
    notices: list[str] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)


def clean_text(text, notices: list[str], what: str = "a prompt") -> str:
    """The one door text comes in by: a ``str`` or a clear ``ValueError``; lone surrogates
    (unencodable in UTF-8) become U+FFFD, with a notice."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    text, n = _SURROGATE.subn("\ufffd", text)
    if n:
        notices.append(f"{n} character(s) of the prompt were not valid Unicode and became U+FFFD")
    return text


@dataclass(frozen=True)
class PipelineConfig(Config):
    block_size: int = 16  # latents per generated block (the DiT's)
    max_prompt_tokens: int = 112  # longer prompts keep their last tokens (with a notice)
    trained_context: int = 128  # latents per training row; longer generations slide a window this long
    default_steps: int = 16  # ODE steps per block
    default_cfg_scale: float = 1.0  # classifier-free guidance for text
    solver: str = "euler"
    time_shift: float = 1.0
    caption_tokens: int = 32  # a text prompt of text→image / a caption: <bos> … <eos> <pad>… (tokens)
    default_image_cfg_scale: float = 3.0  # guidance for text → image
    # guidance for image → text: 3 lifts shapes captions 63 % → 96 % (configs/demo_caption.yaml, docs/experiments.md)
    default_caption_cfg_scale: float = 3.0
    jobs: tuple[str, ...] = ("text_to_text",)  # the jobs the prior was trained on
    # re-encode every finished text block from its decoded tokens before later blocks read it
    # (continuations and captions; :class:`TextDecoder`)
    text_rounding: bool = False
    # scale of each job's starting noise (:class:`cola_mm.prior.sampler.SamplerConfig`'s
    # ``temperature``; 1 = the training distribution)
    text_temperature: float = 1.0
    image_temperature: float = 1.0
    caption_temperature: float = 1.0
    # text continuation: the first ``text_lead_blocks`` generated blocks start from noise scaled
    # by ``text_lead_temperature`` instead of ``text_temperature`` (0 blocks = off)
    text_lead_blocks: int = 0
    text_lead_temperature: float = 1.0
    # ODE steps per block of text continuation (0: ``default_steps``, which images and captions use)
    text_steps: int = 0

    def __post_init__(self):
        check(self.block_size >= 1, "block_size must be >= 1")
        check(self.default_steps >= 1, "default_steps must be >= 1")
        check(self.text_steps >= 0, "text_steps must be >= 0 (0: default_steps)")
        check(self.max_prompt_tokens >= 2, "max_prompt_tokens must be >= 2 (<bos> + one token)")
        check(self.caption_tokens >= 3, "caption_tokens must be >= 3")


def job_steps(config: PipelineConfig, job: str) -> int:
    """The ODE steps per block that ``job`` ("text", "image" or "caption") samples with by default:
    ``text_steps`` for text continuation where it is set, else ``default_steps``."""
    return config.text_steps if job == "text" and config.text_steps else config.default_steps


def save_pipeline_config(config: PipelineConfig, folder: str | os.PathLike) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"_class": "ColaPipeline", "_format_version": PIPELINE_VERSION, **config.to_dict()}
    tmp = folder / (PIPELINE_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, folder / PIPELINE_FILE)


def load_pipeline_config(folder: str | os.PathLike) -> PipelineConfig:
    path = Path(folder) / PIPELINE_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a pipeline folder (no {PIPELINE_FILE})")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    found = raw.pop("_class", "ColaPipeline")
    if found != "ColaPipeline":
        raise CheckpointError(f"{path} describes a {found!r}, not a ColaPipeline")
    version = raw.pop("_format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: _format_version must be an integer, got {version!r}")
    if version > PIPELINE_VERSION:
        raise CheckpointError(f"{path} was written by a newer cola-mm (format {version}; this one reads "
                              f"{PIPELINE_VERSION})")
    try:
        return PipelineConfig.from_dict(raw, where=str(path))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


class TextDecoder:
    """Turns generated text blocks into text, per sample: the Text VAE decoder with its own
    key/value cache, ``<eos>`` stopping, a token budget, and multi-byte-safe text deltas.

    With ``rounding``, :meth:`round` also maps each finished block back onto the Text VAE's
    latent space before the prior reads it as context: the block is decoded to tokens (argmax)
    and those tokens are encoded again (posterior mean, the encoder with its own cache). The
    prior was trained on encoder latents of real text; a sampled block is only near them, and
    every later block conditions on it. (The continuous analogue of Diffusion-LM's rounding.)

    ``min_new_tokens``: a sample's first this many new tokens are never ``<eos>``, ``<pad>`` or
    ``<bos>`` (the argmax skips them there, as ``min_new_tokens`` does in transformers'
    ``generate``), so a prompt whose most likely next token ends the document is still
    continued. With rounding, the prior then reads the tokens actually kept."""

    def __init__(self, pipe: "ColaPipeline", n: int, max_new_tokens: int | Sequence[int],
                 prompt_tails: Sequence[Sequence[int]] = (), drop_bos: bool = False, rounding: bool | None = None,
                 min_new_tokens: int = 0):
        self.vae, self.tokenizer = pipe.text_vae, pipe.tokenizer
        self.caches = [KVCache() for _ in range(n)]
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.shown = [""] * n  # text already returned per sample
        self.finished = [False] * n
        budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        self.max_new_tokens = budgets
        self.min_new_tokens = min_new_tokens
        tok = self.tokenizer
        self._enders = sorted({t for t in (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) if t is not None})
        # the prompt's ids in the first generated block (the tokens its text skips, and rounding keeps)
        self.prompt_tails = [list(t) for t in prompt_tails] or [[] for _ in range(n)]
        self.drop_bos = drop_bos  # generated text starts with <bos> (captions)
        self.blocks_seen = 0
        bs = self.vae.config.block_size  # the decoder's sliding window: the context it was trained on
        self.window = pipe.config.trained_context // bs * bs
        self.rounding = pipe.config.text_rounding if rounding is None else bool(rounding)
        if self.rounding and pipe.dit.config.block_size % bs:
            raise ValueError(f"text rounding needs the prior's block ({pipe.dit.config.block_size}) to be a "
                             f"multiple of the Text VAE's ({bs})")
        self.encoder_caches = [KVCache() for _ in range(n)] if self.rounding else []
        self._pending: dict[int, list[int]] = {}  # tokens decoded by round(), used by the next add_block

    def prefill(self, i: int, latents: torch.Tensor, ids: Sequence[int] = ()) -> None:
        """Run sample ``i``'s clean prompt latents (n, c) (prior space) through the decoder cache
        (and, with rounding, their token ``ids`` through the encoder cache)."""
        self.vae.decode(self.vae.from_prior(latents[None]), self.caches[i], update_cache=True, window=self.window)
        if self.rounding:
            self.vae.encode(torch.tensor([list(ids)], device=latents.device), self.encoder_caches[i],
                            update_cache=True, window=self.window)

    def _decode(self, z: torch.Tensor, i: int) -> list[int]:
        """Sample ``i``'s block z (1, B, c) → its argmax tokens; the decoder cache moves on."""
        logits = self.vae.decode(self.vae.from_prior(z), self.caches[i], update_cache=True, window=self.window)[0]
        short = self.min_new_tokens - len(self.tokens[i])  # new tokens still owed before the sample may end
        if short > 0 and not self.finished[i]:
            first = len(self.prompt_tails[i]) if self.blocks_seen == 0 else 0  # the block's first new token
            logits[first:first + short, self._enders] = float("-inf")
        return logits.argmax(-1).tolist()

    def round(self, z: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """The finished block z (b, B, c) of the samples ``rows``, re-encoded from its decoded
        tokens (prior space, same shape). The first block keeps the prompt's own tokens where
        it holds the prompt's tail. The tokens are kept for the following :meth:`add_block`."""
        out = torch.empty_like(z)
        for k, i in enumerate(rows):
            tokens = self._decode(z[k:k + 1], i)
            self._pending[i] = tokens
            ids = list(tokens)
            if self.blocks_seen == 0:
                tail = self.prompt_tails[i]
                ids[:len(tail)] = tail
            mean, _ = self.vae.encode(torch.tensor([ids], device=z.device), self.encoder_caches[i],
                                      update_cache=True, window=self.window)
            out[k] = self.vae.to_prior(mean[0])
        return out

    def add_block(self, z: torch.Tensor, rows: Sequence[int] | None = None) -> list[str]:
        """Decode one block (b, B, c) of the samples ``rows`` (default: all, in order); returns
        the new text of each."""
        eos, bos = self.tokenizer.eos_token_id, self.tokenizer.bos_token_id
        rows = range(z.shape[0]) if rows is None else rows
        out = []
        for k, i in enumerate(rows):
            tokens = self._pending.pop(i) if i in self._pending else self._decode(z[k:k + 1], i)
            if self.blocks_seen == 0:
                tokens = tokens[len(self.prompt_tails[i]):]
                if self.drop_bos and tokens and tokens[0] == bos:
                    tokens = tokens[1:]
            for tok in tokens:
                if self.finished[i]:
                    break
                if tok == eos:
                    self.finished[i] = True
                else:
                    self.tokens[i].append(tok)
                    self.finished[i] = len(self.tokens[i]) >= self.max_new_tokens[i]
            # decode everything so far: byte-level BPE splits characters across tokens, so a
            # block boundary may fall inside one; hold back a trailing replacement character
            text = self.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
            if not self.finished[i]:
                text = text.rstrip("\ufffd")
            out.append(text[len(self.shown[i]):])
            self.shown[i] = text if len(text) > len(self.shown[i]) else self.shown[i]
        self.blocks_seen += 1
        return out

    @property
    def done(self) -> bool:
        return all(self.finished)


class TextStream:
    """One text generation in progress (a continuation or a caption), owned by its caller.

    Iterate it: after every generated block it yields the new text of each sample (a list of
    deltas, ``""`` for a sample with nothing new). ``texts``, ``tokens`` and ``notices`` are this
    call's own. A sample that finished (``<eos>``, its token budget) or was :meth:`cancel`-ed
    leaves the batch, so later blocks cost nothing for it; the others' outputs do not change."""

    def __init__(self, sampler: BlockSampler, next_block: Callable[[int, list], torch.Tensor],
                 decoder: TextDecoder, generators: list[torch.Generator], max_blocks: int, notices: list[str]):
        self._sampler, self._next_block, self._decoder = sampler, next_block, decoder
        self._generators = generators
        self._max_blocks = max_blocks
        self._active = list(range(len(generators)))  # original sample index of each batch row
        self._cancelled: set[int] = set()
        self._j = 0
        self.notices = notices
        if decoder.rounding:  # the sampler commits each block as the decoder re-encodes it
            sampler.round_block = lambda z: decoder.round(z, self._active)

    @property
    def texts(self) -> list[str]:
        """The text of every sample so far."""
        return list(self._decoder.shown)

    @property
    def tokens(self) -> list[list[int]]:
        """The generated token ids of every sample so far."""
        return [list(t) for t in self._decoder.tokens]

    @property
    def finished(self) -> list[bool]:
        return list(self._decoder.finished)

    def cancel(self, i: int) -> None:
        """Stop sample ``i``: it costs nothing from the next block on (its text stays as it is)."""
        self._cancelled.add(i)

    def __iter__(self) -> "TextStream":
        return self

    @torch.no_grad()
    def __next__(self) -> list[str]:
        self._drop_stopped()
        if not self._active or self._j >= self._max_blocks:
            raise StopIteration
        z = self._next_block(self._j, [self._generators[i] for i in self._active])
        deltas = [""] * len(self._generators)
        for i, d in zip(self._active, self._decoder.add_block(z, self._active)):
            deltas[i] = d
        self._j += 1
        return deltas

    def _drop_stopped(self) -> None:
        keep = [k for k, i in enumerate(self._active) if not self._decoder.finished[i] and i not in self._cancelled]
        if len(keep) < len(self._active):
            if keep:
                self._sampler.keep(keep)
            self._active = [self._active[k] for k in keep]

    def run(self) -> Result:
        """Generate to the end; the texts, notices and token ids."""
        for _ in self:
            pass
        return Result(self.texts, self.notices, self.tokens)


def _seeds(seed: int, seeds: Sequence[int] | None, n: int) -> list[int]:
    if seeds is None:
        return [seed + i for i in range(n)]
    seeds = [int(x) for x in seeds]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds given for {n} samples")
    return seeds


class ColaPipeline:
    family = "cola_mm"  # see cola_mm.core.families

    def __init__(self, text_vae: TextVAE, dit: DiT, tokenizer, config: PipelineConfig, image_vae=None):
        if len(tokenizer) != text_vae.config.vocab_size:
            raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the Text VAE was trained "
                                  f"with {text_vae.config.vocab_size}")
        if config.block_size != dit.config.block_size:
            raise CheckpointError(f"pipeline.json block_size {config.block_size} != the DiT's "
                                  f"{dit.config.block_size}")
        if dit.config.d_latent != text_vae.config.d_latent:
            raise CheckpointError(f"DiT latent dim {dit.config.d_latent} != Text VAE latent dim "
                                  f"{text_vae.config.d_latent}")
        if image_vae is not None and image_vae.config.token_dim != dit.config.d_latent:
            raise CheckpointError(f"image VAE tokens have {image_vae.config.token_dim} channels, the DiT "
                                  f"{dit.config.d_latent}")
        self.text_vae = text_vae.eval()
        self.dit = dit.eval()
        self.image_vae = image_vae.eval() if image_vae is not None else None
        self.tokenizer = tokenizer
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        trust_pickle_files: bool = False) -> "ColaPipeline":
        """Load a pipeline folder. Only safetensors and JSON are read: nothing is unpickled.
        A folder that also holds pickle files (``*.bin``, ``*.pt``, ``*.pkl``, ``*.ckpt`` …) is
        refused unless ``trust_pickle_files`` — they are still never loaded, but their presence
        says the folder came from somewhere that expected them to be (and unpickling runs code)."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"pipeline folder not found: {path}")
        from cola_mm.core.families import expect_family

        expect_family(path, "cola_mm")  # an AR or masked diffusion folder: say so, naming both
        if not trust_pickle_files:
            found = sorted(f for f in path.rglob("*") if f.suffix.lower() in PICKLE_SUFFIXES and f.is_file())
            if found:
                raise CheckpointError(
                    f"{path} holds pickle files ({found[0].relative_to(path)}"
                    f"{f' and {len(found) - 1} more' if len(found) > 1 else ''}): cola-mm never unpickles, but "
                    "such a folder may come from a source that expects them to run; remove them, or pass "
                    "trust_pickle_files=True (CLI: --trust-pickle-files)")
        config = load_pipeline_config(path)
        vae = TextVAE.from_pretrained(path / "text_vae", device)
        dit = DiT.from_pretrained(path / "dit", device)
        from cola_mm.data.shards import DataError

        try:
            tok = load_tokenizer(path / "tokenizer", light=True)  # no transformers import
        except DataError as err:
            raise CheckpointError(str(err)) from None
        image_vae = None
        if (path / "image_vae").is_dir():
            from cola_mm.vae_image.model import ImageVAE

            image_vae = ImageVAE.from_pretrained(path / "image_vae", device)
        return cls(vae, dit, tok, config, image_vae)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write the pipeline folder. ``dtype`` (e.g. ``torch.float16``) stores the weights in
        that precision — half the size; ``from_pretrained`` always loads them as float32."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        path = Path(path)

        def cast(module: torch.nn.Module):
            return None if dtype is None else {k: v.to(dtype) for k, v in module.state_dict().items()}

        self.text_vae.save_pretrained(path / "text_vae", cast(self.text_vae))
        self.dit.save_pretrained(path / "dit", cast(self.dit))
        save_tokenizer(self.tokenizer, path / "tokenizer")
        if self.image_vae is not None:
            self.image_vae.save_pretrained(path / "image_vae", dtype=dtype)
        save_pipeline_config(self.config, path)

    def describe(self) -> dict[str, str]:
        out = {"Text VAE": f"{self.text_vae.num_params() / 1e6:.1f}M params, d_latent={self.text_vae.config.d_latent}",
               "DiT prior": f"{self.dit.num_params() / 1e6:.1f}M params, block {self.dit.config.block_size}",
               "tokenizer": f"{len(self.tokenizer)} tokens"}
        if self.image_vae is not None:
            c = self.image_vae.config
            out["image VAE"] = (f"{self.image_vae.num_params() / 1e6:.2f}M params, {c.image_size} px → "
                                f"{c.n_tokens} tokens of {c.token_dim}")
        out["jobs"] = ", ".join(self.config.jobs)
        return out

    def _sampler_config(self, job: str, steps, cfg_scale, solver, temperature: float = 1.0, lead_blocks: int = 0,
                        lead_temperature: float = 1.0) -> SamplerConfig:
        """``job``'s sampler: ``steps`` or the job's default (:func:`job_steps`), and the rest."""
        return SamplerConfig(steps=steps or job_steps(self.config, job), cfg_scale=cfg_scale,
                             solver=solver or self.config.solver, time_shift=self.config.time_shift,
                             window=self.config.trained_context, temperature=temperature,
                             lead_blocks=lead_blocks, lead_temperature=lead_temperature)

    def _need_images(self) -> None:
        if self.image_vae is None:
            raise CheckpointError("this pipeline has no image VAE: it was trained for text only")

    # ---- text continuation
    def _prompt_ids(self, prompt: str, notices: list[str]) -> list[int]:
        prompt = clean_text(prompt, notices)
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        limit = self.config.max_prompt_tokens - 1
        if len(ids) > limit:
            notices.append(f"prompt truncated to its last {limit} tokens (of {len(ids)})")
            ids = ids[-limit:]
        return [self.tokenizer.bos_token_id] + ids

    @torch.no_grad()
    def stream_text(self, prompts: str | Sequence[str], max_new_tokens: int | Sequence[int] = 64,
                    steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                    solver: str | None = None, seeds: Sequence[int] | None = None,
                    rounding: bool | None = None, temperature: float | None = None,
                    lead_blocks: int | None = None, min_new_tokens: int = 1) -> TextStream:
        """Continue each prompt; iterate the returned :class:`TextStream` for the new text of
        each prompt after every block. Prompt ``i`` uses seed ``seed + i`` (or ``seeds[i]``);
        ``max_new_tokens`` may be one budget per prompt. ``rounding``: re-encode each finished
        block (:class:`TextDecoder`; None: ``pipeline.json``'s ``text_rounding``). ``temperature``:
        the scale of each block's starting noise (None: ``pipeline.json``'s ``text_temperature``).
        ``lead_blocks``: the first this many generated blocks start from noise scaled by
        ``pipeline.json``'s ``text_lead_temperature`` instead (None: its ``text_lead_blocks``;
        0: every block at ``temperature``, e.g. for a seed-independent output at 0).
        ``min_new_tokens``: no sample ends (``<eos>``) before this many new tokens; the default 1
        means a continuation is never empty (0: a prompt may be answered with nothing)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("no prompt given")
        budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(budgets) != len(prompts) or any(not isinstance(m, int) or m < 1 for m in budgets):
            raise ValueError(f"max_new_tokens must be >= 1 (one int, or one per prompt), got {max_new_tokens}")
        if not isinstance(min_new_tokens, int) or not 0 <= min_new_tokens <= min(budgets):
            raise ValueError(f"min_new_tokens must be an int from 0 to max_new_tokens ({min(budgets)}), "
                             f"got {min_new_tokens!r}")
        notices: list[str] = []
        seed_list = _seeds(seed, seeds, len(prompts))
        cfg = self._sampler_config("text", steps, self.config.default_cfg_scale if cfg_scale is None else cfg_scale,
                                   solver, self.config.text_temperature if temperature is None else temperature,
                                   self.config.text_lead_blocks if lead_blocks is None else lead_blocks,
                                   self.config.text_lead_temperature)
        device, B, vae = self.device, self.dit.config.block_size, self.text_vae
        ids = [self._prompt_ids(p, notices) for p in prompts]
        prefixes = []
        for seq in ids:
            mean, _ = vae.encode(torch.tensor([seq], device=device))
            prefixes.append(vae.to_prior(mean[0]))  # (P, c)
        lengths = [len(s) for s in ids]
        max_blocks = max(math.ceil((n + m) / B) - n // B for n, m in zip(lengths, budgets))
        decoder = TextDecoder(self, len(prompts), budgets, prompt_tails=[seq[(len(seq) // B) * B:] for seq in ids],
                              rounding=rounding, min_new_tokens=min_new_tokens)
        for i, (p, n) in enumerate(zip(prefixes, lengths)):  # decoder caches hold the prompt's whole blocks
            if n // B:
                decoder.prefill(i, p[:(n // B) * B], ids[i][:(n // B) * B])
        padded = torch.zeros(len(prompts), max(lengths), self.dit.config.d_latent, device=device)
        for i, p in enumerate(prefixes):
            padded[i, :p.shape[0]] = p
        sampler = BlockSampler(self.dit, cfg, SEGMENT_TYPES["text"])
        sampler.prefill(padded, torch.tensor(lengths, device=device))
        generators = [torch.Generator(device=device).manual_seed(s) for s in seed_list]
        return TextStream(sampler, sampler.denoise_block, decoder, generators, max_blocks, notices)

    def generate_text(self, prompts: str | Sequence[str], max_new_tokens: int | Sequence[int] = 64,
                      steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                      solver: str | None = None, seeds: Sequence[int] | None = None,
                      return_result: bool = False, rounding: bool | None = None,
                      temperature: float | None = None, lead_blocks: int | None = None,
                      min_new_tokens: int = 1) -> str | list[str] | Result:
        """The continuation of a prompt (a str), of several (a list), or with ``return_result``
        a :class:`Result` (texts, notices, token ids)."""
        result = self.stream_text(prompts, max_new_tokens, steps, cfg_scale, seed, solver, seeds, rounding,
                                  temperature, lead_blocks, min_new_tokens).run()
        if return_result:
            return result
        return result.outputs[0] if isinstance(prompts, str) else result.outputs

    # ---- text → image
    def _caption_context(self, prompt: str, notices: list[str]) -> tuple[list[int], torch.Tensor]:
        """A text prompt as the caption segment the prior was trained on: ids and latents (P, c)."""
        from cola_mm.core.sequence import caption_ids

        prompt = clean_text(prompt, notices)
        ids, n_kept = caption_ids(self.tokenizer, prompt, self.config.caption_tokens, self.dit.config.block_size)
        if n_kept == self.config.caption_tokens:  # <bos> + limit + <eos>: the prompt may have been cut
            n = len(self.tokenizer.encode(prompt, add_special_tokens=False))
            if n > n_kept - 2:
                notices.append(f"prompt truncated to its first {n_kept - 2} tokens (of {n})")
        mean, _ = self.text_vae.encode(torch.tensor([ids], device=self.device))
        return ids, self.text_vae.to_prior(mean[0])

    @torch.no_grad()
    def generate_image_tokens(self, prompts: Sequence[str], steps: int | None = None, cfg_scale: float | None = None,
                              seed: int = 0, solver: str | None = None,
                              on_step: Callable[[int, int, torch.Tensor], None] | None = None,
                              seeds: Sequence[int] | None = None, notices: list[str] | None = None,
                              temperature: float | None = None) -> torch.Tensor:
        """Prior tokens (b, n, c) of one image per prompt; image ``i`` uses seed ``seed + i``
        (or ``seeds[i]``). What the call changed about a prompt is appended to ``notices``.
        ``temperature``: the scale of the starting noise (None: ``pipeline.json``'s
        ``image_temperature``)."""
        from cola_mm.core.sequence import layout_row, text_to_image

        self._need_images()
        notices = [] if notices is None else notices
        seed_list = _seeds(seed, seeds, len(prompts))
        scale = self.config.default_image_cfg_scale if cfg_scale is None else cfg_scale
        cfg = self._sampler_config("image", steps, scale, solver,
                                   self.config.image_temperature if temperature is None else temperature)
        g = self.image_vae.config.grid
        contexts, rows = [], []
        cache: dict[str, tuple] = {}
        for p in prompts:
            key = p if isinstance(p, str) else id(p)
            if key not in cache:
                ids, latents = self._caption_context(p, notices)
                cache[key] = (latents, layout_row([text_to_image(len(ids), (g, g))]))
            contexts.append(cache[key][0])
            rows.append(cache[key][1])
        b, P = len(prompts), max(c.shape[0] for c in contexts)  # prompts of different lengths: right-pad
        ctx = torch.zeros(b, P, contexts[0].shape[1], device=self.device)
        for i, c in enumerate(contexts):
            ctx[i, :c.shape[0]] = c
        pos = torch.zeros(b, P, 3, dtype=torch.long, device=self.device)
        seg = torch.zeros(b, P, dtype=torch.long, device=self.device)
        blk = torch.zeros(b, P, dtype=torch.long, device=self.device)
        valid = torch.zeros(b, P, dtype=torch.bool, device=self.device)
        img_pos, img_seg = [], []
        for i, (c, row) in enumerate(zip(contexts, rows)):
            n = c.shape[0]
            pos[i, :n], seg[i, :n], blk[i, :n], valid[i, :n] = row.positions[:n], row.segments[:n], \
                row.block_ids[:n], True
            img_pos.append(row.positions[n:])
            img_seg.append(row.segments[n:])
        sampler = BlockSampler(self.dit, cfg)
        sampler.on_step = on_step
        sampler.start(ctx, pos, seg, blk, valid)
        generators = [torch.Generator(device=self.device).manual_seed(s) for s in seed_list]
        return sampler.denoise(torch.stack(img_pos).to(self.device), torch.stack(img_seg).to(self.device), generators)

    def generate_image(self, prompt: str | Sequence[str], steps: int | None = None, cfg_scale: float | None = None,
                       seed: int = 0, n: int = 1, solver: str | None = None,
                       on_step: Callable[[int, int, torch.Tensor], None] | None = None,
                       seeds: Sequence[int] | None = None, return_result: bool = False,
                       temperature: float | None = None) -> list | Result:
        """``n`` images (PIL, RGB) per prompt; image ``i`` of the flat list uses seed ``seed + i``
        (or ``seeds[i]``). With ``return_result`` a :class:`Result` (images and notices)."""
        from cola_mm.core.images import tensor_to_image

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n}")
        notices: list[str] = []
        flat = [p for p in prompts for _ in range(n)]
        tokens = self.generate_image_tokens(flat, steps, cfg_scale, seed, solver, on_step, seeds, notices, temperature)
        images = [tensor_to_image(x) for x in self.image_vae.tokens_to_images(tokens).float().cpu()]
        return Result(images, notices) if return_result else images

    def decode_image_tokens(self, tokens: torch.Tensor) -> list:
        """Prior tokens (b, n, c) → PIL images (e.g. a denoising trajectory's intermediate states)."""
        from cola_mm.core.images import tensor_to_image

        self._need_images()
        return [tensor_to_image(x) for x in self.image_vae.tokens_to_images(tokens).float().cpu()]

    # ---- image → text
    @torch.no_grad()
    def stream_captions(self, images: Sequence, steps: int | None = None, cfg_scale: float | None = None,
                        seed: int = 0, solver: str | None = None, max_tokens: int | None = None,
                        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
                        seeds: Sequence[int] | None = None, rounding: bool | None = None,
                        temperature: float | None = None) -> TextStream:
        """Caption each image (paths, bytes, file objects or PIL images of any mode/size —
        :func:`cola_mm.core.images.load_image`); iterate the :class:`TextStream` for the new
        text after every block. Caption ``i`` uses seed ``seed + i`` (or ``seeds[i]``).
        ``rounding``: as :meth:`stream_text`'s; ``temperature``: the scale of each block's starting
        noise (None: ``pipeline.json``'s ``caption_temperature``)."""
        from cola_mm.core.images import image_to_tensor, load_image
        from cola_mm.core.sequence import image_to_text, layout_row

        self._need_images()
        if isinstance(images, (str, os.PathLike, bytes)) or hasattr(images, "convert") or hasattr(images, "read"):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("no image given")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens}")
        seed_list = _seeds(seed, seeds, len(images))
        c = self.image_vae.config
        pixels = torch.stack([image_to_tensor(load_image(im, c.image_size)) for im in images]).to(self.device)
        context = self.image_vae.images_to_tokens(pixels).float()  # posterior means (b, n, c)
        b, n = context.shape[:2]
        T = self.config.caption_tokens if max_tokens is None else min(max_tokens + 2, self.config.caption_tokens)
        B = self.dit.config.block_size
        n_text = -(-T // B) * B
        row = layout_row([image_to_text((c.grid, c.grid), n_text)], text_block=B)
        dev = self.device
        sampler = BlockSampler(self.dit, self._sampler_config(
            "caption", steps, self.config.default_caption_cfg_scale if cfg_scale is None else cfg_scale, solver,
            self.config.caption_temperature if temperature is None else temperature))
        sampler.on_step = on_step
        sampler.start(context, row.positions[:n].expand(b, -1, -1).to(dev), row.segments[:n].expand(b, -1).to(dev),
                      row.block_ids[:n].expand(b, -1).to(dev), torch.ones(b, n, dtype=torch.bool, device=dev))
        decoder = TextDecoder(self, b, T - 2, drop_bos=True, rounding=rounding)
        generators = [torch.Generator(device=dev).manual_seed(s) for s in seed_list]

        def next_block(j: int, gens: list) -> torch.Tensor:
            sl = slice(n + j * B, n + (j + 1) * B)
            k = len(gens)
            return sampler.denoise(row.positions[sl].expand(k, -1, -1).to(dev), row.segments[sl].expand(k, -1).to(dev),
                                   gens)

        return TextStream(sampler, next_block, decoder, generators, n_text // B, [])

    def caption(self, images: Sequence, steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                solver: str | None = None, max_tokens: int | None = None,
                on_step: Callable[[int, int, torch.Tensor], None] | None = None,
                seeds: Sequence[int] | None = None, return_result: bool = False,
                rounding: bool | None = None, temperature: float | None = None) -> list[str] | Result:
        """One caption per image (see :meth:`stream_captions`); with ``return_result`` a
        :class:`Result` (captions, notices, token ids)."""
        result = self.stream_captions(images, steps, cfg_scale, seed, solver, max_tokens, on_step, seeds,
                                      rounding, temperature).run()
        return result if return_result else result.outputs
