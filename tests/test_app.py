"""The Streamlit app, driven headless by streamlit.testing.v1.AppTest on a tiny pipeline."""

from __future__ import annotations

import io

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO

APP = str(REPO / "apps" / "app.py")


@pytest.fixture
def app(tiny_mm_pipeline, monkeypatch):
    monkeypatch.setenv("COLA_MM_CKPT", str(tiny_mm_pipeline))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(elements):
    return [e.value for e in elements]


def test_missing_checkpoint_is_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("COLA_MM_CKPT", str(tmp_path / "nothing"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert "No pipeline at" in at.error[0].value


def test_sidebar_describes_the_model(app):
    side = " ".join(_texts(app.sidebar.markdown))
    assert "image VAE" in side and "DiT prior" in side and "text_to_image" in side


def test_text_to_image_tab(app):
    app.text_input(key="t2i_prompt").input("a red circle in the center")
    app.slider(key="t2i_steps").set_value(2)
    app.slider(key="t2i_n").set_value(2)
    app.checkbox(key="t2i_traj").check()
    app.button(key="t2i_go").click().run()
    assert not app.exception, app.exception
    assert len(app.image) == 2  # the grid and the trajectory strip
    assert app.get("download_button")
    # an empty prompt is a warning; an example button fills the prompt
    app.text_input(key="t2i_prompt").input("   ")
    app.button(key="t2i_go").click().run()
    assert "Type a prompt first" in app.warning[0].value
    app.button(key="example_0").click().run()
    assert app.text_input(key="t2i_prompt").value.startswith("a large red circle")
    # an over-long prompt is cut with a notice
    app.text_input(key="t2i_prompt").input("red circle " * 60)
    app.slider(key="t2i_n").set_value(1)
    app.button(key="t2i_go").click().run()
    assert any("prompt cut" in t for t in _texts(app.info))


def test_image_to_text_tab_with_a_bundled_example(app):
    app.button(key="i2t_go").click().run()
    assert "Upload an image or pick an example" in app.warning[0].value
    app.selectbox(key="i2t_example").select("shapes_b.png")
    app.slider(key="i2t_steps").set_value(2)
    app.slider(key="i2t_n").set_value(3)
    app.button(key="i2t_go").click().run()
    assert not app.exception, app.exception
    captions = [t for t in _texts(app.main.markdown) if t[:3] in ("**1", "**2", "**3")]
    assert len(captions) == 3


def _continue(app, prompt: str, max_new: int, steps: int) -> None:
    """Run the text tab and check the prompt is shown with its continuation."""
    app.text_area(key="t2t_prompt").input(prompt)
    app.slider(key="t2t_steps").set_value(steps)
    app.number_input(key="t2t_max").set_value(max_new)
    app.button(key="t2t_go").click().run()
    assert not app.exception, app.exception
    assert any(t.startswith(f"**{prompt}**") for t in _texts(app.main.markdown))


def test_text_tab_streams(app):
    _continue(app, "the king", max_new=20, steps=2)
    app.text_area(key="t2t_prompt").input("")
    app.button(key="t2t_go").click().run()
    assert "Type a prompt first" in app.warning[0].value


def test_temperature_sliders_start_at_the_checkpoint_default_and_reach_the_sampler(app, tiny_mm_pipeline):
    from cola_mm.pipeline import ColaPipeline

    pipe = ColaPipeline.from_pretrained(tiny_mm_pipeline)
    for key, default in (("t2i_temperature", pipe.config.image_temperature),
                         ("i2t_temperature", pipe.config.caption_temperature),
                         ("t2t_temperature", pipe.config.text_temperature)):
        assert app.slider(key=key).value == default
    app.slider(key="t2t_temperature").set_value(0.0)
    app.text_area(key="t2t_prompt").input("the king")
    app.slider(key="t2t_steps").set_value(2)
    app.number_input(key="t2t_max").set_value(12)
    app.number_input(key="t2t_seed").set_value(3)
    app.button(key="t2t_go").click().run()
    assert not app.exception, app.exception
    expected = pipe.generate_text("the king", max_new_tokens=12, steps=2, seed=3, temperature=0.0)
    assert f"**the king**{expected}" in _texts(app.main.markdown)


# --------------------------------------------------------------------------- uploads


def _png(mode: str, size=(40, 30), color=None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _encoded(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _odd_uploads() -> list[tuple[str, bytes, str]]:
    from PIL import Image

    rgba = Image.new("RGBA", (50, 40), (255, 0, 0, 128))
    pal = Image.new("RGB", (33, 33), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    exif = Image.new("RGB", (64, 32), (0, 200, 0))
    tags = exif.getexif()
    tags[0x0112] = 6  # rotated: shown upright after EXIF transpose
    return [("rgba.png", _encoded(rgba, "PNG"), "image/png"),
            ("gray16.png", _png("I;16", color=40000), "image/png"),
            ("palette.gif", _encoded(pal, "GIF"), "image/gif"),
            ("cmyk.jpg", _encoded(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"), "image/jpeg"),
            ("exif.jpg", _encoded(exif, "JPEG", exif=tags), "image/jpeg"),
            ("tiny.bmp", _encoded(Image.new("L", (1, 1), 200), "BMP"), "image/bmp"),
            ("wide.webp", _encoded(Image.new("RGB", (1200, 90), (250, 250, 0)), "WEBP"), "image/webp")]


def _caption(app, name: str, data: bytes, mime: str):
    app.file_uploader(key="i2t_upload").set_value((name, data, mime))
    app.slider(key="i2t_steps").set_value(2)
    app.slider(key="i2t_n").set_value(1)
    app.button(key="i2t_go").click().run()
    assert not app.exception, app.exception
    return app


@pytest.mark.parametrize("index", range(7))
def test_odd_image_uploads_are_captioned(app, index):
    name, data, mime = _odd_uploads()[index]
    _caption(app, name, data, mime)
    assert not app.error, [e.value for e in app.error]
    assert len(app.image) == 1  # the uploaded image is shown
    assert any(t.startswith("**1.**") for t in _texts(app.main.markdown))


def test_bad_uploads_give_messages_not_tracebacks(app):
    from PIL import Image

    png = _png("RGB", (64, 64), (10, 20, 30))
    huge = _encoded(Image.new("1", (12000, 12000)), "PNG")  # a few KB on disk, 144 M pixels
    cases = [
        ("notes.png", b"this is not an image at all", "not an image Pillow can read"),
        ("cut.png", png[: len(png) // 2], "truncated or corrupt"),
        ("empty.png", b"", "is empty"),
        ("bomb.png", huge, "too many pixels"),
        ("big.png", png + b"\0" * (21 * 2**20), "too large"),  # over the stated 20 MB limit
    ]
    for name, data, message in cases:
        _caption(app, name, data, "image/png")
        errors = [e.value for e in app.error]
        assert len(errors) == 1 and name in errors[0] and message in errors[0], (name, errors)
        assert not any(t.startswith("**1.**") for t in _texts(app.main.markdown))
    # the page states the limit
    assert any("20 MB" in c.value for c in app.main.caption)


# --------------------------------------------------------------------------- the bundled demo


DEMO = REPO / "checkpoints" / "demo"


def test_every_tab_on_the_bundled_demo_checkpoint(monkeypatch):
    """The default checkpoint (no --ckpt, no env): generate an image, caption one, continue a text."""
    monkeypatch.delenv("COLA_MM_CKPT", raising=False)
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert str(DEMO) in " ".join(c.value for c in at.sidebar.caption)
    assert "trained" in " ".join(_texts(at.sidebar.markdown)).lower()  # the model card
    at.text_input(key="t2i_prompt").input("a handwritten digit seven")
    at.slider(key="t2i_n").set_value(1)
    at.slider(key="t2i_steps").set_value(4)
    at.button(key="t2i_go").click().run()
    assert not at.exception, at.exception
    assert len(at.image) == 1
    at.selectbox(key="i2t_example").select("digit_3.png")
    at.slider(key="i2t_steps").set_value(4)
    at.slider(key="i2t_n").set_value(2)
    at.button(key="i2t_go").click().run()
    assert not at.exception, at.exception
    assert len([t for t in _texts(at.main.markdown) if t[:5] in ("**1.*", "**2.*")]) == 2
    _continue(at, "KING HENRY.", max_new=16, steps=4)


def test_cola_mm_app_without_a_pipeline_says_how_to_get_one(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "app", "--ckpt", str(tmp_path / "none"), "--headless"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no pipeline at" in r.stderr and "--ckpt DIR" in r.stderr
    assert (REPO / "checkpoints" / "demo" / "pipeline.json").is_file(), "the bundled demo checkpoint is missing"
