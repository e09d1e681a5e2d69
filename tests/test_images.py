"""cola_mm.core.images: every kind of user image comes out RGB size×size with the right pixels, or is
refused with a clear one-line message. Run: ``pytest -q tests/test_images.py`` (a few seconds, CPU)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageFile

from cola_mm.core.images import (BACKGROUND, MAX_INPUT_BYTES, ImageInputError, fit_square, image_to_tensor,
                            load_image, make_grid, open_image, tensor_to_image, to_rgb)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --------------------------------------------------------------------------- helpers


def assert_rgb_square(img: Image.Image, size: int = 64) -> np.ndarray:
    """Check the model-input contract and return the pixels as an (h, w, 3) int array."""
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.size == (size, size)
    return np.asarray(img).astype(int)


def assert_all(pixels: np.ndarray, colour: tuple[int, ...], tol: int = 0) -> None:
    """Every pixel in ``pixels`` (…, 3) is within ``tol`` of ``colour`` on each channel."""
    diff = np.abs(pixels.reshape(-1, 3) - np.array(colour)).max()
    assert diff <= tol, f"max channel difference {diff} from {colour} (tolerance {tol})"


def encode(img: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save_args)
    return buf.getvalue()


def save(tmp_path: Path, img: Image.Image, name: str, **save_args) -> Path:
    path = tmp_path / name
    img.save(path, **save_args)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height RGB but holds no pixel data (a fake bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def wide_marked(width: int = 3000, height: int = 1000) -> Image.Image:
    """Green with a red band on the left, a blue band on the right (both outside the centre
    square) and black stripes at 1/4 and 3/4 of the centre square's width."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:] = GREEN
    pixels[:, :width * 4 // 15] = RED  # [0, 800) for 3000 wide
    pixels[:, width * 11 // 15:] = BLUE  # [2200, 3000)
    left = (width - height) // 2
    for quarter in (1, 3):
        centre = left + quarter * height // 4  # 1250 and 1750
        pixels[:, centre - height // 50:centre + height // 50] = 0  # 40 px wide
    return Image.fromarray(pixels)


def assert_centre_of_wide_marked(out: np.ndarray, tol: int) -> None:
    """The output of :func:`wide_marked` shows its centre square scaled to fit, nothing else."""
    size = out.shape[1]
    assert (out[:, size // 4, 1] < 128).all() and (out[:, 3 * size // 4, 1] < 128).all()  # stripes
    assert_all(out[:, size // 2 - 2:size // 2 + 3], GREEN, tol)  # between the stripes
    assert_all(out[:, :size // 8], GREEN, tol)  # no red band at the left edge
    assert_all(out[:, -size // 8:], GREEN, tol)  # no blue band at the right edge


def thirds(width: int, height: int, colours=(RED, GREEN, BLUE), vertical: bool = False) -> Image.Image:
    """An RGB image split into three equal bands (left→right, or top→bottom if ``vertical``)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    for i, colour in enumerate(colours):
        if vertical:
            pixels[i * height // 3:(i + 1) * height // 3] = colour
        else:
            pixels[:, i * width // 3:(i + 1) * width // 3] = colour
    return Image.fromarray(pixels)


def test_background_is_the_training_canvas_colour():
    from cola_mm.data.shapes import BACKGROUND as SHAPES_BACKGROUND
    assert BACKGROUND == SHAPES_BACKGROUND == (245, 245, 245)
    assert MAX_INPUT_BYTES == 20 * 1024 * 1024


# --------------------------------------------------------------------------- modes


def test_rgb_at_target_size_is_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(pixels), "noise.png")
    assert np.array_equal(assert_rgb_square(load_image(path)), pixels)


def test_rgba_transparent_pixels_become_background(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = BLUE  # colour under alpha 0 must not show
    rgba[16:48, 16:48] = (*RED, 255)  # opaque red square
    rgba[0:8, 56:64] = (0, 0, 0, 128)  # half-transparent black
    out = assert_rgb_square(load_image(save(tmp_path, Image.fromarray(rgba), "red.png")))
    assert_all(out[16:48, 16:48], RED)
    assert_all(out[8:16, :], BACKGROUND)
    assert_all(out[0:8, 0:8], BACKGROUND)
    assert_all(out[0:8, 56:64], (122, 122, 122), tol=1)  # 245 * (1 - 128/255)


@pytest.mark.parametrize("mode", ["LA", "La"])
def test_grey_with_alpha(mode):
    la = np.zeros((64, 64, 2), np.uint8)
    la[:, 32:] = (40, 255)  # right half opaque dark grey; left half grey 0 at alpha 0
    img = Image.fromarray(la).convert(mode) if mode != "LA" else Image.fromarray(la)
    assert img.mode == mode
    out = assert_rgb_square(load_image(img))
    assert_all(out[:, :32], BACKGROUND)
    assert_all(out[:, 32:], (40, 40, 40))


def test_palette_with_transparent_index(tmp_path):
    img = Image.new("P", (64, 64), 0)
    img.putpalette([*GREEN, *RED] + [0] * 762)
    img.paste(1, (0, 0, 64, 32))  # top half index 1 (red), bottom index 0 (green, transparent)
    for path in (save(tmp_path, img, "p.png", transparency=0), save(tmp_path, img, "p.gif", transparency=0)):
        reopened = open_image(path)
        assert reopened.mode == "P" and reopened.info["transparency"] == 0
        out = assert_rgb_square(load_image(path))
        assert_all(out[:32], RED)
        assert_all(out[32:], BACKGROUND)


def test_palette_with_alpha_palette_and_plain_palette():
    rgba = Image.new("RGBA", (64, 64), (*BLUE, 0))
    rgba.paste((*RED, 255), (0, 0, 32, 64))
    quantised = rgba.quantize(4)  # mode P, RGBA palette, no info["transparency"]
    assert quantised.mode == "P" and quantised.palette.mode == "RGBA"
    out = assert_rgb_square(load_image(quantised))
    assert_all(out[:, :32], RED)
    assert_all(out[:, 32:], BACKGROUND)

    plain = Image.new("P", (64, 64), 1)
    plain.putpalette([*GREEN, *BLUE] + [0] * 762)
    assert_all(assert_rgb_square(load_image(plain)), BLUE)


def test_one_bit_and_grey(tmp_path):
    bits = Image.new("1", (64, 64), 0)
    bits.paste(1, (32, 0, 64, 64))
    out = assert_rgb_square(load_image(save(tmp_path, bits, "bits.png")))
    assert_all(out[:, :32], (0, 0, 0))
    assert_all(out[:, 32:], (255, 255, 255))
    assert_all(assert_rgb_square(load_image(Image.new("L", (64, 64), 100))), (100, 100, 100))


def test_16_bit_grey_ramp_keeps_order_and_max_is_255(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))  # (64, 64), left→right
    path = save(tmp_path, Image.fromarray(ramp), "ramp16.png")
    assert open_image(path).mode == "I;16"
    out = assert_rgb_square(load_image(path))
    row = out[10, :, 0]
    assert (np.diff(row) >= 0).all() and len(set(row)) > 50
    assert row[0] == 0 and row[-1] == 255
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_16_bit_modes_divide_by_257(mode):
    values = (np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 256) * 257  # 8-bit k stored as 257k
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (64, 64), values.astype(dtype).tobytes())
    out = assert_rgb_square(load_image(img))
    assert np.array_equal(out[..., 0], values // 257)


def test_16_bit_with_transparent_value():
    values = np.full((64, 64), 65535, np.uint16)
    values[:, :32] = 0
    img = Image.fromarray(values)
    img.info["transparency"] = 0  # as a 16-bit grey PNG with tRNS decodes
    out = assert_rgb_square(load_image(img))
    assert_all(out[:, :32], BACKGROUND)
    assert_all(out[:, 32:], (255, 255, 255))


def test_32_bit_int_mode_I():
    small = Image.fromarray(np.full((64, 64), 100, np.int32))  # values already 8-bit: kept
    assert small.mode == "I"
    assert_all(assert_rgb_square(load_image(small)), (100, 100, 100))

    ramp = np.tile(np.linspace(-50, 950, 64).astype(np.int32), (64, 1))  # (64, 64), left→right
    out = assert_rgb_square(load_image(Image.fromarray(ramp)))[0, :, 0]  # scaled by max, negatives → 0
    assert out[0] == 0 and out[-1] == 255 and (np.diff(out) >= 0).all()
    assert out[10] == round(ramp[0, 10] * 255 / 950)


def test_32_bit_float_mode_F():
    small = np.full((64, 64), 200.4, np.float32)
    small[0, 0] = np.nan
    out = assert_rgb_square(load_image(Image.fromarray(small)))
    assert_all(out[1:], (200, 200, 200))
    assert_all(out[0, 0], (0, 0, 0))  # NaN → 0

    big = np.tile(np.linspace(0.0, 4000.0, 64, dtype=np.float32), (64, 1))
    row = assert_rgb_square(load_image(Image.fromarray(big)))[5, :, 0]
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert row[32] == round(big[0, 32] * 255 / 4000)


def test_cmyk_cyan_in_memory_and_as_jpeg():
    cyan = Image.new("CMYK", (64, 64), (255, 0, 0, 0))
    assert_all(assert_rgb_square(load_image(cyan)), (0, 255, 255))
    from_jpeg = assert_rgb_square(load_image(encode(cyan, "JPEG", quality=95)))
    assert_all(from_jpeg, (0, 255, 255), tol=30)


@pytest.mark.parametrize("mode, colour, expected, tol", [
    ("HSV", (0, 255, 255), RED, 0),
    ("HSV", (85, 255, 255), GREEN, 0),
    ("YCbCr", (76, 85, 255), RED, 2),
    ("LAB", (255, 128, 128), (255, 255, 255), 2),  # L max, a = b = 0: white
    ("LAB", (138, 209, 198), RED, 6),  # sRGB red in Pillow's 8-bit Lab
    ("RGBX", (1, 2, 3, 0), (1, 2, 3), 0),
])
def test_other_colour_spaces(mode, colour, expected, tol):
    out = assert_rgb_square(load_image(Image.new(mode, (64, 64), colour)))
    assert_all(out, expected, tol)


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_gives_rgb(mode):
    assert_rgb_square(load_image(Image.new(mode, (5, 3))))


def test_unknown_mode_is_refused():
    class OddImage:  # an image type in a mode Pillow does not list
        mode, info, size = "BGR;24", {}, (4, 4)
    with pytest.raises(ImageInputError, match="unsupported image mode 'BGR;24'"):
        to_rgb(OddImage())


# --------------------------------------------------------------------------- orientation and size


def test_exif_orientation_6_is_applied():
    wide = Image.new("RGB", (40, 20), RED)
    wide.paste(BLUE, (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90° clockwise to display"
    data = encode(wide, "JPEG", quality=95, exif=exif)

    upright = open_image(data)
    assert upright.size == (20, 40)  # now tall
    out = assert_rgb_square(load_image(data, size=20), size=20)
    assert_all(out[1:8], RED, tol=20)  # the left half is on top
    assert_all(out[12:19], BLUE, tol=20)


@pytest.mark.parametrize("width, height", [(1, 1), (3, 5), (5, 3)])
def test_tiny_images_are_upscaled(width, height):
    out = assert_rgb_square(load_image(Image.new("RGB", (width, height), (10, 200, 30))))
    assert_all(out, (10, 200, 30), tol=1)


def test_large_non_square_images_keep_the_centre(tmp_path):
    wide = save(tmp_path, wide_marked(), "wide.png")
    assert_centre_of_wide_marked(assert_rgb_square(load_image(wide)), tol=3)
    tall = wide_marked().transpose(Image.Transpose.TRANSPOSE)  # 1000×3000, bands top and bottom
    out = assert_rgb_square(load_image(tall, size=32), size=32)
    assert_centre_of_wide_marked(out.transpose(1, 0, 2), tol=3)


def test_large_jpeg_is_drafted_and_centre_cropped(tmp_path):
    path = save(tmp_path, wide_marked(), "wide.jpg", quality=95)
    with Image.open(path) as img:  # what load_image asks the decoder for: still ≥ 2*size per side
        img.draft("RGB", (128, 128))
        assert min(img.size) >= 128 and img.size[0] < 3000
    assert_centre_of_wide_marked(assert_rgb_square(load_image(path)), tol=12)


def test_fit_square_sizes_and_bad_size():
    assert fit_square(Image.new("RGB", (100, 50)), 7).size == (7, 7)
    centre = fit_square(thirds(90, 30), 30)  # exactly the centre square, a plain crop
    assert np.array_equal(np.asarray(centre), np.asarray(thirds(90, 30).crop((30, 0, 60, 30))))
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="size must be a positive integer"):
            fit_square(Image.new("RGB", (4, 4)), bad)
        with pytest.raises(ValueError, match="size must be a positive integer"):
            load_image(Image.new("RGB", (4, 4)), size=bad)


# --------------------------------------------------------------------------- refusals


def test_decompression_bomb_header_is_refused_with_default_limit(tmp_path):
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's guard is on; nothing here changes it
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20000, 20000))  # above 2× the limit: Pillow raises
    with pytest.raises(ImageInputError) as err:
        load_image(path)
    assert str(err.value) == f"{path} has too many pixels (400,000,000; the limit is 89,478,485)"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # between 1× and 2×: Pillow only warns; we refuse, quietly
        with pytest.raises(ImageInputError) as err:
            load_image(png_header_only(10000, 10000))
    assert str(err.value) == ("the image data has too many pixels (10000×10000 = 100,000,000; "
                              "the limit is 89,478,485)")
    assert Image.MAX_IMAGE_PIXELS == 89_478_485


def test_decompression_bomb_with_a_small_limit(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (100, 100), RED), "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10,000 pixels: Pillow would only warn
    with pytest.raises(ImageInputError, match=r"too many pixels \(100×100 = 10,000; the limit is 6,000\)"):
        load_image(path)
    with pytest.raises(ImageInputError, match=r"too many pixels \(100×100 = 10,000; the limit is 6,000\)"):
        open_image(Image.new("RGB", (100, 100)))  # PIL images are held to the same limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10× the limit: Pillow raises
    with pytest.raises(ImageInputError, match=r"too many pixels \(10,000; the limit is 1,000\)"):
        load_image(path)


def test_text_file_named_png_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageInputError) as err:
        load_image(path)
    assert str(err.value) == f"{path} is not an image Pillow can read"


def test_truncated_files_are_refused(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    jpeg = encode(noise, "JPEG", quality=95)
    with pytest.raises(ImageInputError, match=r"^the image data is truncated or corrupt \(.+\)$"):
        load_image(jpeg[: len(jpeg) // 2])
    path = tmp_path / "cut.png"
    path.write_bytes(encode(noise)[:-300])
    with pytest.raises(ImageInputError, match=r"cut\.png is truncated or corrupt"):
        open_image(path)


def test_missing_path_directory_and_empty_file(tmp_path):
    with pytest.raises(ImageInputError) as err:
        load_image(tmp_path / "nope.png")
    assert str(err.value) == f"image not found: {tmp_path / 'nope.png'}"
    with pytest.raises(ImageInputError, match="is a directory, not an image file"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty.png is empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageInputError, match="the image data is empty"):
        load_image(b"")


def test_oversize_inputs_are_refused_before_reading(tmp_path):
    data = encode(Image.new("RGB", (64, 64), RED))
    path = tmp_path / "red.png"
    path.write_bytes(data)
    message = rf"too large \({len(data)} bytes; the limit is 100 bytes\)"
    with pytest.raises(ImageInputError, match=rf"red\.png is {message}"):
        load_image(path, max_bytes=100)
    with pytest.raises(ImageInputError, match=rf"the image data is {message}"):
        load_image(data, max_bytes=100)

    class Upload:  # declares its size; reading it would fail the test
        name, size = "big.png", 25 * 1024 * 1024
        def read(self, *args):
            raise AssertionError("read before the size check")
    with pytest.raises(ImageInputError, match=r"big\.png is too large \(25\.0 MiB; the limit is 20\.0 MiB\)"):
        load_image(Upload())

    with open(path, "rb") as f:  # no size attribute: reads at most max_bytes + 1
        with pytest.raises(ImageInputError, match="too large"):
            load_image(f, max_bytes=100)
        assert f.tell() == 101


def test_other_source_types_are_a_type_error():
    with pytest.raises(TypeError, match="got int"):
        load_image(42)


# --------------------------------------------------------------------------- sources


def test_every_source_kind_gives_the_same_image(tmp_path):
    original = thirds(90, 30)
    data = encode(original)
    path = tmp_path / "thirds.png"
    path.write_bytes(data)

    class UploadedFile(io.BytesIO):  # like streamlit's: a BytesIO with name and size
        def __init__(self, data: bytes):
            super().__init__(data)
            self.name, self.size = "upload.png", len(data)

    upload = UploadedFile(data)
    upload.read()  # an upload already read to its end still works (getvalue)
    with open(path, "rb") as f:
        sources = [str(path), path, data, bytearray(data), memoryview(data), upload, f, original]
        outs = [assert_rgb_square(load_image(s, size=30), size=30) for s in sources]
    assert_all(outs[0], GREEN)
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])
    assert original.size == (90, 30) and original.mode == "RGB"  # the caller's image is untouched


def test_error_messages_name_the_upload():
    class Upload(io.BytesIO):
        name = "holiday.jpg"
    with pytest.raises(ImageInputError, match="^holiday.jpg is not an image Pillow can read$"):
        load_image(Upload(b"GIF89a but not really"))
    with pytest.raises(ImageInputError, match="^the uploaded file is not an image"):
        load_image(io.BytesIO(b"hello"))


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert_all(assert_rgb_square(load_image(data)), RED, tol=2)


# --------------------------------------------------------------------------- tensors and grids


def test_tensor_round_trip_is_exact():
    pixels = np.random.default_rng(2).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    pixels[0, 0], pixels[0, 1] = (0, 0, 0), (255, 255, 255)
    x = image_to_tensor(Image.fromarray(pixels))
    assert x.shape == (3, 24, 40) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(x[:, 0, 0], torch.full((3,), -1.0)) and torch.equal(x[:, 0, 1], torch.ones(3))
    back = tensor_to_image(x)
    assert back.mode == "RGB" and back.size == (40, 24)
    assert np.array_equal(np.asarray(back), pixels)


def test_tensor_to_image_clamps_and_checks_shape():
    x = torch.tensor([-5.0, 5.0, float("nan")]).view(3, 1, 1).expand(3, 2, 2)
    assert np.asarray(tensor_to_image(x))[0, 0].tolist() == [0, 255, 128]
    assert np.asarray(tensor_to_image(torch.zeros(3, 2, 2, dtype=torch.bfloat16))).max() == 128
    for shape in [(1, 3, 4, 4), (4, 4), (1, 4, 4)]:
        with pytest.raises(ValueError, match=r"expected a \(3, H, W\) tensor"):
            tensor_to_image(torch.zeros(shape))


def test_image_to_tensor_converts_other_modes():
    x = image_to_tensor(Image.new("RGBA", (4, 4), (*RED, 0)))
    assert torch.allclose(x[:, 0, 0], torch.full((3,), 245 / 127.5 - 1))


def test_make_grid_layout_and_pixels():
    colours = [RED, GREEN, BLUE, (10, 20, 30), (200, 100, 0)]
    images = [Image.new("RGB", (64, 64), c) for c in colours]
    grid = make_grid(images)  # 5 images: 3 columns, 2 rows, 2 px gaps around and between
    assert grid.mode == "RGB" and grid.size == (3 * 64 + 4 * 2, 2 * 64 + 3 * 2)
    px = np.asarray(grid).astype(int)
    for i, colour in enumerate(colours):
        row, col = divmod(i, 3)
        x, y = 2 + col * 66, 2 + row * 66
        assert_all(px[y:y + 64, x:x + 64], colour)
    assert_all(px[:2], (255, 255, 255))  # top gap
    assert_all(px[:, 66:68], (255, 255, 255))  # gap between columns
    assert_all(px[68:, 134:], (255, 255, 255))  # the empty sixth cell

    assert make_grid(images, cols=5, pad=0).size == (320, 64)
    assert make_grid(images[:1]).size == (68, 68)
    assert make_grid([Image.new("L", (8, 4))] * 4, cols=1, pad=1).size == (10, 4 * 5 + 1)


def test_make_grid_labels():
    images = [Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), BLUE)]
    plain = make_grid(images, pad=2)
    labelled = make_grid(images, pad=2, labels=["red", "a very long label that will not fit"])
    assert labelled.width == plain.width and labelled.height > plain.height
    px = np.asarray(labelled).astype(int)
    under = px[66:labelled.height - 2]  # the label strip under the images
    assert (under[:, 2:66] < 128).any() and (under[:, 68:132] < 128).any()  # some dark text
    assert_all(px[2:66, 2:66], RED)  # labels do not cover the images
    assert_all(under[:, 132:], (255, 255, 255))  # the long label is cut at its image's width


def test_make_grid_bad_arguments():
    img = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="at least one image"):
        make_grid([])
    with pytest.raises(ValueError, match="one size"):
        make_grid([img, Image.new("RGB", (8, 9))])
    with pytest.raises(ValueError, match="2 labels for 1 images"):
        make_grid([img], labels=["a", "b"])
    with pytest.raises(ValueError, match="cols"):
        make_grid([img], cols=0)
    with pytest.raises(ValueError, match="pad"):
        make_grid([img], pad=-1)


def test_random_warp_is_identity_at_zero_and_rotates_about_the_centre():
    from cola_mm.core.images import random_warp

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.allclose(random_warp(x, 0.0, 0.0, gen), x, atol=1e-5)
    # a bar through the centre keeps its centre pixel under any rotation; its far end moves
    bar = -torch.ones(1, 3, 33, 33)
    bar[..., 16, 4:29] = 1.0
    turned = random_warp(bar, 30.0, 0.0, torch.Generator().manual_seed(1))
    assert turned[0, :, 16, 16].min() > 0.9 and turned[0, :, 16, 4].max() < 0.5
    assert turned[0, :, 0, 0].max() == -1.0  # edges replicated, not zero-filled
