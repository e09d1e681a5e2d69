"""Stage ``ar``: an autoregressive LLaMA-style baseline on the same token windows as the text stages.

A plain decoder-only language model (``transformers.LlamaForCausalLM`` built from a
``LlamaConfig``, no pretrained weights) trained with next-token cross-entropy on exactly the
windows the Text VAE and the prior see (:class:`~cola_mm.training.stage.TextWindowStage`). It
serves two purposes:

* the **AR baseline** (preset ``small``, the same width/depth/heads/MLP as the DiT ``small``
  preset) that Cola-MM's text continuation is compared against;
* the **reference AR** for generative perplexity (``configs/ar_reference.yaml``: larger and
  longer-trained than the compared models), read by :mod:`cola_mm.evaluation.text_metrics`.

Exported components (plain Hugging Face folders)::

    components/ar/         config.json + model.safetensors: LlamaForCausalLM.from_pretrained(…)
    components/tokenizer/  the tokenizer the model was trained with

Parameter counts (vocabulary 8192; embeddings tied with the output layer; ``python -m
cola_mm.training.stages.ar`` prints them next to the DiT presets)::

    preset   non-embedding   embedding   total
    tiny           0.02 M        0.26 M      0.28 M
    small          4.82 M        2.10 M      6.92 M   (DiT small: 7.46 M, no token embedding)

(the small AR and the DiT share width, depth, heads and MLP width; the DiT's extra parameters
are its adaLN modulation; Cola-MM also has its Text VAE on top.)
    reference     14.16 M        3.15 M     17.31 M
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig
from cola_mm.training.stage import TextWindowStage
from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer

COMPONENT = "ar"

# LlamaConfig keys per preset; small mirrors prior/dit.py's small (d 256, 4 heads, 6 layers,
# SwiGLU hidden 704 = swiglu_hidden(256)).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),  # tests
    "small": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=704),  # baseline
    "reference": dict(hidden_size=384, num_hidden_layers=8, num_attention_heads=6, intermediate_size=1024),  # gen. PPL
}
DEFAULTS: dict[str, Any] = dict(max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=10000.0,
                                tie_word_embeddings=True, attention_dropout=0.0, initializer_range=0.02)
# model-section keys that are ours, not LlamaConfig's
OWN_KEYS = ("preset",)


def llama_config(section: dict[str, Any], tokenizer, seq_len: int):
    """``{preset: small, hidden_size: 320, …}`` → a LlamaConfig for this tokenizer.

    Any LlamaConfig key may override the preset; ``vocab_size`` may be given only if it equals
    the tokenizer's (``len(tokenizer)``); the special-token ids always come from the tokenizer.
    """
    from transformers import LlamaConfig

    section = dict(section)
    name = section.pop("preset", "small")
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown AR preset {name!r}; choose from {sorted(PRESETS)}")
    vocab = len(tokenizer)
    if "vocab_size" in section and section["vocab_size"] != vocab:
        raise ConfigError(f"model.vocab_size={section['vocab_size']} does not match the tokenizer's "
                          f"vocabulary ({vocab} tokens)")
    valid = set(LlamaConfig().to_dict())
    unknown = sorted(k for k in section if k not in valid)
    if unknown:
        raise ConfigError(f"model: unknown key {unknown[0]!r} for the AR stage; valid keys: preset, "
                          f"{', '.join(sorted(k for k in valid if not k.startswith('_')))}")
    values = {**DEFAULTS, **PRESETS[name], **section}
    values["num_key_value_heads"] = values.get("num_key_value_heads") or values["num_attention_heads"]
    if values["hidden_size"] % values["num_attention_heads"]:
        raise ConfigError(f"model.hidden_size ({values['hidden_size']}) must split over "
                          f"{values['num_attention_heads']} attention heads")
    if values["max_position_embeddings"] < seq_len:
        raise ConfigError(f"model.max_position_embeddings ({values['max_position_embeddings']}) is shorter "
                          f"than data.seq_len ({seq_len})")
    return LlamaConfig(**values, vocab_size=vocab, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def build_model(config):
    """A freshly initialised LlamaForCausalLM (sdpa attention, fp32)."""
    from transformers import LlamaForCausalLM

    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """{embedding, non_embedding, total} unique parameters (tied weights counted once)."""
    seen, total, emb = set(), 0, 0
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    for p in model.parameters():  # parameters() yields a tied tensor once
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        emb += p.numel() if id(p) in embedding_ids else 0
    return {"embedding": emb, "non_embedding": total - emb, "total": total}


def token_nll(lm, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token NLL, predicted tokens) of windows ``ids`` (b, n); packed, no padding."""
    logits = lm(input_ids=ids).logits[:, :-1].float()
    targets = ids[:, 1:]
    nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return nll, targets.numel()


class ARTrainModule(nn.Module):
    """``forward(ids) -> (mean next-token loss, logs)``; the loss runs inside forward."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        nll, n = token_nll(self.lm, ids)
        loss = nll / n
        return loss, {"nll": loss.item()}


class ARStage(TextWindowStage):
    name = "ar"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        if cfg.loss:
            raise ConfigError(f"loss: the AR stage has no loss options (next-token cross-entropy); "
                              f"remove {sorted(cfg.loss)}")
        self.model_config = llama_config(cfg.model, self.tokenizer, cfg.data.seq_len)
        self.module = ARTrainModule(build_model(self.model_config))

    @torch.no_grad()
    def validate(self, module: ARTrainModule, batches, device) -> dict[str, float]:
        """Token-weighted next-token loss and perplexity (exp of it) over the batches."""
        total, count = 0.0, 0
        for batch in batches:
            nll, n = token_nll(module.lm, batch["ids"].to(device))
            total, count = total + nll.item(), count + n
        loss = total / max(count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}

    def save_components(self, state_dict: dict[str, torch.Tensor], out: Path) -> None:
        """``save_pretrained`` the LM into ``out/ar`` and the tokenizer into ``out/tokenizer``."""
        export_lm(self.model_config, state_dict, out / COMPONENT)
        save_tokenizer(self.tokenizer, out / "tokenizer")


def export_lm(config, state_dict: dict[str, torch.Tensor], folder: Path, prefix: str = "lm.") -> None:
    """``save_pretrained`` into ``folder`` the LlamaForCausalLM whose weights are ``state_dict``'s
    ``prefix``-ed keys (a tied ``lm_head`` may be absent; anything else missing is an error)."""
    lm = build_model(config)
    weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    missing, unexpected = lm.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"LM export: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    lm.save_pretrained(folder)


def _report(vocab_size: int = 8192) -> None:
    """Print the parameter counts of the AR presets beside the DiT presets."""
    from cola_mm.prior.dit import DiT, preset as dit_preset

    tok = type("Tok", (), {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                           "__len__": lambda self: vocab_size})()
    print(f"{'model':<16}{'non-embedding':>15}{'embedding':>12}{'total':>12}")
    for name in PRESETS:
        c = parameter_counts(build_model(llama_config({"preset": name}, tok, 128)))
        print(f"{'ar ' + name:<16}{c['non_embedding']:>15,}{c['embedding']:>12,}{c['total']:>12,}")
    for name in ("tiny", "small"):
        c = parameter_counts(DiT(dit_preset(name, d_latent=16)))
        print(f"{'dit ' + name:<16}{c['non_embedding']:>15,}{c['embedding']:>12,}{c['total']:>12,}")


if __name__ == "__main__":
    _report()
