"""Load the pipeline while the server starts, before the first browser session asks for it.

``cola-mm app`` calls :func:`start` before it starts Streamlit in the same process; the app's
cached loader calls :func:`take`, which waits for that load (or returns None when nothing was
preloaded for that folder, e.g. under ``streamlit run`` or AppTest). The imports of torch,
diffusers and transformers and the weight loading thus overlap with Streamlit's own start and
the browser loading the page.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()
_jobs: dict[str, tuple[threading.Thread, dict]] = {}


def _key(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def start(path: str | os.PathLike) -> None:
    """Begin loading the pipeline at ``path`` in a background thread."""
    key = _key(path)
    result: dict = {}

    def load() -> None:
        try:
            from cola_mm.pipeline import ColaPipeline

            result["pipeline"] = ColaPipeline.from_pretrained(key)
        except Exception as err:  # reported by take(), in the page
            result["error"] = err

    with _lock:
        if key in _jobs:
            return
        thread = threading.Thread(target=load, name="cola-mm-preload", daemon=True)
        _jobs[key] = (thread, result)
        thread.start()


def take(path: str | os.PathLike):
    """The preloaded pipeline for ``path`` (waiting for it), or None if none was started."""
    with _lock:
        job = _jobs.pop(_key(path), None)
    if job is None:
        return None
    thread, result = job
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["pipeline"]
