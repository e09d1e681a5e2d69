"""Start ``cola-mm app`` on a free port and drive it in a real browser (Debian's chromium via
Playwright). Used by the browser test (tests/test_browser.py) and the app benchmark
(bench/bench_app.py).

    with AppServer("checkpoints/demo") as server:          # waits for /_stcore/health
        with browser_page() as page:
            page.goto(server.url)
            ...
    # the server is stopped by its own process id (``cola-mm app`` execs streamlit)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``cola-mm app --ckpt CKPT --port P --headless`` as a child process.

    ``started`` is the wall-clock time of the launch, ``healthy_s`` the seconds until the
    server answered its health check. ``stop()`` sends SIGTERM to the server's own process id
    (SIGKILL after ``grace`` seconds)."""

    def __init__(self, ckpt: str | os.PathLike, port: int | None = None, threads: int | None = None,
                 log: str | os.PathLike | None = None):
        self.ckpt = Path(ckpt)
        self.port = port or free_port()
        self.url = f"http://localhost:{self.port}"
        self.threads = threads
        self.log_path = Path(log) if log else Path(tempfile.mkstemp(prefix="cola_mm_app_", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.healthy_s = float("nan")

    def start(self, timeout: float = 120.0) -> "AppServer":
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        self._log = open(self.log_path, "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cola_mm.cli", "app", "--ckpt", str(self.ckpt), "--port", str(self.port),
             "--headless"], stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cola-mm app exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        self.healthy_s = time.perf_counter() - self.started
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"cola-mm app did not answer on {self.url} within {timeout:.0f} s: {self.log()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server was not started"
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the server process so far (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc status")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the server's PID, SIGKILL after ``grace`` s; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "AppServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator:
    """A Playwright page in Debian's headless chromium."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"{CHROMIUM} is missing: run `bash .ci/chromium.sh` (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


# ---- steps of a session in the app (selectors of Streamlit's rendered page)


def wait_interactive(page, timeout_ms: int = 60_000) -> None:
    """The page has rendered the app: the first tab's generate button is clickable."""
    page.get_by_role("button", name="Generate images").wait_for(state="visible", timeout=timeout_ms)


def settled(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit is not running the script (after a widget change reran it)."""
    page.wait_for_timeout(300)  # the rerun request reaches the server
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout_ms)


def generate_images(page, prompt: str, timeout_ms: int = 60_000):
    """Type a prompt in the Text → Image tab, click generate; returns the locator of the grid."""
    page.get_by_role("tab", name="Text → Image").click()
    box = page.get_by_label("Prompt").first
    box.fill(prompt)
    box.press("Enter")
    settled(page, timeout_ms)
    page.get_by_role("button", name="Generate images").click()
    grid = page.locator('[data-testid="stImage"] img').first
    grid.wait_for(state="visible", timeout=timeout_ms)
    return grid


def caption_upload(page, image_path: str | os.PathLike, timeout_ms: int = 60_000):
    """Upload an image in the Image → Text tab, click caption; returns the locator of caption 1."""
    page.get_by_role("tab", name="Image → Text").click()
    page.locator('input[type="file"]').first.set_input_files(str(image_path))
    page.get_by_role("tabpanel", name="Image → Text").get_by_text(Path(image_path).name).first.wait_for(
        state="visible", timeout=timeout_ms)
    settled(page, timeout_ms)
    page.get_by_role("button", name="Caption").click()
    first = page.locator("strong", has_text="1.").first
    first.wait_for(state="visible", timeout=timeout_ms)
    return first


def continue_text(page, prompt: str, timeout_ms: int = 60_000):
    """Type a prompt in the Text continuation tab, click continue; returns the locator of the
    first text shown (it appears after the first block, then grows block by block)."""
    page.get_by_role("tab", name="Text continuation").click()
    box = page.get_by_role("tabpanel", name="Text continuation").get_by_label("Prompt")
    box.fill(prompt)
    box.press("Control+Enter")
    settled(page, timeout_ms)
    page.get_by_role("button", name="Continue").click()
    shown = page.locator("strong", has_text=prompt).first
    shown.wait_for(state="visible", timeout=timeout_ms)
    return shown
