"""The generic training loop on the vae-text stage: outputs, exact resume after a hard kill,
NaN stop, bad input, and multi-process (gloo DDP, DeepSpeed ZeRO-2) runs on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cola_mm.core.components import CheckpointError
from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig, load_train_config

from conftest import REPO


def tiny_config(datasets: Path, run_dir: Path, **over) -> dict:
    cfg = {
        "stage": "vae-text",
        "run_dir": str(run_dir),
        "model": {"preset": "tiny"},
        "data": {
            "train": [{"shards": str(datasets / "text" / "train"), "weight": 3},
                      {"shards": str(datasets / "shapes" / "train"), "weight": 1}],
            "val": [{"shards": str(datasets / "text" / "val")}],
            "tokenizer": str(datasets / "tokenizer"),
            "seq_len": 32,
            "shuffle_buffer": 20,
        },
        "optim": {"lr": 0.003, "warmup_steps": 2},
        "batch_size": 4,
        "max_steps": 8,
        "log_every": 1,
        "val_every": 4,
        "val_batches": 2,
        "ckpt_every": 4,
    }
    for key, value in over.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


def write_config(tmp_path: Path, cfg: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str, env: dict | None = None, launcher: list[str] | None = None, timeout: int = 300):
    cmd = (launcher or [sys.executable, "-m", "cola_mm.cli"]) + list(args)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "text_vae" / "model.safetensors"))


# --------------------------------------------------------------------------- config


def test_config_errors_are_clear(tiny_datasets, tmp_path):
    cfg = tiny_config(tiny_datasets, tmp_path / "run")
    cfg["optim"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'; valid keys: lr, betas"):
        load_train_config(write_config(tmp_path, cfg))
    cfg = tiny_config(tiny_datasets, tmp_path / "run", batch_size="four")
    with pytest.raises(ConfigError, match="batch_size: expected an integer"):
        load_train_config(write_config(tmp_path, cfg))
    cfg = tiny_config(tiny_datasets, tmp_path / "run")
    parsed = load_train_config(write_config(tmp_path, cfg), ["optim.lr=0.5", "model.d_latent=8"])
    assert parsed.optim.lr == 0.5 and parsed.model["d_latent"] == 8
    assert TrainConfig.from_dict(parsed.to_dict()) == parsed  # round trip
    with pytest.raises(ConfigError, match="not of the form"):
        load_train_config(write_config(tmp_path, cfg), ["optim.lr"])


# --------------------------------------------------------------------------- one process


def test_single_process_run_writes_everything(tiny_datasets, tmp_path):
    from cola_mm.training.loop import train
    from cola_mm.vae_text.model import TextVAE
    from cola_mm.vae_text.tokenizer import load_tokenizer

    cfg = TrainConfig.from_dict(tiny_config(tiny_datasets, tmp_path / "run"))
    out = train(cfg, progress=False)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000004", "step_000008"]
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == list(range(1, 9))
    assert {"val_acc_mean", "val_acc_sample", "val_kl_per_token", "val_active_dims"} <= recs[-1].keys()
    assert all(r["tokens_per_s"] > 0 for r in recs if "loss" in r)
    vae = TextVAE.from_pretrained(out / "text_vae")
    tok = load_tokenizer(out / "tokenizer")
    assert vae.config.vocab_size == len(tok)
    assert vae.config.latent_scale != 1.0  # set from data statistics
    # re-running into the same run_dir without --resume is refused, nothing overwritten
    before = (run / "checkpoints" / "step_000008" / "trainer_state.json").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False)
    assert (run / "checkpoints" / "step_000008" / "trainer_state.json").read_bytes() == before
    # --resume-if-any on a finished run trains no step and exports the same weights again
    first = weights(out)
    assert train(cfg, resume="auto", progress=False) == out
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if "loss" in l][-1] == 8
    again = weights(out)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    # …and on an empty run_dir starts fresh
    fresh = TrainConfig.from_dict(tiny_config(tiny_datasets, tmp_path / "fresh", max_steps=2, val_every=0))
    assert (train(fresh, resume="auto", progress=False) / "text_vae").is_dir()


def test_exact_resume_after_hard_kill(tiny_datasets, tmp_path):
    """8 steps in one go == 4 steps, a SIGKILL at step 6 (between checkpoints), --resume.
    With EMA on, so the EMA state's save/restore is checked too (components come from it)."""
    full = write_config(tmp_path, tiny_config(tiny_datasets, tmp_path / "full", ema_decay=0.5), "full.yaml")
    proc = cli("train", "--config", str(full), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]

    split = write_config(tmp_path, tiny_config(tiny_datasets, tmp_path / "split", ema_decay=0.5), "split.yaml")
    proc = cli("train", "--config", str(split), "--no-progress", env={"COLA_MM_KILL_AT_STEP": "6"})
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed, no clean-up ran
    assert not (tmp_path / "split" / "model").exists()
    assert max(losses(tmp_path / "split")) == 6  # steps 5-6 were logged, then lost
    proc = cli("train", "--config", str(split), "--no-progress", "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stdout and "step_000004" in proc.stdout

    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    wa, wb = weights(tmp_path / "full" / "model"), weights(tmp_path / "split" / "model")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_datasets, tmp_path):
    cfg = tiny_config(tiny_datasets, tmp_path / "run", max_steps=30, ckpt_every=1, val_every=0)
    cfg["optim"].update(lr=1e4, warmup_steps=0, grad_clip=0.0)  # diverges within a few steps
    proc = cli("train", "--config", str(write_config(tmp_path, cfg)), "--no-progress")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert ("NaN/inf" in last or "diverged" in last) and "last good checkpoint" in last, last
    assert "Traceback" not in proc.stderr
    done = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert done and all(not p.name.endswith(".tmp") for p in done)
    from cola_mm.vae_text.model import TextVAE
    vae = TextVAE.from_pretrained(done[-1] / "components" / "text_vae")
    assert all(torch.isfinite(p).all() for p in vae.parameters())


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_give_one_line_errors(tiny_datasets, tmp_path):
    cases = []
    cfg = tiny_config(tiny_datasets, tmp_path / "r1")
    cfg["data"]["train"][0]["shards"] = str(tmp_path / "no_such_shards")
    cases.append((cfg, "does not exist"))
    cfg = tiny_config(tiny_datasets, tmp_path / "r2")
    cfg["data"]["tokenizer"] = str(tmp_path / "no_tokenizer")
    cases.append((cfg, "no_tokenizer"))
    cfg = tiny_config(tiny_datasets, tmp_path / "r3", stage="vae-audio")
    cases.append((cfg, "unknown stage"))
    cfg = tiny_config(tiny_datasets, tmp_path / "r4")
    cfg["model"]["preset"] = "huge"
    cases.append((cfg, "unknown TextVAE preset"))
    for i, (cfg, needle) in enumerate(cases):
        proc = cli("train", "--config", str(write_config(tmp_path, cfg, f"c{i}.yaml")), "--no-progress")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and needle in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
    proc = cli("train", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "config file not found" in proc.stderr


def test_checkpoint_damage_is_reported_not_unpickled(tmp_path):
    from cola_mm.vae_text.model import TextVAE, preset

    vae = TextVAE(preset("tiny", vocab_size=50))
    vae.save_pretrained(tmp_path / "good")
    with pytest.raises(CheckpointError, match="not found"):
        TextVAE.from_pretrained(tmp_path / "absent")
    shutil.copytree(tmp_path / "good", tmp_path / "nocfg")
    (tmp_path / "nocfg" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        TextVAE.from_pretrained(tmp_path / "nocfg")
    shutil.copytree(tmp_path / "good", tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        TextVAE.from_pretrained(tmp_path / "noweights")
    shutil.copytree(tmp_path / "good", tmp_path / "corrupt")
    blob = (tmp_path / "corrupt" / "model.safetensors").read_bytes()
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        TextVAE.from_pretrained(tmp_path / "corrupt")
    shutil.copytree(tmp_path / "good", tmp_path / "other")
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    cfg["d_model"] = 64
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        TextVAE.from_pretrained(tmp_path / "other")
    # saving over an existing component is atomic: a failure leaves the old one intact
    before = (tmp_path / "good" / "model.safetensors").read_bytes()
    with pytest.raises(Exception):
        vae.save_pretrained(tmp_path / "good", state_dict={"x": object()})
    assert (tmp_path / "good" / "model.safetensors").read_bytes() == before


# --------------------------------------------------------------------------- several processes


def _launch(num_processes: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(num_processes), "--num_machines", "1", "--main_process_port", "0", "-m", "cola_mm.cli"]


@pytest.mark.parametrize("deepspeed", [None, "zero2", "zero3"])
def test_two_processes_on_cpu(tiny_datasets, tmp_path, deepspeed):
    """Two CPU processes (gloo): plain DDP, and DeepSpeed ZeRO-2/3 through accelerate."""
    over = {"max_steps": 4, "ckpt_every": 2, "val_every": 0}
    if deepspeed:
        over["deepspeed"] = str(REPO / "configs" / "deepspeed" / f"{deepspeed}.json")
    cfg = tiny_config(tiny_datasets, tmp_path / "run", **over)
    # plain DDP on CPU needs ACCELERATE_USE_CPU=1; accelerate skips DeepSpeed when it is set, and
    # on a machine without GPUs DeepSpeed picks its CPU accelerator with our gloo process group
    env = {} if deepspeed else {"ACCELERATE_USE_CPU": "1"}
    proc = cli("train", "--config", str(write_config(tmp_path, cfg)), "--no-progress",
               env=env, launcher=_launch(2), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    state = json.loads((run / "checkpoints" / "step_000004" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2
    assert (run / "checkpoints" / "step_000004" / "loader_rank1.json").is_file()
    ds_files = list((run / "checkpoints" / "step_000004" / "state").rglob("zero_pp_rank_1_*"))
    assert bool(ds_files) == bool(deepspeed)  # DeepSpeed really ran, with a shard per rank
    assert proc.stdout.count("trained: components") == 1  # only the main process reports
    from cola_mm.vae_text.model import TextVAE
    vae = TextVAE.from_pretrained(run / "model" / "text_vae")
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert len(losses(run)) == 4


def test_bf16_on_cpu_autocasts_and_tracks_fp32(tiny_datasets, tmp_path, monkeypatch):
    """`precision: bf16` on a CPU really runs the matmuls in bf16 (the first loss differs from fp32's
    in its low bits) and trains the same run (within 1 % at every step); `auto` stays fp32 on a CPU
    and says once that bf16 is there when the CPU multiplies bf16 in hardware."""
    from cola_mm.training import loop

    runs, said = {}, {}
    for precision in ("auto", "bf16"):  # separate processes: accelerate fixes the precision per process
        cfg = tiny_config(tiny_datasets, tmp_path / precision, precision=precision, max_steps=4, val_every=0,
                          ckpt_every=4)
        proc = cli("train", "--config", str(write_config(tmp_path, cfg, f"{precision}.yaml")), "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[precision] = losses(tmp_path / precision)
        said[precision] = "--set precision=bf16" in proc.stdout + proc.stderr
    assert said == {"auto": loop.cpu_has_bf16_matmul(), "bf16": False}
    assert runs["auto"][1] != runs["bf16"][1]
    for step, fp32 in runs["auto"].items():
        assert runs["bf16"][step] == pytest.approx(fp32, rel=0.01)

    cfg = TrainConfig.from_dict(tiny_config(tiny_datasets, tmp_path / "x"))
    monkeypatch.setattr(loop, "cpu_has_bf16_matmul", lambda: True)
    assert "--set precision=bf16" in loop.precision_hint(cfg, on_cpu=True)
    assert loop.precision_hint(cfg, on_cpu=False) is None  # a GPU already trains in bf16
    assert loop.precision_hint(cfg.replace(precision="fp32"), on_cpu=True) is None  # asked for fp32
    monkeypatch.setattr(loop, "cpu_has_bf16_matmul", lambda: False)
    assert loop.precision_hint(cfg, on_cpu=True) is None


@pytest.mark.parametrize("units", [True, False])
def test_fastest_precision_follows_the_cpu_and_bf16_without_units_warns(tiny_datasets, tmp_path, monkeypatch, units):
    """`fastest` is bf16 on a GPU and on a CPU with bf16 matrix units, fp32 on a CPU without them
    (where bf16 autocast is emulated and runs several times slower); asking for bf16 there warns
    and names the way out, while `fastest` and fp32 say nothing."""
    from cola_mm.training import loop

    monkeypatch.setattr(loop, "cpu_has_bf16_matmul", lambda: units)
    cfg = TrainConfig.from_dict(tiny_config(tiny_datasets, tmp_path / "x"))
    at = {p: (loop.mixed_precision(cfg.replace(precision=p), on_cpu=True),
              loop.mixed_precision(cfg.replace(precision=p), on_cpu=False)) for p in ("auto", "fp32", "bf16", "fastest")}
    assert at == {"auto": ("no", "bf16"), "fp32": ("no", "no"), "bf16": ("bf16", "bf16"),
                  "fastest": ("bf16" if units else "no", "bf16")}
    hint = loop.precision_hint(cfg.replace(precision="bf16"), on_cpu=True)
    if units:
        assert hint is None
    else:
        assert hint.startswith("warning:") and "--set precision=fp32" in hint and "slower" in hint
    for quiet in ("fastest", "fp32"):
        assert loop.precision_hint(cfg.replace(precision=quiet), on_cpu=True) is None
    assert loop.precision_hint(cfg.replace(precision="bf16"), on_cpu=False) is None
    with pytest.raises(ConfigError, match="precision must be one of"):
        cfg.replace(precision="fp16")


def test_ema_warms_up_so_no_initial_weights_remain():
    """With the step passed, the EMA is the plain mean of the weights until the decay is reached:
    after 2,100 updates at decay 0.999 towards constant weights nothing of the initial (untrained)
    weights is left; the constant-decay EMA keeps 0.999**2100 ≈ 12 % of them."""
    from cola_mm.training.loop import EMA

    module = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(10.0)  # the initial weights
    warm, plain = EMA(module, 0.999), EMA(module, 0.999)
    with torch.no_grad():
        module.weight.fill_(1.0)  # the trained weights
    for step in range(1, 2101):
        warm.update(module, step)
        plain.update(module)
    assert torch.allclose(warm.shadow["weight"], torch.ones(1, 3))
    assert plain.shadow["weight"][0, 0].item() == pytest.approx(1 + 9 * 0.999 ** 2100, rel=1e-3)
    # the warm-up is the running mean, then the configured decay
    ema = EMA(module, 0.9)
    values = [2.0, 4.0, 6.0]
    for step, value in enumerate(values, 1):
        with torch.no_grad():
            module.weight.fill_(value)
        ema.update(module, step)
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(4.0)
    assert ema.decay_at(1) == 0.0 and ema.decay_at(5) == 0.8 and ema.decay_at(100) == 0.9


@pytest.mark.parametrize("deepspeed", ["zero2", "zero3"])
def test_deepspeed_resume_after_hard_kills(tiny_datasets, tmp_path, deepspeed):
    """Two processes under DeepSpeed ZeRO-2/3: a SIGKILL between checkpoints, then one in the
    middle of a checkpoint write, each followed by --resume, give the uninterrupted run's loss
    curve and weights (fp32 tolerance). ZeRO-2 and ZeRO-3 are told apart by the files they
    write; resuming on another number of processes is a one-line error."""
    ds = str(REPO / "configs" / "deepspeed" / f"{deepspeed}.json")
    over = {"max_steps": 8, "ckpt_every": 2, "val_every": 0, "deepspeed": ds}
    full = write_config(tmp_path, tiny_config(tiny_datasets, tmp_path / "full", **over), "full.yaml")
    proc = cli("train", "--config", str(full), "--no-progress", launcher=_launch(2), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    split = write_config(tmp_path, tiny_config(tiny_datasets, tmp_path / "split", **over), "split.yaml")
    proc = cli("train", "--config", str(split), "--no-progress", env={"COLA_MM_KILL_AT_STEP": "5"},
               launcher=_launch(2), timeout=600)
    assert proc.returncode != 0 and max(losses(tmp_path / "split")) >= 5
    state = tmp_path / "split" / "checkpoints" / "step_000004" / "state"
    names = {p.name for p in state.rglob("*.pt")}
    if deepspeed == "zero3":  # every rank holds a partition of the weights
        assert {"zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"} <= names
    else:  # ZeRO-2: whole weights once, optimizer state partitioned per rank
        assert "mp_rank_00_model_states.pt" in names and not any("zero_pp_rank_1_mp_rank_00_model" in n for n in names)
        assert "zero_pp_rank_1_mp_rank_00_optim_states.pt" in names

    one = cli("train", "--config", str(split), "--no-progress", "--resume", timeout=300)  # 1 process: refused
    assert one.returncode == 2 and "written by 2 process(es), this run has 1" in one.stderr
    assert "Traceback" not in one.stderr

    proc = cli("train", "--config", str(split), "--no-progress", "--resume", env={"COLA_MM_KILL_IN_CHECKPOINT": "6"},
               launcher=_launch(2), timeout=600)
    assert proc.returncode != 0 and "step_000004" in proc.stdout
    assert (tmp_path / "split" / "checkpoints" / "step_000006.tmp").is_dir()  # the half-written one
    proc = cli("train", "--config", str(split), "--no-progress", "--resume", launcher=_launch(2), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "step_000004" in proc.stdout  # not from the half-written step 6

    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5, (step, a[step], b[step])
    wa, wb = weights(tmp_path / "full" / "model"), weights(tmp_path / "split" / "model")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)


def test_regression_deepspeed_in_one_plain_process(tiny_datasets, tmp_path):
    """`cola-mm train` with a deepspeed: config and no launcher once died in DeepSpeed's MPI
    discovery (ModuleNotFoundError: mpi4py); it now runs as a world of one."""
    cfg = tiny_config(tiny_datasets, tmp_path / "run", max_steps=2, ckpt_every=2, val_every=0,
                      deepspeed=str(REPO / "configs" / "deepspeed" / "zero2.json"))
    proc = cli("train", "--config", str(write_config(tmp_path, cfg)), "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "text_vae" / "model.safetensors").is_file()


def test_two_nodes_rehearsed_on_loopback(tiny_datasets, tmp_path):
    """The README's multi-node command on one machine: two `accelerate launch --num_machines 2
    --machine_rank 0|1 --main_process_ip 127.0.0.1` groups of one process each (gloo, ZeRO-2,
    one shared run folder) train to the same loss curve as one 2-process run; each rank reads
    its own shard position (its own loader state)."""
    import socket

    ds = str(REPO / "configs" / "deepspeed" / "zero2.json")
    over = {"max_steps": 4, "ckpt_every": 4, "val_every": 0, "deepspeed": ds}
    one = write_config(tmp_path, tiny_config(tiny_datasets, tmp_path / "one", **over), "one.yaml")
    proc = cli("train", "--config", str(one), "--no-progress", launcher=_launch(2), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = write_config(tmp_path, tiny_config(tiny_datasets, tmp_path / "two", **over), "two.yaml")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
                               "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
                               "--main_process_port", str(port), "-m", "cola_mm.cli", "train", "--config", str(two),
                               "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=REPO) for rank in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    ckpt = tmp_path / "two" / "checkpoints" / "step_000004"
    assert json.loads((ckpt / "trainer_state.json").read_text())["num_processes"] == 2
    positions = [json.loads((ckpt / f"loader_rank{r}.json").read_text()) for r in (0, 1)]
    assert positions[0] != positions[1]  # two consumers, two positions in the shards
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5, (step, a[step], b[step])
