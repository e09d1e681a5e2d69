"""Image VAE: diffusers' ``AutoencoderKL`` architecture, and patchify to the prior's latent tokens.

The autoencoder is diffusers' own class (Rombach et al. 2022, the SD VAE design), built from
a config and trained from scratch here (stage ``vae-image``), so a user's pretrained diffusers
VAE folder loads in its place and ours loads with ``diffusers.AutoencoderKL.from_pretrained``.

    image x (b, 3, H, W) in [-1, 1]
      → encoder → posterior N(mean, e^logvar) over a latent grid (b, C, H/f, W/f), f = 2^(levels−1)
      → normalise (z − shift)·scale            (diffusers' shift_factor / scaling_factor)
      → patchify p×p                           → latent tokens (b, (H/fp)·(W/fp), C·p·p)

At 64 px with the default f = 8, C = 4, p = 2 an image is a 4×4 grid of 16 tokens of 16
channels: one prior block of the Text VAE's latent width.

Folder layout (what ``save_pretrained`` writes)::

    config.json                       diffusers' AutoencoderKL config (scaling/shift factor included)
    diffusion_pytorch_model.safetensors
    cola_mm.json                      {"_class": "ImageVAE", "image_size": 64, "patch_size": 2}

Loading (``ImageVAE.from_pretrained``) builds the network with :mod:`cola_mm.vae_image.kl`, the same
architecture and parameter names in plain torch, so the pipeline and the app never import
diffusers (~5 s on 2 cores); configs it does not cover fall back to diffusers' class. Training
from scratch builds diffusers' class (:func:`build_autoencoder`).

A folder without ``cola_mm.json`` (any diffusers VAE) loads with ``image_size`` = its
``sample_size`` and the smallest ``patch_size`` whose tokens are at least 16 channels wide.

Legend: ``b`` batch, ``C`` latent channels, ``h, w`` latent grid, ``p`` patch, ``n`` tokens.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from cola_mm.core.components import CheckpointError, read_json, share_as_usual
from cola_mm.core.config import Config, check
from cola_mm.vae_image.kl import DEFAULTS as KL_DEFAULTS, KLAutoencoder, unsupported

KIND = "ImageVAE"
SIDECAR = "cola_mm.json"


@dataclass(frozen=True)
class ImageVAEConfig(Config):
    image_size: int = 64  # square input side (pixels)
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)  # one level per entry; f = 2^(levels-1)
    layers_per_block: int = 1  # resnet blocks per level
    latent_channels: int = 4  # C
    norm_num_groups: int = 32  # GroupNorm groups (must divide every width)
    mid_attention: bool = True  # self-attention in the middle block
    patch_size: int = 2  # p: latent patch → one prior token of C·p·p channels
    latent_shift: float = 0.0  # prior boundary: (z − shift)·scale
    latent_scale: float = 1.0

    def __post_init__(self):
        check(len(self.block_out_channels) >= 1, "block_out_channels needs at least one level")
        check(self.norm_num_groups >= 1 and all(c >= 1 for c in self.block_out_channels),
              f"norm_num_groups ({self.norm_num_groups}) and every block_out_channels width "
              f"{list(self.block_out_channels)} must be >= 1")
        check(all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
              f"norm_num_groups ({self.norm_num_groups}) must divide every block_out_channels width "
              f"{list(self.block_out_channels)}")
        check(self.latent_channels >= 1 and self.patch_size >= 1, "latent_channels and patch_size must be >= 1")
        check(self.latent_scale > 0, f"latent_scale must be > 0, got {self.latent_scale}")
        side = self.image_size // self.downsample
        check(self.image_size % self.downsample == 0 and side % self.patch_size == 0,
              f"image_size {self.image_size} must be divisible by the downsampling {self.downsample} "
              f"times patch_size {self.patch_size}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def grid(self) -> int:
        """Tokens per side: image_size / (downsample · patch_size)."""
        return self.image_size // self.downsample // self.patch_size

    @property
    def n_tokens(self) -> int:
        return self.grid ** 2

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size ** 2


PRESETS: dict[str, dict] = {
    "tiny": dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=8, mid_attention=False),  # tests
    "small": dict(block_out_channels=(16, 32, 64, 64), norm_num_groups=8),  # CPU demo
    "base": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2),  # GPU
}


def preset(name: str, **overrides) -> ImageVAEConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown ImageVAE preset {name!r}; choose from {sorted(PRESETS)}")
    return ImageVAEConfig(**{**PRESETS[name], **overrides})


def build_autoencoder(config: ImageVAEConfig):
    from diffusers import AutoencoderKL

    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        sample_size=config.image_size, scaling_factor=config.latent_scale, shift_factor=config.latent_shift,
        mid_block_add_attention=config.mid_attention)


def patchify(z: torch.Tensor, p: int) -> torch.Tensor:
    """(b, C, h, w) → (b, (h/p)·(w/p), C·p·p), tokens row by row, each (C, p, p) flattened."""
    b, C, h, w = z.shape
    z = z.reshape(b, C, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (b, h/p, w/p, C, p, p)
    return z.reshape(b, (h // p) * (w // p), C * p * p)


def unpatchify(tokens: torch.Tensor, p: int, C: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (b, gh·gw, C·p·p) → (b, C, gh·p, gw·p)."""
    b = tokens.shape[0]
    gh, gw = grid
    z = tokens.reshape(b, gh, gw, C, p, p).permute(0, 3, 1, 4, 2, 5)  # (b, C, gh, p, gw, p)
    return z.reshape(b, C, gh * p, gw * p)


class ImageVAE(nn.Module):
    KIND = KIND

    def __init__(self, config: ImageVAEConfig, autoencoder=None):
        super().__init__()
        self.config = config
        self.ae = autoencoder if autoencoder is not None else build_autoencoder(config)

    # ---- the autoencoder
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (b, 3, H, W) in [-1, 1] → posterior (mean, logvar), each (b, C, h, w)."""
        if isinstance(self.ae, KLAutoencoder):
            return self.ae.moments(x.to(self.dtype))
        dist = self.ae.encode(x.to(self.dtype)).latent_dist
        return dist.mean, dist.logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent grid (b, C, h, w) (not normalised) → image (b, 3, H, W), about [-1, 1]."""
        if isinstance(self.ae, KLAutoencoder):
            return self.ae.decode(z.to(self.dtype))
        return self.ae.decode(z.to(self.dtype)).sample

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * eps

    @property
    def dtype(self) -> torch.dtype:
        return next(self.ae.parameters()).dtype

    # ---- the prior boundary
    def to_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Latent grid (b, C, h, w) → normalised prior tokens (b, n, C·p·p)."""
        return patchify((z - self.config.latent_shift) * self.config.latent_scale, self.config.patch_size)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalised prior tokens (b, n, C·p·p) → latent grid (b, C, h, w)."""
        g = int(math.isqrt(tokens.shape[1]))
        if g * g != tokens.shape[1]:
            raise ValueError(f"{tokens.shape[1]} tokens do not form a square grid")
        z = unpatchify(tokens, self.config.patch_size, self.config.latent_channels, (g, g))
        return z / self.config.latent_scale + self.config.latent_shift

    @torch.no_grad()
    def images_to_tokens(self, x: torch.Tensor, sample: bool = False,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = self.encode(x)
        return self.to_tokens(self.sample(mean, logvar, generator) if sample else mean)

    @torch.no_grad()
    def tokens_to_images(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(self.from_tokens(tokens)).clamp(-1, 1)

    def with_latent_stats(self, shift: float, scale: float) -> "ImageVAE":
        self.config = dataclasses.replace(self.config, latent_shift=float(shift), latent_scale=float(scale))
        self.ae.register_to_config(shift_factor=float(shift), scaling_factor=float(scale))
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def fingerprint(self) -> str:
        """A hash of the config and the float32 weights: what a latent cache records and checks."""
        import hashlib
        import json as _json

        h = hashlib.sha256(_json.dumps(self.config.to_dict(), sort_keys=True, default=str).encode())
        for name, value in sorted(self.ae.state_dict().items()):
            h.update(name.encode())
            h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # ---- folders
    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """diffusers' folder (loadable by ``AutoencoderKL.from_pretrained``) plus our sidecar;
        ``dtype`` stores the weights in that precision (loading casts back to float32)."""
        path = Path(path)
        self.ae.register_to_config(shift_factor=self.config.latent_shift, scaling_factor=self.config.latent_scale)
        ae = self.ae
        if dtype is not None and isinstance(ae, KLAutoencoder):
            ae = copy.deepcopy(self.ae).to(dtype)
        elif dtype is not None:  # a storage copy (diffusers' note about fp32-kept modules: none here)
            from diffusers.utils import logging as diffusers_logging

            level = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            try:
                ae = copy.deepcopy(self.ae).to(dtype)
            finally:
                diffusers_logging.set_verbosity(level)
        ae.save_pretrained(str(path), safe_serialization=True)
        side = {"_class": KIND, "image_size": self.config.image_size, "patch_size": self.config.patch_size}
        tmp = path / (SIDECAR + ".tmp")
        tmp.write_text(json.dumps(side, indent=2) + "\n")
        os.replace(tmp, path / SIDECAR)
        share_as_usual(path, folder_too=False)  # the folder may be the caller's

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        patch_size: int | None = None, image_size: int | None = None,
                        backend: str = "auto") -> "ImageVAE":
        """Ours or any diffusers ``AutoencoderKL`` folder (e.g. an SD VAE saved with
        ``save_pretrained``), or a pipeline/run folder holding one as ``image_vae/``;
        ``patch_size``/``image_size`` override what the folder says.

        ``backend``: ``"torch"`` builds the network with :mod:`cola_mm.vae_image.kl` (no diffusers import,
        ~5 s less start-up), ``"diffusers"`` with diffusers' class, ``"auto"`` the first when the
        config and weights allow it."""
        if backend not in ("auto", "torch", "diffusers"):
            raise ValueError(f"backend must be auto, torch or diffusers, got {backend!r}")
        path = Path(path)
        if (path / "image_vae").is_dir():
            path = path / "image_vae"
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not an image VAE folder (no config.json)")
        raw = read_json(path / "config.json")
        if raw.get("_class_name") != "AutoencoderKL":
            raise CheckpointError(f"{path} holds a {raw.get('_class_name') or raw.get('_class') or 'unknown'} "
                                  f"model, expected a diffusers AutoencoderKL")
        side = read_json(path / SIDECAR) if (path / SIDECAR).is_file() else {}
        ae = None
        if backend != "diffusers" and (path / "diffusion_pytorch_model.safetensors").is_file() and not unsupported(raw):
            try:
                ae = KLAutoencoder.from_pretrained(path)
            except KeyError as err:
                if backend == "torch":
                    raise CheckpointError(f"{path}: {err.args[0]}") from None
            except (OSError, ValueError, RuntimeError, TypeError, AttributeError, ZeroDivisionError,
                    SafetensorError) as err:
                raise CheckpointError(f"{path}: cannot load the AutoencoderKL "
                                      f"({(str(err).splitlines() or [type(err).__name__])[0]})") from None
        elif backend == "torch":
            raise CheckpointError(f"{path}: the torch backend cannot load this VAE "
                                  f"({unsupported(raw) or 'no diffusion_pytorch_model.safetensors'})")
        if ae is None:
            from diffusers import AutoencoderKL

            try:
                ae = AutoencoderKL.from_pretrained(str(path), low_cpu_mem_usage=False, torch_dtype=torch.float32)
            except (OSError, ValueError, RuntimeError) as err:
                raise CheckpointError(f"{path}: cannot load the AutoencoderKL ({str(err).splitlines()[0]})") from None
        ac = {**KL_DEFAULTS, **dict(ae.config)}
        C = ac["latent_channels"]
        p = patch_size or side.get("patch_size") or max(1, math.ceil(math.sqrt(16 / C)))
        config = ImageVAEConfig(
            image_size=image_size or side.get("image_size") or int(ac["sample_size"]),
            block_out_channels=tuple(ac["block_out_channels"]), layers_per_block=ac["layers_per_block"],
            latent_channels=C, norm_num_groups=ac["norm_num_groups"], mid_attention=ac["mid_block_add_attention"],
            patch_size=p, latent_shift=float(ac["shift_factor"] or 0.0), latent_scale=float(ac["scaling_factor"]))
        return cls(config, ae).to(map_location)
