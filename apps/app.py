"""The Cola-MM Streamlit app: text → image, image → text and text continuation on one pipeline.

    cola-mm app [--ckpt DIR]                      # a thin wrapper over `streamlit run`
    streamlit run apps/app.py -- --ckpt DIR

One :class:`cola_mm.pipeline.ColaPipeline` is loaded once per server (``st.cache_resource``)
and shared by the three tabs. Every generation shows a progress bar; bad input (an empty or
over-long prompt, a non-image, corrupt, huge or over-size upload, odd image modes) gives a
message, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO / "checkpoints" / "demo"
EXAMPLES = Path(__file__).resolve().parent / "examples"
MAX_PROMPT_CHARS = 300  # longer prompts are cut (with a notice) before tokenizing
EXAMPLE_PROMPTS = (
    "a large red circle in the center",
    "a small blue square in the top left corner",
    "a big green triangle at the bottom",
    "a yellow cross on the right",
    "a handwritten digit seven",
    "the number 3",
)
UPLOAD_TYPES = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="apps/app.py")
    parser.add_argument("--ckpt", default=os.environ.get("COLA_MM_CKPT", str(DEFAULT_CKPT)),
                        help="pipeline folder (default: the bundled demo checkpoint)")
    args, _ = parser.parse_known_args(argv)
    return args


@st.cache_resource(show_spinner="Loading the model …")
def load_pipeline(path: str):
    from cola_mm.apps import preload
    from cola_mm.pipeline import ColaPipeline

    pipe = preload.take(path) or ColaPipeline.from_pretrained(path)
    print(f"cola-mm app: pipeline ready ({path}); every browser session shares it", file=sys.stderr, flush=True)
    return pipe


def clean_prompt(text: str) -> tuple[str | None, list[str]]:
    """(prompt or None if empty, notices)."""
    text = (text or "").strip()
    if not text:
        return None, []
    if len(text) > MAX_PROMPT_CHARS:
        return text[:MAX_PROMPT_CHARS], [f"prompt cut to its first {MAX_PROMPT_CHARS} characters (of {len(text)})"]
    return text, []


TEMPERATURE_HELP = "scale of the starting noise: below 1 stays nearer the model's modes, 0 ignores the seed"


def sampling_controls(key: str, pipe, default_cfg: float, default_temperature: float, max_n: int = 0,
                      n_label: str = "") -> dict:
    cols = st.columns(5 if max_n else 4)
    out = {}
    i = 0
    if max_n:
        out["n"] = cols[0].slider(n_label, 1, max_n, min(4, max_n), key=f"{key}_n")
        i = 1
    out["steps"] = cols[i].slider("steps", 1, 50, pipe.config.default_steps, key=f"{key}_steps",
                                  help="ODE steps per block (8–16 recover most quality)")
    out["cfg_scale"] = cols[i + 1].slider("guidance scale", 1.0, 10.0, float(default_cfg), 0.5, key=f"{key}_cfg",
                                          help="classifier-free guidance (1 = off)")
    out["temperature"] = cols[i + 2].slider("temperature", 0.0, 2.0, float(default_temperature), 0.1,
                                            key=f"{key}_temperature", help=TEMPERATURE_HELP)
    out["seed"] = int(cols[i + 3].number_input("seed", 0, 2**31 - 1, 0, key=f"{key}_seed"))
    return out


def progress_callback(bar, total: int, label: str, every_s: float = 0.1):
    """A sampler ``on_step`` that moves ``bar``: at most one browser update per ``every_s``
    seconds and the last step (each update is a message to the browser; one per ODE step cost
    about 1 s of a caption's 8 blocks × 16 steps)."""
    state = {"done": 0, "shown": float("-inf")}

    def on_step(step: int, steps: int, z) -> None:
        state["done"] += 1
        now = time.monotonic()
        if now - state["shown"] >= every_s or state["done"] >= total:
            state["shown"] = now
            bar.progress(min(state["done"] / total, 1.0), text=f"{label}: step {state['done']} of {total}")

    return on_step


# --------------------------------------------------------------------------- tabs


def text_to_image_tab(pipe) -> None:
    from cola_mm.core.images import make_grid

    st.caption("Describe a picture of the bundled worlds: coloured shapes at positions, or handwritten digits.")
    ex_cols = st.columns(3)
    for i, example in enumerate(EXAMPLE_PROMPTS):
        if ex_cols[i % 3].button(example, key=f"example_{i}"):
            st.session_state["t2i_prompt"] = example
    prompt = st.text_input("Prompt", key="t2i_prompt", placeholder="a large red circle in the center")
    ctl = sampling_controls("t2i", pipe, pipe.config.default_image_cfg_scale, pipe.config.image_temperature, max_n=8,
                            n_label="images")
    trajectory = st.checkbox("Show the denoising trajectory", key="t2i_traj")
    if not st.button("Generate images", type="primary", key="t2i_go"):
        return
    text, notices = clean_prompt(prompt)
    if text is None:
        st.warning("Type a prompt first (or click an example).")
        return
    bar = st.progress(0.0, text="generating")
    frames = []
    on_step = progress_callback(bar, ctl["steps"], "denoising")
    if trajectory:
        inner = on_step

        def on_step(step, steps, z):  # noqa: F811 — keep the state of every few steps for the preview
            inner(step, steps, z)
            if step % max(1, steps // 6) == 0:
                frames.append(z[:1].clone())

    result = pipe.generate_image(text, steps=ctl["steps"], cfg_scale=ctl["cfg_scale"], seed=ctl["seed"],
                                 n=ctl["n"], on_step=on_step, return_result=True, temperature=ctl["temperature"])
    images = result.outputs
    bar.progress(1.0, text="done")
    for notice in notices + result.notices:
        st.info(notice)
    grid = make_grid([im.resize((192, 192)) for im in images], cols=min(4, len(images)))
    st.image(grid, caption=text)
    buf = io.BytesIO()
    make_grid(images, cols=min(4, len(images))).save(buf, format="PNG")
    st.download_button("Download PNG", buf.getvalue(), file_name="cola_mm_images.png", mime="image/png")
    if trajectory and frames:
        import torch

        strip = pipe.decode_image_tokens(torch.cat(frames)) + images[:1]
        st.image(make_grid([im.resize((96, 96)) for im in strip], cols=len(strip)),
                 caption="denoising trajectory of image 1 (noise → image)")


def image_to_text_tab(pipe) -> None:
    from cola_mm.core.images import MAX_INPUT_BYTES, ImageInputError, load_image

    st.caption("Upload an image (any format Pillow reads, up to "
               f"{MAX_INPUT_BYTES // 2**20} MB) or pick a bundled example.")
    upload = st.file_uploader("Image", type=list(UPLOAD_TYPES), key="i2t_upload")
    examples = sorted(EXAMPLES.glob("*.png")) if EXAMPLES.is_dir() else []
    choice = st.selectbox("…or a bundled example", ["(none)"] + [p.name for p in examples], key="i2t_example")
    ctl = sampling_controls("i2t", pipe, pipe.config.default_caption_cfg_scale, pipe.config.caption_temperature,
                            max_n=4, n_label="captions")
    if not st.button("Caption", type="primary", key="i2t_go"):
        return
    if upload is not None:
        source, name = upload, upload.name
    elif choice != "(none)":
        source, name = EXAMPLES / choice, choice
    else:
        st.warning("Upload an image or pick an example first.")
        return
    try:
        image = load_image(source, pipe.image_vae.config.image_size)
    except ImageInputError as err:
        st.error(str(err))
        return
    st.image(image.resize((192, 192)), caption=name)
    blocks = -(-pipe.config.caption_tokens // pipe.dit.config.block_size)
    bar = st.progress(0.0, text="captioning")
    captions = pipe.caption([image] * ctl["n"], steps=ctl["steps"], cfg_scale=ctl["cfg_scale"], seed=ctl["seed"],
                            on_step=progress_callback(bar, blocks * ctl["steps"], "denoising"),
                            temperature=ctl["temperature"])
    bar.progress(1.0, text="done")
    for i, text in enumerate(captions):
        st.markdown(f"**{i + 1}.** {text or '*(empty caption)*'}")


def text_tab(pipe) -> None:
    prompt = st.text_area("Prompt", key="t2t_prompt", placeholder="KING HENRY. Now, lords,")
    c0, c1, c2, c3, c4 = st.columns(5)
    max_new = int(c0.number_input("max new tokens", 1, 256, 48, key="t2t_max"))
    from cola_mm.pipeline import job_steps

    steps = c1.slider("steps", 1, 50, job_steps(pipe.config, "text"), key="t2t_steps")
    cfg = c2.slider("guidance scale", 1.0, 10.0, float(pipe.config.default_cfg_scale), 0.5, key="t2t_cfg")
    temperature = c3.slider("temperature", 0.0, 2.0, float(pipe.config.text_temperature), 0.1,
                            key="t2t_temperature", help=TEMPERATURE_HELP)
    seed = int(c4.number_input("seed", 0, 2**31 - 1, 0, key="t2t_seed"))
    if not st.button("Continue", type="primary", key="t2t_go"):
        return
    text, notices = clean_prompt(prompt)
    if text is None:
        st.warning("Type a prompt first.")
        return
    B = pipe.dit.config.block_size
    blocks = -(-(max_new + B) // B)
    bar = st.progress(0.0, text="generating")
    out = st.empty()
    shown = ""
    stream = pipe.stream_text(text, max_new_tokens=max_new, steps=steps, cfg_scale=cfg, seed=seed,
                              temperature=temperature)
    for j, deltas in enumerate(stream):
        shown += deltas[0]
        out.markdown(f"**{text}**{shown}")
        bar.progress(min((j + 1) / blocks, 1.0), text=f"block {j + 1}")
    bar.progress(1.0, text="done")
    for notice in notices + stream.notices:
        st.info(notice)


# --------------------------------------------------------------------------- page


def main(argv: list[str] | None = None) -> None:
    st.set_page_config(page_title="Cola-MM", layout="wide")
    st.title("Cola-MM")
    st.caption("Text and images through one block-causal latent diffusion prior.")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ckpt = Path(args.ckpt)
    if not (ckpt / "pipeline.json").is_file():
        st.error(f"No pipeline at {ckpt}. Build the demo checkpoint with `make demo-checkpoint` "
                 f"(see README), or start the app with `cola-mm app --ckpt DIR`.")
        return
    try:
        pipe = load_pipeline(str(ckpt))
    except Exception as err:  # a broken checkpoint: say so on the page
        st.error(f"Cannot load {ckpt}: {str(err).splitlines()[0]}")
        return
    with st.sidebar:
        st.header("Model")
        st.caption(str(ckpt))
        for name, text in pipe.describe().items():
            st.markdown(f"**{name}** — {text}")
        info = ckpt / "README.md"
        if info.is_file():
            st.markdown(info.read_text())
    tabs = st.tabs(["Text → Image", "Image → Text", "Text continuation"])
    with tabs[0]:
        if pipe.image_vae is None:
            st.info("This checkpoint was trained for text only.")
        else:
            text_to_image_tab(pipe)
    with tabs[1]:
        if pipe.image_vae is None:
            st.info("This checkpoint was trained for text only.")
        else:
            image_to_text_tab(pipe)
    with tabs[2]:
        text_tab(pipe)


main()
