"""Load bench of `cola-mm serve` on loopback: batched vs one-at-a-time throughput, latency, errors, RSS.

    python bench/bench_serve.py --ckpt checkpoints/demo --clients 16 --requests 64 \\
        --json bench/results/serve.json --png bench/results/serve.png

Starts the server as a subprocess (loopback, a free port), then runs two workloads, each first
one request at a time (one client: the serial baseline) and then from ``--clients`` concurrent
clients, on the same list of requests:

- ``text``: completions of different prompts and seeds (``--max-tokens`` each);
- ``mixed``: the three jobs in turn (completion, caption of a bundled example, one image).

Reports requests/s and generated tokens/s, the speed-up of concurrent over serial, p50/p95
latency, errors (anything but a 200), and the server's peak RSS (VmHWM). Bounded: a fixed number
of requests and ``--timeout`` seconds per request.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cola_mm.apps.driver import free_port  # noqa: E402
PROMPTS = ["ROMEO. ", "KING HENRY. Now, lords,", "JULIET. O ", "HAMLET. To be", "Enter the Duke", "FIRST CITIZEN. ",
           "Now is the winter", "MACBETH. ", "My lord, ", "OTHELLO. ", "Exeunt", "PORTIA. The quality",
           "LEAR. ", "Good morrow", "What, ho!", "BRUTUS. "]
IMAGE_PROMPTS = ["a large red circle in the center", "a small blue square in the top left corner",
                 "a handwritten digit seven", "a big green triangle at the bottom"]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_requests(kind: str, count: int, max_tokens: int, example: str) -> list[tuple[str, dict]]:
    out = []
    for i in range(count):
        job = "text" if kind == "text" else ("text", "caption", "image")[i % 3]
        if job == "text":
            out.append(("/v1/completions", {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "seed": i}))
        elif job == "caption":
            out.append(("/v1/chat/completions", {"seed": i, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": example}}]}]}))
        else:
            out.append(("/v1/images/generations", {"prompt": IMAGE_PROMPTS[i % len(IMAGE_PROMPTS)], "seed": i}))
    return out


def run(url: str, requests: list[tuple[str, dict]], clients: int, timeout: float, label: str) -> dict:
    http = httpx.Client(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=clients + 4))
    bar = tqdm(total=len(requests), desc=label, unit="req")

    def one(req):
        path, body = req
        start = time.perf_counter()
        try:
            r = http.post(path, json=body)
            ok = r.status_code == 200
            tokens = r.json().get("usage", {}).get("completion_tokens", 0) if ok else 0
        except httpx.HTTPError:
            ok, tokens = False, 0
        bar.update()
        return path, ok, time.perf_counter() - start, tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, requests))
    wall = time.perf_counter() - start
    bar.close()
    http.close()
    lat = sorted(r[2] for r in results)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)

    per_job = {}
    for path in sorted({r[0] for r in results}):
        ls = sorted(r[2] for r in results if r[0] == path)
        per_job[path] = {"requests": len(ls), "p50_s": round(statistics.median(ls), 3),
                         "p95_s": round(ls[min(len(ls) - 1, int(0.95 * len(ls)))], 3)}
    return {"clients": clients, "requests": len(results), "errors": sum(not r[1] for r in results),
            "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 3),
            "tokens_per_s": round(sum(r[3] for r in results) / wall, 1),
            "p50_s": pct(0.5), "p95_s": pct(0.95), "per_endpoint": per_job}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(REPO / "checkpoints" / "demo"))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=64, help="requests per workload and mode")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    ap.add_argument("--workloads", default="text,mixed")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    args = ap.parse_args(argv)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "cola_mm.cli", "serve", "--ckpt", args.ckpt, "--port", str(port),
                               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
        example = "data:image/png;base64," + base64.b64encode(
            (REPO / "apps" / "examples" / "shapes_a.png").read_bytes()).decode()
        httpx.post(url + "/v1/completions", json={"prompt": "warm up", "max_tokens": 4}, timeout=120)
        results = {"ckpt": args.ckpt, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                   "max_tokens": args.max_tokens, "cpu_threads": os.cpu_count(), "workloads": {}}
        for kind in args.workloads.split(","):
            reqs = make_requests(kind, args.requests, args.max_tokens, example)
            serial = run(url, reqs, 1, args.timeout, f"{kind} serial")
            batched = run(url, reqs, args.clients, args.timeout, f"{kind} x{args.clients}")
            results["workloads"][kind] = {"serial": serial, "concurrent": batched,
                                          "speedup": round(batched["requests_per_s"] / serial["requests_per_s"], 2)}
            print(f"{kind}: serial {serial['requests_per_s']} req/s, {args.clients} clients "
                  f"{batched['requests_per_s']} req/s ({results['workloads'][kind]['speedup']}x), "
                  f"p50 {batched['p50_s']} s, p95 {batched['p95_s']} s, errors {serial['errors'] + batched['errors']}")
        results["batching"] = httpx.get(url + "/health").json()["batching"]
        results["server_peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
        print(f"server peak RSS {results['server_peak_rss_mib']} MiB; batching {results['batching']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.png:
        plot(results, args.png)
    return results


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results["workloads"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    x = range(len(kinds))
    serial = [results["workloads"][k]["serial"]["requests_per_s"] for k in kinds]
    conc = [results["workloads"][k]["concurrent"]["requests_per_s"] for k in kinds]
    clients = results["workloads"][kinds[0]]["concurrent"]["clients"]
    axes[0].bar([i - 0.2 for i in x], serial, 0.4, label="one at a time")
    axes[0].bar([i + 0.2 for i in x], conc, 0.4, label=f"{clients} clients, batched")
    axes[0].set_xticks(list(x), kinds)
    axes[0].set_ylabel("requests / s")
    axes[0].legend()
    axes[0].set_title("throughput")
    for i, k in enumerate(kinds):
        w = results["workloads"][k]["concurrent"]
        axes[1].bar([i - 0.2, i + 0.2], [w["p50_s"], w["p95_s"]], 0.4, color=["tab:blue", "tab:orange"])
    axes[1].set_xticks(list(x), kinds)
    axes[1].set_ylabel("seconds")
    axes[1].set_title(f"latency at {clients} clients (p50 blue, p95 orange)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
