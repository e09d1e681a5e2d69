"""A LLaDA-style masked diffusion language model: the discrete-diffusion baseline of Cola-MM.

Masked diffusion (Sahoo et al. 2024, MDLM; Nie et al. 2025, LLaDA) corrupts text by replacing
each token with ``<mask>`` with probability t, and trains a **bidirectional** transformer to
predict the original tokens at the masked places:

    t ~ U(0, 1)  per sequence,   p = (1 − ε)·t + ε
    x_t = x_0 with each token masked with probability p
    L   = E[ (1 / p) · Σ_{masked i} −log p_θ(x_0^i | x_t) ] / n        (an upper bound on −log p(x_0)/n)

Generation (LLaDA's semi-autoregressive sampler with low-confidence remasking): the prompt is
followed by ``max_new_tokens`` masks, split into blocks of ``block_size``; block by block, left to
right, each of ``steps`` steps predicts every masked place of the sequence, draws a token for each
from the prediction (temperature 1: a plain sample, 0: the argmax) and keeps, inside the current
block, the ``k`` draws the model is most confident of (their probability); the others are masked
again. Every block gets ``steps // blocks`` steps and unmasks the same number per step (the
remainder to the first steps).

The network is the project's LLaMA-style block (:mod:`cola_mm.core.layers`: RMSNorm, SwiGLU,
RoPE) with no attention mask, a token embedding tied to the output layer, and nothing else: the
same width, depth, heads and MLP as the AR baseline and the DiT prior of a preset.

Legend: ``b`` batch, ``n`` positions, ``d`` width, ``V`` vocabulary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cola_mm.core.components import CheckpointError, PretrainedMixin, read_component_config
from cola_mm.core.config import Config, check
from cola_mm.core.families import check_tokenizer, expect_family
from cola_mm.core.layers import Block, RMSNorm, rope_angles, swiglu_hidden

KIND = "MaskedDiffusionLM"
COMPONENT = "mdm"  # the component folder of an exported model: mdm/ + tokenizer/
EPS = 1e-3  # the least masking probability of a training row (LLaDA's ε)


@dataclass(frozen=True)
class MaskedDiffusionConfig(Config):
    vocab_size: int  # the tokenizer's vocabulary (``len(tokenizer)``)
    mask_token_id: int  # the tokenizer's ``<mask>``
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 6
    mlp_hidden: int = 0  # SwiGLU hidden width; 0 = swiglu_hidden(d_model) (704 at 256, as the DiT)
    max_len: int = 128  # the trained sequence length (prompt + generated tokens at sampling)
    rope_theta: float = 10000.0

    def __post_init__(self):
        check(self.vocab_size >= 2, f"vocab_size must be >= 2, got {self.vocab_size}")
        check(0 <= self.mask_token_id < self.vocab_size,
              f"mask_token_id {self.mask_token_id} is outside the vocabulary ({self.vocab_size} tokens)")
        check(self.d_model >= 1 and self.n_heads >= 1 and self.d_model % self.n_heads == 0
              and (self.d_model // self.n_heads) % 2 == 0,
              f"n_heads ({self.n_heads}) must split d_model ({self.d_model}) into an even head width")
        check(self.n_layers >= 1, f"n_layers must be >= 1, got {self.n_layers}")
        check(self.mlp_hidden >= 0, f"mlp_hidden must be >= 0, got {self.mlp_hidden}")
        check(self.max_len >= 2, f"max_len must be >= 2, got {self.max_len}")

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or swiglu_hidden(self.d_model)


# Presets mirror the AR's (cola_mm/training/stages/ar.py) and the DiT's: tiny (tests), small (the
# DiT small's width/depth/heads/MLP), matched (9 layers: non-embedding parameters within 5 % of
# the DiT small, whose adaLN the plain blocks do not have).
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, n_heads=2, n_layers=2, mlp_hidden=64),
    "small": dict(d_model=256, n_heads=4, n_layers=6),
    "matched": dict(d_model=256, n_heads=4, n_layers=9),
}


class MaskedDiffusionLM(PretrainedMixin, nn.Module):
    """``forward(ids (b, n)) -> logits (b, n, V)``; every position sees every other one."""

    KIND = KIND
    CONFIG_CLASS = MaskedDiffusionConfig

    def __init__(self, config: MaskedDiffusionConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config.d_model, config.n_heads, config.hidden)
                                    for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        positions = torch.arange(n, device=ids.device).expand(b, n)
        rope = rope_angles(positions, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h, rope, None)  # no mask: bidirectional
        return self.norm(h) @ self.embed.weight.T  # tied output layer


# --------------------------------------------------------------------------- training


def mask_tokens(ids: torch.Tensor, mask_id: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, masked (b, n) bool, p (b,)): each row masked with its own p = (1 − ε)·t + ε, t ~ U(0, 1)."""
    b, n = ids.shape
    t = torch.rand(b, device=ids.device, generator=generator)
    p = (1 - EPS) * t + EPS
    masked = torch.rand(b, n, device=ids.device, generator=generator) < p[:, None]
    return torch.where(masked, torch.full_like(ids, mask_id), ids), masked, p


def masked_diffusion_loss(logits: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor, p: torch.Tensor
                          ) -> torch.Tensor:
    """LLaDA's loss: cross-entropy on the masked places weighted 1/p, summed, over all b·n places."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none")
    weight = (masked.float() / p[:, None]).reshape(-1)
    return (ce * weight).sum() / ids.numel()


# --------------------------------------------------------------------------- sampling


def transfer_counts(masked: int, steps: int) -> list[int]:
    """How many of ``masked`` places each of ``steps`` steps unmasks (equal; remainder first)."""
    steps = max(1, min(steps, masked))
    base, extra = divmod(masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


@torch.no_grad()
def sample(model: MaskedDiffusionLM, prompt: torch.Tensor, max_new_tokens: int, steps: int, block_size: int,
           temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The ``max_new_tokens`` tokens after ``prompt`` (b, p) → (b, max_new_tokens), by
    semi-autoregressive low-confidence remasking (the module docstring). ``steps`` is the total
    over all blocks: each block gets ``steps // blocks`` of them, at least one, and never more
    than it has places (one token per step at most)."""
    cfg = model.config
    b, p = prompt.shape
    if p + max_new_tokens > cfg.max_len:
        raise ValueError(f"prompt ({p}) + max_new_tokens ({max_new_tokens}) is longer than the model's "
                         f"trained length ({cfg.max_len}); cut the prompt")
    x = torch.cat([prompt, torch.full((b, max_new_tokens), cfg.mask_token_id, dtype=prompt.dtype,
                                      device=prompt.device)], dim=1)
    n_blocks = -(-max_new_tokens // block_size)
    per_block = max(1, steps // n_blocks)
    for blk in range(n_blocks):
        lo, hi = p + blk * block_size, min(p + (blk + 1) * block_size, p + max_new_tokens)
        for k in transfer_counts(hi - lo, per_block):
            logits = model(x).float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                draw = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(b, -1)
            else:
                probs = torch.softmax(logits, dim=-1)
                draw = probs.argmax(-1)
            confidence = probs.gather(-1, draw[..., None]).squeeze(-1)  # (b, n)
            still = x == cfg.mask_token_id
            still[:, :lo] = False
            still[:, hi:] = False
            confidence = torch.where(still, confidence, torch.full_like(confidence, -1.0))
            keep = confidence.topk(k, dim=-1).indices  # (b, k): the surest masked places of the block
            x.scatter_(1, keep, draw.gather(1, keep))
    return x[:, p:]


# --------------------------------------------------------------------------- a folder to generate with


class MaskedDiffusionGenerator:
    """``generate_text`` for a masked diffusion model, with the pipeline's signature, so the text
    benches and the suite treat it like the prior and the AR (same prompts, seeds, metrics).

    Seeding follows the prior's sampler: every prompt continued at seed s starts from the same
    random state. ``steps`` (default: one per generated token, LLaDA's best) is the total number
    of denoising steps; ``cfg_scale`` is accepted and ignored. Text after the first ``<eos>`` is
    dropped."""

    family = "masked_diffusion"

    def __init__(self, model: MaskedDiffusionLM, tokenizer, block_size: int = 16, temperature: float = 1.0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.temperature = temperature

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs) -> "MaskedDiffusionGenerator":
        """From a model folder; the sampler's block is the one trained with (``sample_block_size``
        in its config.json) unless ``block_size=`` is given."""
        model, tokenizer, block = load_masked_diffusion(folder, with_block_size=True)
        return cls(model, tokenizer, **{"block_size": block, **kwargs})

    def generate_text(self, prompt: str, max_new_tokens: int = 48, steps: int | None = None,
                      cfg_scale: float | None = None, seed: int = 0) -> str:
        return self.generate_texts([prompt], max_new_tokens, steps, seed)[0][0]

    @torch.no_grad()
    def generate_texts(self, prompts: list[str], max_new_tokens: int = 48, steps: int | None = None,
                       seed: int = 0) -> tuple[list[str], int]:
        """Continue several prompts in one batch: (texts, tokens before each ``<eos>``, summed).
        The sampler needs one prompt length, so every prompt keeps its last ``min(length)`` tokens
        (prompts of one length, as the benches' held-out windows are, lose nothing)."""
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        if max_new_tokens >= self.model.config.max_len:  # no room left for a prompt token
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be below the model's trained length "
                             f"({self.model.config.max_len})")
        rows = [([tok.bos_token_id] + tok.encode(p, add_special_tokens=False))[-(self.model.config.max_len
                                                                                 - max_new_tokens):] for p in prompts]
        width = min(map(len, rows))
        generator = torch.Generator(device=device).manual_seed(seed)
        out = sample(self.model, torch.tensor([r[-width:] for r in rows], device=device), max_new_tokens,
                     steps or max_new_tokens, self.block_size, self.temperature, generator).tolist()
        out = [o[:o.index(tok.eos_token_id)] if tok.eos_token_id in o else o for o in out]
        return [tok.decode(o, skip_special_tokens=True) for o in out], sum(map(len, out))


def load_masked_diffusion(folder: str | os.PathLike, with_block_size: bool = False):
    """(model, tokenizer) from a ``masked-diffusion`` run's model folder (``mdm/`` + ``tokenizer/``),
    plus the sampler block it was exported with when ``with_block_size``; a tokenizer whose
    vocabulary or mask token differs from the model's is a one-line error."""
    from cola_mm.vae_text.tokenizer import load_tokenizer

    folder = Path(folder)
    expect_family(folder, "masked_diffusion")
    model_dir = folder / COMPONENT if (folder / COMPONENT).is_dir() else folder
    tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else model_dir.parent / "tokenizer"
    if not (model_dir / "config.json").is_file() or not tok_dir.is_dir():
        raise CheckpointError(f"{folder}: expected a masked diffusion model folder ({COMPONENT}/config.json and "
                              f"tokenizer/, from `cola-mm train` with stage: masked-diffusion)")
    model = MaskedDiffusionLM.from_pretrained(model_dir)
    _, extra = read_component_config(model_dir, KIND, MaskedDiffusionConfig)
    tokenizer = load_tokenizer(tok_dir)
    check_tokenizer(model.config.vocab_size, model.config.mask_token_id, tokenizer, str(model_dir), str(tok_dir))
    if not with_block_size:
        return model, tokenizer
    block = extra.get("sample_block_size", 16)
    return model, tokenizer, block if isinstance(block, int) and not isinstance(block, bool) and block > 0 else 16
