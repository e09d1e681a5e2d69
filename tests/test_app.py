"""The Streamlit app, driven headless by streamlit.testing.v1.AppTest on a tiny pipeline."""

from __future__ import annotations

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


def test_text_tab_streams(app):
    app.text_area(key="t2t_prompt").input("the king")
    app.slider(key="t2t_steps").set_value(2)
    app.number_input(key="t2t_max").set_value(20)
    app.button(key="t2t_go").click().run()
    assert not app.exception, app.exception
    assert any(t.startswith("**the king**") for t in _texts(app.main.markdown))
    app.text_area(key="t2t_prompt").input("")
    app.button(key="t2t_go").click().run()
    assert "Type a prompt first" in app.warning[0].value
