"""The app under several users at once: N concurrent browser sessions on one server.

    python bench/bench_app_sessions.py --ckpt checkpoints/demo --sessions 8 --rounds 2 \
        --json bench/results/app_sessions.json

Starts ``cola-mm app`` on a free loopback port and opens ``--sessions`` browser contexts in one
headless chromium (Playwright, async): every context is its own Streamlit session, as separate
users are. Each session runs ``--rounds`` rounds of the three jobs (an image from its own
prompt, a caption of an uploaded example, a continuation of its own prompt); odd sessions use
an over-long image prompt, which the app cuts with a notice. Checked per session: no error or
exception on the page, its own prompt shown under its image and in its text, the cut notice
exactly in the sessions whose prompt was cut. Reported: p50/p95 latency per job, errors, how
many times the server loaded the pipeline (its log), the server's peak RSS. Bounded: a time
limit per action and for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cola_mm.apps.driver import CHROMIUM, CHROMIUM_FLAGS, AppServer  # noqa: E402

SHAPES = ["circle", "square", "triangle", "cross"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown"]
TEXT_PROMPTS = ["ROMEO. ", "KING HENRY. Now, lords,", "JULIET. O ", "HAMLET. To be", "Enter the Duke",
                "MACBETH. ", "My lord, ", "PORTIA. The quality"]
UPLOAD = REPO / "apps" / "examples" / "shapes_a.png"


async def settled(page, timeout_ms: int) -> None:
    await page.wait_for_timeout(300)
    await page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout_ms)


async def page_errors(page) -> list[str]:
    return [t for t in await page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
            .all_inner_texts()]


async def image_job(page, prompt: str, timeout_ms: int) -> tuple[float, str, list[str]]:
    await page.get_by_role("tab", name="Text → Image").click()
    panel = page.get_by_role("tabpanel", name="Text → Image")
    box = panel.get_by_label("Prompt")
    await box.fill(prompt)
    await box.press("Enter")
    await settled(page, timeout_ms)
    start = time.perf_counter()
    await panel.get_by_role("button", name="Generate images").click()
    await panel.locator('[data-testid="stImage"] img').first.wait_for(state="visible", timeout=timeout_ms)
    await settled(page, timeout_ms)
    seconds = time.perf_counter() - start
    caption = " ".join(await panel.locator('[data-testid="stImageCaption"], [data-testid="caption"]').all_inner_texts())
    notices = await panel.locator('[data-testid="stAlertContentInfo"]').all_inner_texts()
    return seconds, caption, notices


async def caption_job(page, timeout_ms: int) -> tuple[float, str]:
    await page.get_by_role("tab", name="Image → Text").click()
    panel = page.get_by_role("tabpanel", name="Image → Text")
    await panel.locator('input[type="file"]').first.set_input_files(str(UPLOAD))
    await panel.get_by_text(UPLOAD.name).first.wait_for(state="visible", timeout=timeout_ms)
    await settled(page, timeout_ms)
    start = time.perf_counter()
    await panel.get_by_role("button", name="Caption").click()
    await panel.locator("strong", has_text="1.").first.wait_for(state="visible", timeout=timeout_ms)
    await settled(page, timeout_ms)
    return time.perf_counter() - start, (await panel.locator("strong", has_text="1.").first.locator("..").inner_text())


async def text_job(page, prompt: str, timeout_ms: int) -> tuple[float, str]:
    await page.get_by_role("tab", name="Text continuation").click()
    panel = page.get_by_role("tabpanel", name="Text continuation")
    box = panel.get_by_label("Prompt")
    await box.fill(prompt)
    await box.press("Control+Enter")
    await settled(page, timeout_ms)
    start = time.perf_counter()
    await panel.get_by_role("button", name="Continue").click()
    await panel.locator("strong", has_text=prompt).first.wait_for(state="visible", timeout=timeout_ms)
    await settled(page, timeout_ms)
    seconds = time.perf_counter() - start
    shown = " ".join(await panel.locator("strong").all_inner_texts())
    return seconds, shown


async def session(browser, url: str, i: int, rounds: int, timeout_ms: int, bar) -> dict:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout_ms)
    page = await context.new_page()
    out = {"session": i, "image_s": [], "caption_s": [], "text_s": [], "errors": [], "checks_failed": []}
    try:
        await page.goto(url)
        await page.get_by_role("button", name="Generate images").wait_for(state="visible", timeout=timeout_ms)
        for r in range(rounds):
            prompt = f"a large {COLOURS[i % len(COLOURS)]} {SHAPES[(i + r) % len(SHAPES)]} in the center"
            long_prompt = i % 2 == 1
            sent = prompt + " and" * 80 if long_prompt else prompt
            try:
                s, caption, notices = await image_job(page, sent, timeout_ms)
                out["image_s"].append(s)
                shown_cut = any("prompt cut" in n for n in notices)
                if shown_cut != long_prompt:
                    out["checks_failed"].append(f"round {r}: cut notice shown={shown_cut}, expected {long_prompt}")
                if prompt not in caption:
                    out["checks_failed"].append(f"round {r}: image caption {caption[:60]!r} is not this session's")
                s, _ = await caption_job(page, timeout_ms)
                out["caption_s"].append(s)
                tprompt = TEXT_PROMPTS[(i + r) % len(TEXT_PROMPTS)] + f"[{i}]"
                s, shown = await text_job(page, tprompt, timeout_ms)
                out["text_s"].append(s)
                if tprompt not in shown:
                    out["checks_failed"].append(f"round {r}: text shows {shown[:60]!r}, not this session's prompt")
                out["errors"] += await page_errors(page)
            except Exception as err:  # noqa: BLE001 — a timeout or a missing element is an error of the run
                out["errors"].append(f"round {r}: {type(err).__name__}: {str(err).splitlines()[0]}")
            bar.update()
    finally:
        await context.close()
    return out


async def drive(url: str, sessions: int, rounds: int, timeout_ms: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            with tqdm(total=sessions * rounds, desc=f"{sessions} sessions", unit="round") as bar:
                return await asyncio.gather(*(session(browser, url, i, rounds, timeout_ms, bar)
                                              for i in range(sessions)))
        finally:
            await browser.close()


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3) if v else float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(REPO / "checkpoints" / "demo"))
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per action")
    ap.add_argument("--limit", type=float, default=1800.0, help="seconds for the whole run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    server = AppServer(args.ckpt)
    with server:
        start = time.perf_counter()
        results = asyncio.run(asyncio.wait_for(drive(server.url, args.sessions, args.rounds, int(args.timeout * 1000)),
                                               args.limit))
        wall = time.perf_counter() - start
        rss = server.peak_rss_mb()
        loads = server.log().count("pipeline ready")
    report = {"ckpt": args.ckpt, "sessions": args.sessions, "rounds": args.rounds, "wall_s": round(wall, 1),
              "errors": sum(len(r["errors"]) for r in results),
              "checks_failed": sum(len(r["checks_failed"]) for r in results),
              "pipeline_loads": loads, "server_peak_rss_mb": round(rss, 1), "jobs": {}, "per_session": results}
    for job in ("image", "caption", "text"):
        values = [v for r in results for v in r[f"{job}_s"]]
        report["jobs"][job] = {"n": len(values), "p50_s": pct(values, 0.5), "p95_s": pct(values, 0.95),
                               "mean_s": round(statistics.mean(values), 3) if values else None}
    print(json.dumps({k: v for k, v in report.items() if k != "per_session"}, indent=2))
    for r in results:
        for problem in r["errors"] + r["checks_failed"]:
            print(f"session {r['session']}: {problem}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
