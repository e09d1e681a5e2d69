"""A real browser on the real app: `cola-mm app` on the bundled demo checkpoint, on a free
localhost port, driven by Debian's chromium through Playwright. `make test` (and so .ci/run)
installs chromium when it is missing; without it this test fails, it does not skip."""

from __future__ import annotations

import shutil
from pathlib import Path

from cola_mm.apps.driver import AppServer, browser_page, caption_upload, continue_text, generate_images, wait_interactive
from conftest import REPO

DEMO = REPO / "checkpoints" / "demo"
PNG = b"\x89PNG\r\n\x1a\n"


def test_app_in_chromium_generates_captions_continues_and_stops(tmp_path):
    upload = tmp_path / "my_upload.png"
    shutil.copyfile(REPO / "apps" / "examples" / "digit_3.png", upload)
    server = AppServer(DEMO, log=tmp_path / "server.log")
    with server:
        with browser_page() as page:
            page.goto(server.url)
            wait_interactive(page)
            page.screenshot(path=str(tmp_path / "0_start.png"))
            grid = generate_images(page, "a large red circle in the center")
            assert grid.evaluate("img => img.naturalWidth") > 0  # a decoded image, not a broken link
            page.screenshot(path=str(tmp_path / "1_text_to_image.png"), full_page=True)
            first = caption_upload(page, upload)
            assert first.evaluate("e => e.parentElement.innerText").startswith("1.")
            page.screenshot(path=str(tmp_path / "2_image_to_text.png"), full_page=True)
            continue_text(page, "KING HENRY.")
            page.screenshot(path=str(tmp_path / "3_text.png"), full_page=True)
            assert "Traceback" not in page.content()
        pid = server.pid
    # stopped by its own process id: gone, and it said nothing alarming
    assert server.proc.returncode is not None and not Path(f"/proc/{pid}").exists()
    assert "Traceback" not in server.log(), server.log()[-3000:]
    for name in ("0_start", "1_text_to_image", "2_image_to_text", "3_text"):
        shot = tmp_path / f"{name}.png"
        assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 10_000
