"""diffusers' ``AutoencoderKL`` in plain torch, for loading a saved VAE without importing diffusers.

Importing diffusers costs about 5 s on a 2-core CPU (it pulls in ``torch._dynamo`` and every
model family), more than the rest of the app's start. This module rebuilds the same network
(Rombach et al. 2022; the SD VAE) with the same parameter names, so a folder written by
``AutoencoderKL.save_pretrained`` loads here and one saved here loads in diffusers. Training
still builds diffusers' own class (:func:`cola_mm.vae_image.model.build_autoencoder`); a test checks
that both give the same outputs from the same weights.

    encoder: conv_in → L down levels → mid → GroupNorm·SiLU → conv_out (2C) → quant_conv
             (each level: R resnets, then a stride-2 conv except at the last level)
    decoder: post_quant_conv → conv_in → mid → L up levels → GroupNorm·SiLU → conv_out (3)
             (widths reversed; each level: R+1 resnets, then ×2 nearest + conv except at the last)
    mid:     resnet → [single-head self-attention over the h·w positions] → resnet

Only the configuration family diffusers' AutoencoderKL describes with ``DownEncoderBlock2D``
/ ``UpDecoderBlock2D`` and SiLU is covered; :func:`unsupported` names what is not, and the
caller then falls back to diffusers.

Legend: ``b`` batch, ``c`` channels, ``h, w`` spatial size, ``C`` latent channels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = "diffusion_pytorch_model.safetensors"
EPS = 1e-6  # every GroupNorm of the network
# AutoencoderKL's constructor defaults, used for keys a config.json leaves out
DEFAULTS = dict(in_channels=3, out_channels=3, block_out_channels=[64], layers_per_block=1, act_fn="silu",
                latent_channels=4, norm_num_groups=32, sample_size=32, scaling_factor=0.18215,
                shift_factor=None, use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True)
IGNORED = {"_class_name", "_diffusers_version", "_name_or_path", "force_upcast", "latents_mean", "latents_std",
           "down_block_types", "up_block_types"}


def unsupported(config: dict) -> str | None:
    """Why this AutoencoderKL config cannot be built here, or None when it can."""
    levels = len(config.get("block_out_channels", DEFAULTS["block_out_channels"]))
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        return f"class {config['_class_name']}"
    if list(config.get("down_block_types", ["DownEncoderBlock2D"])) != ["DownEncoderBlock2D"] * levels:
        return f"down_block_types {config.get('down_block_types')}"
    if list(config.get("up_block_types", ["UpDecoderBlock2D"])) != ["UpDecoderBlock2D"] * levels:
        return f"up_block_types {config.get('up_block_types')}"
    if config.get("act_fn", "silu") != "silu":
        return f"act_fn {config['act_fn']}"
    unknown = sorted(set(config) - set(DEFAULTS) - IGNORED)
    return f"config keys {unknown}" if unknown else None


class ResnetBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), with a 1×1 conv on the skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=EPS)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=EPS)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SpatialAttention(nn.Module):
    """x + out(softmax(q·kᵀ/√c)·v) over the h·w positions of GN(x): one head as wide as x."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=EPS)
        self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c)])  # diffusers' to_out.0 (to_out.1 is a dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (b, hw, c)
        q, k, v = (proj(s).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))  # (b, 1, hw, c)
        a = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        return x + self.to_out[0](a).transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    def __init__(self, c: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c, c, groups), ResnetBlock(c, c, groups)])
        self.attentions = nn.ModuleList([SpatialAttention(c, groups)] if attention else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    """Pad right/bottom by one, then a 3×3 stride-2 conv (diffusers' padding=0 variant)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One encoder or decoder level: resnets, then an optional resampler (names as diffusers')."""

    def __init__(self, c_in: int, c_out: int, n_resnets: int, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups)
                                      for i in range(n_resnets)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(c_out)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(c_out)])
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.resample == "down":
            x = self.downsamplers[0](x)
        elif self.resample == "up":
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, c_in: int, C: int, widths: list[int], R: int, groups: int, attention: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(c_in, widths[0], 3, padding=1)
        last = len(widths) - 1
        self.down_blocks = nn.ModuleList([
            Level(widths[max(i - 1, 0)], widths[i], R, groups, None if i == last else "down")
            for i in range(len(widths))])
        self.mid_block = MidBlock(widths[-1], groups, attention)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=EPS)
        self.conv_out = nn.Conv2d(widths[-1], 2 * C, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down_blocks:
            x = level(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, C: int, c_out: int, widths: list[int], R: int, groups: int, attention: bool):
        super().__init__()
        rev = list(reversed(widths))
        self.conv_in = nn.Conv2d(C, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups, attention)
        last = len(rev) - 1
        self.up_blocks = nn.ModuleList([
            Level(rev[max(i - 1, 0)], rev[i], R + 1, groups, None if i == last else "up")
            for i in range(len(rev))])
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=EPS)
        self.conv_out = nn.Conv2d(widths[0], c_out, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            x = level(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class KLAutoencoder(nn.Module):
    """The network of a diffusers ``AutoencoderKL`` config; ``config`` is that config (a dict)."""

    def __init__(self, config: dict):
        super().__init__()
        reason = unsupported(config)
        if reason:
            raise ValueError(f"KLAutoencoder cannot build this AutoencoderKL ({reason})")
        self.config = {**DEFAULTS, **config, "_class_name": "AutoencoderKL"}
        cfg = self.config
        widths, C = list(cfg["block_out_channels"]), cfg["latent_channels"]
        cfg["down_block_types"] = ["DownEncoderBlock2D"] * len(widths)
        cfg["up_block_types"] = ["UpDecoderBlock2D"] * len(widths)
        R, groups, attention = cfg["layers_per_block"], cfg["norm_num_groups"], cfg["mid_block_add_attention"]
        self.encoder = Encoder(cfg["in_channels"], C, widths, R, groups, attention)
        self.decoder = Decoder(C, cfg["out_channels"], widths, R, groups, attention)
        self.quant_conv = nn.Conv2d(2 * C, 2 * C, 1) if cfg["use_quant_conv"] else None
        self.post_quant_conv = nn.Conv2d(C, C, 1) if cfg["use_post_quant_conv"] else None

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (b, 3, H, W) → posterior (mean, logvar), each (b, C, h, w); logvar clamped as diffusers does."""
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def register_to_config(self, **values) -> None:
        self.config.update(values)

    # ---- folders (diffusers' layout)
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, torch_dtype: torch.dtype = torch.float32) -> "KLAutoencoder":
        from safetensors.torch import load_file

        path = Path(path)
        model = cls(json.loads((path / "config.json").read_text()))
        state = load_file(str(path / WEIGHTS))
        for name, value in state.items():
            if not value.is_floating_point() or not torch.isfinite(value).all():
                raise ValueError(f"weight {name} is {value.dtype}" if not value.is_floating_point()
                                 else f"weight {name} has non-finite values")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:  # e.g. a pre-0.14 diffusers attention naming
            raise KeyError(f"weights do not match: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        return model.to(torch_dtype)

    def save_pretrained(self, path: str | os.PathLike, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS),
                  metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
