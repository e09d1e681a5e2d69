"""Text VAE training throughput and model-FLOP utilisation (MFU) on this machine.

Measures, in one run:

1. the peak fp32 matmul rate: ``torch.matmul`` of square fp32 matrices (1024, 2048, 4096) on
   all cores (``torch.get_num_threads()``), best of a few timed reps, 2·n³ FLOPs each;
2. the training throughput of a Text VAE preset on random token ids: full steps (forward,
   ``text_vae_loss`` with the default :class:`TextVAELossConfig`, backward, AdamW step), a few
   warm-up then timed steps, split into forward / backward / optimizer time. This part runs in
   a **fresh subprocess**, so its peak RSS (``ru_maxrss``) is the training process's own; the
   RSS just before the first step (imports + model + batch) is reported beside it;
3. model FLOPs per token, analytic (:func:`model_flops_per_token`), cross-checked with
   ``torch.utils.flop_counter.FlopCounterMode`` on one training step (forward + backward);
4. MFU = tokens/s × model FLOPs per token / peak matmul FLOP/s (issue "Training engine and the
   Text VAE": target >= 30% on the small preset).

``--sweep`` repeats 2. over threads {1, all} × batch {16, 32, 64} and with
``OMP_WAIT_POLICY=PASSIVE``; ``--profile`` prints the ops that take the time in one training
step (``torch.profiler``).

    python bench/bench_vae_text.py                          # small preset, batch 16, 128 tokens
    python bench/bench_vae_text.py --json bench/results/vae_text.json --sweep --profile

The machine should be otherwise idle: the load average is printed before and after. With the
default (spinning) OpenMP wait policy, two threads slow down 2-5x when another process holds
one of the cores; ``OMP_WAIT_POLICY=PASSIVE`` (set before torch loads) avoids that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cola_mm.vae_text.losses import TextVAELossConfig, text_vae_loss
from cola_mm.vae_text.model import PRESETS, TextVAE, TextVAEConfig, preset

MASK_ID = 3  # <mask> in our tokenizers; any id < vocab works for random data
MFU_TARGET = 0.30


# --------------------------------------------------------------------------- peak matmul


def peak_matmul_flops(sizes=(1024, 2048, 4096), warmup: int = 2, reps: int = 5,
                      threads: int | None = None) -> dict[int, float]:
    """Best fp32 FLOP/s of ``a @ b`` for square n×n matrices, per size, on ``threads`` threads
    (default: the current setting)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or saved)
    best: dict[int, float] = {}
    try:
        for n in sizes:
            gen = torch.Generator().manual_seed(n)
            a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
            out = torch.empty(n, n)
            for _ in range(warmup):
                torch.matmul(a, b, out=out)
            times = []
            for _ in range(reps if n < 4096 else max(2, reps // 2)):
                start = time.perf_counter()
                torch.matmul(a, b, out=out)
                times.append(time.perf_counter() - start)
            best[n] = 2 * n ** 3 / min(times)
    finally:
        torch.set_num_threads(saved)
    return best


# --------------------------------------------------------------------------- FLOPs per token


def linear_params(model: nn.Module) -> int:
    """Weights of every ``nn.Linear`` (the matmuls run once per token), lm_head included; the
    embedding is a lookup, not a matmul, and biases/norms are negligible."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def attention_context(seq_len: int, block_size: int) -> float:
    """Average number of keys a query attends to under block-causal attention: a query in block
    i (0-based) sees (i+1)·block keys, so the mean over the sequence is (seq_len + block)/2
    (a partial last block is counted exactly)."""
    return sum(min((q // block_size + 1) * block_size, seq_len) for q in range(seq_len)) / seq_len


def model_flops_per_token(model: TextVAE, seq_len: int) -> dict[str, float]:
    """Training FLOPs per token that the model needs (the "model FLOPs" of MFU, PaLM App. B):

        matmul    = 6 · N_linear                 (2 forward + 4 backward per weight)
        attention = 3 · L · 4 · n_ctx · d_model  (forward: q·kᵀ and p·v, 2·n_ctx·d each;
                                                  backward twice the forward)

    ``N_linear`` = :func:`linear_params`, ``L`` = encoder + decoder layers and ``n_ctx`` =
    :func:`attention_context` (≈ seq_len/2 + block/2, the useful keys only; a dense masked
    kernel does ~2× that attention work). Norms, RoPE, softmax, the loss and the optimizer are
    not counted, as usual."""
    cfg: TextVAEConfig = model.config
    layers = cfg.enc_layers + cfg.dec_layers
    n_ctx = attention_context(seq_len, cfg.block_size)
    matmul = 6.0 * linear_params(model)
    attention = 3.0 * layers * 4.0 * n_ctx * cfg.d_model
    return {"matmul": matmul, "attention": attention, "total": matmul + attention, "n_ctx": n_ctx}


def _cpu_flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out, query, key, value)


def counted_flops_per_token(model: TextVAE, ids: torch.Tensor) -> dict[str, float]:
    """FLOPs of one training step (forward + loss + backward) as counted by ``FlopCounterMode``,
    per token. Torch does not register the CPU flash-attention kernel, so it is added here;
    attention is then counted as executed: dense (all n keys, mask ignored) and with the
    backward's recomputation of the scores (3.5× forward instead of 3×)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward}
    valid = torch.ones_like(ids, dtype=torch.bool)
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        loss, _ = text_vae_loss(model, ids, valid, TextVAELossConfig(), MASK_ID)
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_op: dict[str, int] = {}
    for op, flops in counter.get_flop_counts()["Global"].items():
        by_op[str(op)] = by_op.get(str(op), 0) + flops
    tokens = ids.numel()
    attn = sum(v for k, v in by_op.items() if "attention" in k)
    return {"total": counter.get_total_flops() / tokens, "attention": attn / tokens,
            "matmul": (counter.get_total_flops() - attn) / tokens}


# --------------------------------------------------------------------------- training


def build(spec: dict[str, Any]) -> tuple[TextVAE, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(spec["seed"])
    model = TextVAE(preset(spec["preset"], vocab_size=spec["vocab_size"])).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, **spec.get("adamw", {}))
    ids = torch.randint(0, spec["vocab_size"], (spec["batch_size"], spec["seq_len"]))
    return model, opt, ids


def train_step(model: TextVAE, opt: torch.optim.Optimizer, ids: torch.Tensor, cfg: TextVAELossConfig,
               valid: torch.Tensor) -> tuple[float, float, float]:
    """One full step; returns (forward+loss, backward, optimizer) seconds."""
    t0 = time.perf_counter()
    loss, _ = text_vae_loss(model, ids, valid, cfg, MASK_ID)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def training_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs inside the subprocess: warm-up and timed steps, peak RSS of this process (or,
    with ``spec["profile"]``, :func:`profile_step`)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("profile"):
        return {"profile": profile_step(spec)}
    model, opt, ids = build(spec)
    cfg, valid = TextVAELossConfig(), torch.ones_like(ids, dtype=torch.bool)
    rss_before = _rss_mb()
    for _ in range(spec["warmup"]):
        train_step(model, opt, ids, cfg, valid)
    parts = [train_step(model, opt, ids, cfg, valid) for _ in range(spec["steps"])]
    step = [sum(p) for p in parts]
    mean = sum(step) / len(step)
    return {**spec, "threads": torch.get_num_threads(), "step_s": mean, "step_s_best": min(step),
            "tokens_per_s": ids.numel() / mean,
            "forward_s": sum(p[0] for p in parts) / len(parts),
            "backward_s": sum(p[1] for p in parts) / len(parts),
            "optimizer_s": sum(p[2] for p in parts) / len(parts),
            "rss_before_train_mb": rss_before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_training(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`training_worker` in a fresh Python process (clean peak-RSS accounting), with
    ``env`` added to its environment (e.g. ``OMP_WAIT_POLICY``, read when torch loads)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"training worker failed:\n{proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "env": env or {}}


# --------------------------------------------------------------------------- profile


def profile_step(spec: dict[str, Any], top: int = 15) -> list[dict[str, Any]]:
    """Self CPU time per op over two training steps (after warm-up), largest first."""
    from torch.profiler import ProfilerActivity, profile

    model, opt, ids = build(spec)
    cfg, valid = TextVAELossConfig(), torch.ones_like(ids, dtype=torch.bool)
    for _ in range(2):
        train_step(model, opt, ids, cfg, valid)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            train_step(model, opt, ids, cfg, valid)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 2e3,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count // 2}
            for e in events[:top]]


# --------------------------------------------------------------------------- report


def _row(label: str, value: str) -> str:
    return f"  {label:<44} {value}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--sweep", action="store_true",
                        help="also threads {1, all} x batch {16, 32, 64}, and all threads with OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--profile", action="store_true", help="print the top ops of a training step")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(training_worker(json.loads(args.worker))))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "default")
    load_before = os.getloadavg()[0]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads, "
          f"OMP_WAIT_POLICY {wait_policy}, load average {load_before:.2f}")
    if load_before > 0.5:
        print("  warning: the machine is busy; figures will be low and noisy "
              "(two spinning OpenMP threads suffer most: see --sweep)")

    spec = {"preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len,
            "vocab_size": args.vocab_size, "warmup": args.warmup, "steps": args.steps, "seed": 0,
            "threads": threads}
    model, _, ids = build(spec)
    analytic = model_flops_per_token(model, args.seq_len)
    counted = counted_flops_per_token(model, ids)
    n_params = model.num_params()
    del model, ids

    # the peak is taken before and after the training runs (best of both): a busy moment
    # must not understate it, which would overstate the MFU
    peaks = peak_matmul_flops()
    todo = [(spec, None)]
    if args.sweep:
        short = {"warmup": 2, "steps": 4}
        todo += [({**spec, **short, "threads": t, "batch_size": b}, None)
                 for t in sorted({1, threads}) for b in (16, 32, 64)]
        if threads > 1:
            todo += [({**spec, **short, "batch_size": b}, {"OMP_WAIT_POLICY": "PASSIVE"}) for b in (16, 32)]
    runs = [measure_training(s, env) for s, env in tqdm(todo, desc="training", unit="run", leave=False)]
    peaks = {n: max(f, g) for (n, f), g in zip(peaks.items(), peak_matmul_flops().values())}
    peak = max(peaks.values())
    peak_1 = max(peak_matmul_flops((2048,), threads=1).values()) if args.sweep else None
    load_after = os.getloadavg()[0]
    for r in runs:
        r["model_flops_per_s"] = r["tokens_per_s"] * analytic["total"]
        r["mfu"] = r["model_flops_per_s"] / peak
        if peak_1 is not None and r["threads"] == 1:
            r["mfu_of_one_core"] = r["model_flops_per_s"] / peak_1
    main_run = runs[0]

    print("\npeak fp32 matmul")
    for n, f in peaks.items():
        print(_row(f"{n}x{n} @ {n}x{n}, {threads} threads", f"{f / 1e9:8.1f} GFLOP/s"))
    if peak_1 is not None:
        print(_row("2048x2048 @ 2048x2048, 1 thread", f"{peak_1 / 1e9:8.1f} GFLOP/s"))
    print(f"\nText VAE '{args.preset}' training: batch {args.batch_size} x {args.seq_len} tokens, "
          f"vocab {args.vocab_size}, {n_params / 1e6:.2f}M params, {threads} threads")
    rows = [
        ("peak matmul (best)", f"{peak / 1e9:8.1f} GFLOP/s"),
        ("model FLOPs/token, analytic (matmul+attn)",
         f"{analytic['total'] / 1e6:8.2f} M  ({analytic['matmul'] / 1e6:.2f} + {analytic['attention'] / 1e6:.2f}, "
         f"n_ctx {analytic['n_ctx']:.0f})"),
        ("FLOPs/token, FlopCounterMode (fwd+bwd)",
         f"{counted['total'] / 1e6:8.2f} M  ({counted['matmul'] / 1e6:.2f} + {counted['attention'] / 1e6:.2f} "
         f"dense attn)"),
        ("step time (mean / best)", f"{main_run['step_s'] * 1e3:8.0f} ms / {main_run['step_s_best'] * 1e3:.0f} ms"),
        ("  forward+loss / backward / AdamW",
         f"{main_run['forward_s'] * 1e3:8.0f} / {main_run['backward_s'] * 1e3:.0f} / "
         f"{main_run['optimizer_s'] * 1e3:.0f} ms"),
        ("throughput", f"{main_run['tokens_per_s']:8.0f} tokens/s"),
        ("achieved model FLOP/s", f"{main_run['model_flops_per_s'] / 1e9:8.1f} GFLOP/s"),
        ("MFU", f"{100 * main_run['mfu']:8.1f} %  (target >= {100 * MFU_TARGET:.0f}%)"),
        ("RSS before training / peak (subprocess)",
         f"{main_run['rss_before_train_mb']:8.0f} MB / {main_run['peak_rss_mb']:.0f} MB"),
        ("load average before / after", f"{load_before:8.2f} / {load_after:.2f}"),
    ]
    for label, value in rows:
        print(_row(label, value))

    if args.sweep:
        print("\nsweep (MFU against the all-core peak; in brackets against one core's)")
        print(f"  {'threads':>7} {'wait':>8} {'batch':>5} {'tokens/s':>9} {'MFU %':>12} {'fwd/bwd/opt ms':>18} "
              f"{'peak RSS MB':>11}")
        for r in runs[1:]:
            split = f"{r['forward_s'] * 1e3:.0f}/{r['backward_s'] * 1e3:.0f}/{r['optimizer_s'] * 1e3:.0f}"
            mfu = f"{100 * r['mfu']:.1f}" + (f" ({100 * r['mfu_of_one_core']:.0f})" if "mfu_of_one_core" in r else "")
            wait = r["env"].get("OMP_WAIT_POLICY", wait_policy)
            print(f"  {r['threads']:>7} {wait:>8} {r['batch_size']:>5} {r['tokens_per_s']:>9.0f} {mfu:>12} "
                  f"{split:>18} {r['peak_rss_mb']:>11.0f}")

    # in a subprocess too: same thread settings, and the profiler's log lines stay out of the table
    profile = measure_training({**spec, "profile": True})["profile"] if args.profile else None
    if profile:
        print("\ntop ops of one training step (self CPU time)")
        for p in profile:
            print(f"  {p['op'][:56]:<56} {p['self_ms_per_step']:8.1f} ms {100 * p['share']:5.1f}%  x{p['calls_per_step']}")

    if args.json:
        result = {"machine": {"cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__,
                              "omp_wait_policy": wait_policy, "load_average": [load_before, load_after]},
                  "peak_matmul_flops": {str(n): f for n, f in peaks.items()}, "peak_flops": peak,
                  "peak_flops_one_thread": peak_1,
                  "params": n_params, "flops_per_token_analytic": analytic,
                  "flops_per_token_counted": counted, "training": main_run, "sweep": runs[1:],
                  "profile": profile, "mfu_target": MFU_TARGET}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
