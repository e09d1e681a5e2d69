"""The README's main command, `make demo`, starts the app with no question asked: standard input
closed, no terminal (a service, nohup, CI), and the page is served.

Streamlit's non-headless first run asks for an e-mail address and exits 255 without a terminal;
`cola-mm app` always runs it headless (and opens a browser itself only on a desktop)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_demo_serves_the_page_with_stdin_closed(tmp_path):
    port = free_port()
    env = {**os.environ, "COLA_MM_VENV": sys.prefix, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}  # no ~/.streamlit
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    log = open(tmp_path / "demo.log", "w")
    proc = subprocess.Popen(["make", "--no-print-directory", "demo", f"PORT={port}"], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != 200:
            assert proc.poll() is None, f"make demo exited with {proc.returncode}: {(tmp_path / 'demo.log').read_text()}"
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.5)
        assert status == 200, (tmp_path / "demo.log").read_text()
        with urllib.request.urlopen(f"http://localhost:{port}/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        time.sleep(1)
        text = (tmp_path / "demo.log").read_text()
        assert "Email" not in text and "Welcome to Streamlit" not in text, text
        assert proc.poll() is None  # still serving
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
