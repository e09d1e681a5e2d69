"""User-supplied images → what the models take: an RGB ``size``×``size`` ``PIL.Image`` (default 64).

Anything a user can hand us (a path, raw bytes, an upload such as streamlit's ``UploadedFile``,
or a ``PIL.Image``) goes through three steps, each usable on its own:

1. :func:`open_image` — size checks, decoding, refusals. Files over ``max_bytes`` are refused
   before they are read where the size is known up front. Pillow's decompression-bomb guard stays
   on: images over ``Image.MAX_IMAGE_PIXELS`` pixels are refused (Pillow itself only warns between
   1× and 2× that limit; here both count as refusals). Pixels are decoded at once, so truncated
   files fail here, and the EXIF orientation is applied (phone photos come out upright).
2. :func:`to_rgb` — every Pillow mode to 8-bit RGB; transparent pixels are composited on
   :data:`BACKGROUND`, the canvas colour of the training images (``cola_mm.data.shapes.BACKGROUND``).
3. :func:`fit_square` — scale the shorter side to ``size`` and keep the centre square.

:func:`load_image` runs all three. Every refusal is an :class:`ImageInputError` whose message is
one line naming the input, fit to show a user as is. :func:`image_to_tensor`,
:func:`tensor_to_image` and :func:`make_grid` convert to and from model tensors and lay results
out for viewing.

Example::

    from cola_mm.core.images import ImageInputError, load_image
    try:
        img = load_image("photo.jpg")          # RGB, 64×64
    except ImageInputError as err:
        print(f"error: {err}")
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import struct
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps

MAX_INPUT_BYTES = 20 * 1024 * 1024  # uploads and files larger than this are refused
BACKGROUND = (245, 245, 245)  # same as cola_mm.data.shapes.BACKGROUND; transparent pixels become this

REDUCING_GAP = 3.0  # Pillow's resize(reducing_gap=): box-reduce first when shrinking ≥ 3×, then LANCZOS
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # scaled to 8 bit with numpy
PLAIN_MODES = ("1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")  # Image.convert("RGB") is right
# What Pillow raises on a broken file, at open or while decoding pixels.
CORRUPT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


class ImageInputError(ValueError):
    """An image that cannot be used; ``str(err)`` is a one-line message for the user."""


# --------------------------------------------------------------------------- opening


def open_image(source: Any, max_bytes: int = MAX_INPUT_BYTES) -> Image.Image:
    """Decode ``source`` into a fully loaded, upright ``PIL.Image`` (any mode, original size).

    ``source`` is one of:

    - a path (``str`` or ``os.PathLike``); its size on disk is checked before it is opened;
    - ``bytes`` / ``bytearray`` / ``memoryview`` holding the encoded file;
    - a binary file-like object (``.read()``; e.g. an open file, ``io.BytesIO`` or streamlit's
      ``UploadedFile``). A ``.size`` attribute, when present, is checked before anything is read;
      ``.getvalue()`` is used when present (the whole buffer, whatever the read position), else
      at most ``max_bytes + 1`` bytes are read from the current position. ``.name`` names it in
      messages;
    - a ``PIL.Image.Image``: not copied before loading (its pixels are loaded in place), but the
      returned image is a new object.

    Raises :class:`ImageInputError` for: a missing path, a directory, an empty input, more than
    ``max_bytes`` bytes, data Pillow cannot identify, truncated or corrupt data, and more pixels
    than ``Image.MAX_IMAGE_PIXELS``. Raises ``TypeError`` for any other kind of ``source`` and
    ``ValueError`` for ``max_bytes < 1``. Animated images give their first frame.
    """
    return _open(source, max_bytes, draft_size=None)


def _open(source: Any, max_bytes: int, draft_size: tuple[int, int] | None) -> Image.Image:
    """:func:`open_image`, optionally asking the JPEG decoder for a reduced image (``draft``)."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
    if isinstance(source, Image.Image):
        # The caller's image: not drafted, since draft() would change the caller's object.
        with _pillow_errors("the image"):
            return _load_pixels(source, "the image", draft_size=None)
    fp, name = _read_source(source, max_bytes)
    with _pillow_errors(name):
        with warnings.catch_warnings():
            # Pillow warns between 1× and 2× MAX_IMAGE_PIXELS; _check_pixels refuses those images
            # with a clearer message, so the warning itself is not shown.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        with img:  # closes the file; the returned image is a loaded copy
            return _load_pixels(img, name, draft_size)


def _read_source(source: Any, max_bytes: int) -> tuple[str | io.BytesIO, str]:
    """Check the size of a non-PIL ``source``; return what ``Image.open`` takes and its name."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ImageInputError(f"image not found: {path}")
        if os.path.isdir(path):
            raise ImageInputError(f"{path} is a directory, not an image file")
        _check_bytes(os.path.getsize(path), max_bytes, path)
        return path, path

    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "the image data"
        data = bytes(source)
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "") or "the uploaded file")
        declared = getattr(source, "size", None)
        if isinstance(declared, int):
            _check_bytes(declared, max_bytes, name)
        if hasattr(source, "getvalue"):
            data = source.getvalue()
        else:
            data = source.read(max_bytes + 1)  # one byte more than allowed tells us it is too big
    else:
        raise TypeError("source must be a path, bytes, a binary file-like object or a PIL image, "
                        f"got {type(source).__name__}")
    _check_bytes(len(data), max_bytes, name)
    return io.BytesIO(data), name


def _check_bytes(n_bytes: int, max_bytes: int, name: str) -> None:
    """Refuse empty inputs and inputs over ``max_bytes``."""
    if n_bytes == 0:
        raise ImageInputError(f"{name} is empty")
    if n_bytes > max_bytes:
        raise ImageInputError(f"{name} is too large ({_format_bytes(n_bytes)}; "
                              f"the limit is {_format_bytes(max_bytes)})")


def _format_bytes(n: int) -> str:
    """``123 bytes``, ``4.5 KiB``, ``20.0 MiB``."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def _load_pixels(img: Image.Image, name: str, draft_size: tuple[int, int] | None) -> Image.Image:
    """Refuse too many pixels, decode the pixels, and apply the EXIF orientation (returns a copy)."""
    _check_pixels(img.size, name)
    if draft_size is not None:
        img.draft("RGB", draft_size)  # JPEG only: decode at 1/2, 1/4 or 1/8 scale, ≥ draft_size
    img.load()
    return ImageOps.exif_transpose(img)


def _check_pixels(size: tuple[int, int], name: str) -> None:
    """Refuse images with more than ``Image.MAX_IMAGE_PIXELS`` pixels (no limit when it is None)."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = size
    if limit is not None and width * height > limit:
        raise ImageInputError(f"{name} has too many pixels ({width}×{height} = {width * height:,}; "
                              f"the limit is {limit:,})")


@contextlib.contextmanager
def _pillow_errors(name: str) -> Iterator[None]:
    """Turn Pillow's exceptions for a bad input into an :class:`ImageInputError` naming it."""
    try:
        yield
    except ImageInputError:
        raise
    except Image.DecompressionBombError as err:
        # Raised inside Image.open, above 2× the limit, before the size is known to us; Pillow's
        # message says "Image size (N pixels) exceeds limit of M pixels".
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(found.group(1)):,}" if found else "more than twice the limit"
        raise ImageInputError(f"{name} has too many pixels ({pixels}; "
                              f"the limit is {Image.MAX_IMAGE_PIXELS:,})") from err
    except Image.UnidentifiedImageError as err:
        raise ImageInputError(f"{name} is not an image Pillow can read") from err
    except PermissionError as err:
        raise ImageInputError(f"cannot read {name}: permission denied") from err
    except CORRUPT_ERRORS as err:
        detail = " ".join(str(err).split())  # keep the message on one line
        raise ImageInputError(f"{name} is truncated or corrupt ({detail or type(err).__name__})") from err


# --------------------------------------------------------------------------- modes


def to_rgb(img: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Convert any Pillow mode to 8-bit ``RGB``; returns ``img`` itself when it is plain RGB.

    - alpha (``RGBA``, ``RGBa``, ``LA``, ``La``, ``PA``), a palette with alpha, or a transparent
      colour (``info["transparency"]``, e.g. a GIF or a PNG with tRNS): composited on
      ``background``;
    - ``1``, ``L``, ``P``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: ``Image.convert``;
    - 16-bit ``I;16*``: divided by 257 (65535 → 255);
    - 32-bit ``I`` and ``F``: clipped to 0..255 when the maximum is at most 255 (already 8-bit
      values), otherwise scaled by 255 / maximum (negatives clip to 0; NaN and ±inf count as 0).
      So a float image in 0..1 comes out nearly black: scale it to 0..255 first.

    Any other mode raises :class:`ImageInputError`.
    """
    mode = img.mode
    if mode in HIGH_BIT_MODES:
        return _high_bit_to_rgb(img, background)
    if mode not in PLAIN_MODES + ("RGB", "RGBA", "RGBa", "LA", "La", "PA"):
        raise ImageInputError(f"unsupported image mode {mode!r}")
    if img.has_transparency_data:
        if mode == "La":  # Pillow converts La (premultiplied) to RGBA only through LA
            img = img.convert("LA")
        return _composite(img.convert("RGBA"), background)
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _composite(rgba: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Alpha-blend an ``RGBA`` image over an opaque ``background`` colour; returns ``RGB``."""
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _high_bit_to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """``I;16*``, ``I`` or ``F`` → RGB, scaled as :func:`to_rgb` describes."""
    values = np.asarray(img).astype(np.float64)  # (h, w); I;16B arrives big-endian, astype fixes it
    if img.mode.startswith("I;16"):
        gray = values / 257.0
    else:
        gray = np.where(np.isfinite(values), values, 0.0)
        top = gray.max()
        if top > 255:
            gray = gray * (255.0 / top)
        gray = np.clip(gray, 0, 255)
    lum = Image.fromarray(np.rint(gray).astype(np.uint8))  # mode L
    key = img.info.get("transparency")  # e.g. a 16-bit grey PNG with tRNS: one transparent value
    if isinstance(key, (int, float)):
        alpha = Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8))
        return _composite(Image.merge("LA", (lum, alpha)).convert("RGBA"), background)
    return lum.convert("RGB")


# --------------------------------------------------------------------------- size


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` and keep the centre ``size``×``size`` square.

    Done as one resize of the centre square of ``img`` (the same result as resizing then
    cropping, without rounding the intermediate size): LANCZOS with Pillow's ``reducing_gap``
    when shrinking, BICUBIC when enlarging (so 1×1 or 3×5 images work), a plain crop when the
    shorter side is already ``size``. Works in any mode (``1`` and ``P`` resize by nearest
    neighbour, as Pillow does); :func:`load_image` gives it RGB.
    """
    _check_size(size)
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    if side == size:
        return img.crop(box)
    if side > size:
        return img.resize((size, size), Image.Resampling.LANCZOS, box=box,
                          reducing_gap=REDUCING_GAP)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box)


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")


def load_image(source: Any, size: int = 64, max_bytes: int = MAX_INPUT_BYTES) -> Image.Image:
    """The model input for ``source``: an RGB ``size``×``size`` image (see the module docstring).

    :func:`open_image`, then :func:`to_rgb` on :data:`BACKGROUND`, then :func:`fit_square`.
    Large JPEGs are decoded directly at a reduced scale that still leaves at least
    ``2 * size`` pixels on each side (``Image.draft``), which is much faster than decoding them
    whole. Raises :class:`ImageInputError` for an unusable image, ``ValueError`` for ``size < 1``.
    """
    _check_size(size)
    img = _open(source, max_bytes, draft_size=(2 * size, 2 * size))
    return fit_square(to_rgb(img), size)


# --------------------------------------------------------------------------- tensors and grids


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """An image (any mode, via :func:`to_rgb`) → a float32 tensor ``(3, H, W)`` in [-1, 1]."""
    pixels = np.array(to_rgb(img), dtype=np.uint8)  # (h, w, 3), a writable copy
    x = torch.from_numpy(pixels).permute(2, 0, 1)  # (3, h, w)
    return x.float() / 127.5 - 1.0


def random_warp(x: torch.Tensor, degrees: float, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image of x (b, 3, H, W) by ~U(±degrees) and zoom it by ~U(1 ± scale) about its
    centre, edges replicated (bilinear). For images whose label does not depend on geometry
    (digits), not for ones whose caption names a position or a size (shapes)."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (b, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """The inverse of :func:`image_to_tensor`: ``(3, H, W)`` in [-1, 1] (clamped; NaN → 0) → RGB.

    Exact round trip: ``tensor_to_image(image_to_tensor(img))`` has the pixels of ``img``.
    """
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(x.shape)}")
    x = torch.nan_to_num(x.detach().to("cpu", torch.float32), nan=0.0).clamp(-1.0, 1.0)
    pixels = ((x + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0)  # (h, w, 3)
    return Image.fromarray(np.ascontiguousarray(pixels.numpy()))


def make_grid(images: list[Image.Image], cols: int | None = None, pad: int = 2,
              labels: list[str] | None = None) -> Image.Image:
    """Lay equally sized images out in a grid on white, ``pad`` pixels between and around them.

    ``cols`` defaults to ``ceil(sqrt(n))``; rows fill left to right, top to bottom. With
    ``labels`` (one per image), each image gets a line of text under it in Pillow's default
    font, cut to the image width. The grid is ``cols * (w + pad) + pad`` wide and
    ``rows * (h + label_height + pad) + pad`` high. Images of other modes go through
    :func:`to_rgb`. Raises ``ValueError`` for no images, unequal sizes, ``cols < 1``,
    ``pad < 0`` or a wrong number of labels.
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    width, height = images[0].size
    sizes = {img.size for img in images}
    if len(sizes) > 1:
        raise ValueError(f"make_grid needs images of one size, got {sorted(sizes)}")
    if cols is None:
        cols = math.ceil(math.sqrt(len(images)))
    if cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    if pad < 0:
        raise ValueError(f"pad must be at least 0, got {pad}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")

    font = ImageFont.load_default() if labels is not None else None
    label_height = font.getbbox("Ag")[3] + 2 if font is not None else 0
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * (width + pad) + pad, rows * (height + label_height + pad) + pad),
                     "white")
    draw = ImageDraw.Draw(grid)
    for i, img in enumerate(images):
        row, col = divmod(i, cols)
        x, y = pad + col * (width + pad), pad + row * (height + label_height + pad)
        grid.paste(to_rgb(img), (x, y))
        if labels is not None:
            text = _fit_text(draw, labels[i], font, width)
            draw.text((x, y + height + 1), text, fill="black", font=font)
    return grid


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` on one line, cut at the end until it is at most ``width`` pixels wide."""
    text = " ".join(str(text).split())
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text
