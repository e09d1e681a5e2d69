"""The ``cola-mm`` command line: a thin layer over the library packages.

    cola-mm data shapes --out datasets/shapes --count 20000 --split all
    cola-mm data digits --out datasets/digits
    cola-mm data text --source shakespeare --out datasets/text
    cola-mm data all --out datasets            # every bundled dataset + the tokenizer
    cola-mm tokenizer train --data datasets/text datasets/shapes --out datasets/tokenizer

Every subcommand has ``--help``. Bad input ends with one line ``cola-mm: error: …`` and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from cola_mm.core.components import CheckpointError
from cola_mm.core.config import ConfigError
from cola_mm.data import registry
from cola_mm.data.registry import non_negative_int as _non_negative_int, positive_int as _positive_int


def _number_in(low: float, high: float, low_open: bool, what: str, shown: str):
    """An argparse type: a number in [low, high] (or (low, high] when ``low_open``), with a
    one-line error naming ``what`` and the interval ``shown`` otherwise."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be in {shown}, got {text}")
        return value

    return parse


_temperature = _number_in(0, 2, False, "a temperature", "[0, 2]")
_top_p = _number_in(0, 1, True, "top-p", "(0, 1]")


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0, with a one-line error otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value
from cola_mm.data.shards import DataError
from cola_mm.prior.flow import SOLVERS
from cola_mm.training.loop import TrainingDiverged


BUNDLED_CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"  # the demo checkpoint of the clone


def ckpt_option(p: argparse.ArgumentParser, what: str = "pipeline folder") -> None:
    p.add_argument("--ckpt", default=str(BUNDLED_CKPT), help=f"{what} (default: the bundled demo checkpoint)")
    p.add_argument("--trust-pickle-files", action="store_true",
                   help="load a pipeline folder that also holds pickle files (*.bin, *.pt, *.pkl, *.ckpt); they are "
                        "never unpickled, but by default such a folder is refused")


def _prompt(value) -> str:
    """argparse reads ``--prompt=--`` as an empty list (it drops a ``--`` value): that prompt is "--"."""
    return value if isinstance(value, str) else "--"


def load_pipeline(args: argparse.Namespace):
    from cola_mm.pipeline import ColaPipeline

    return ColaPipeline.from_pretrained(args.ckpt, trust_pickle_files=getattr(args, "trust_pickle_files", False))


def solver_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", choices=tuple(SOLVERS), default=None,
                   help="ODE solver (default: the pipeline's, euler)")


def temperature_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=_temperature, default=None,
                   help="scale of the starting noise, 0–2 (< 1: closer to the most likely output; "
                        "default: the pipeline's)")


def rounding_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounding", action=argparse.BooleanOptionalAction, default=None,
                   help="re-encode each finished text block from its decoded tokens before later blocks read it "
                        "(default: the pipeline's text_rounding; docs/experiments.md measures it)")


# --------------------------------------------------------------------------- data


def cmd_data_all(args: argparse.Namespace) -> None:
    """Build every registered dataset and the tokenizer under one root; existing parts are kept."""
    root = Path(args.out)
    without = set(args.without or ())
    optional = {n for n, d in registry.datasets().items() if not d.in_all and d.build_missing is not None}
    if without - optional:
        raise DataError(f"--without: {', '.join(sorted(without - optional))} is not an optional dataset; "
                        f"optional: {', '.join(sorted(optional)) or 'none'}")
    for dataset in registry.datasets().values():  # required ones, and optional ones where they can be built
        if dataset.build_missing is not None and dataset.name not in without:
            dataset.build_missing(root / dataset.name, args)
    tok_dir = root / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        print(f"tokenizer: already trained in {tok_dir}")
    else:
        # text corpora first, then the captions of the image datasets
        found = sorted((d for d in registry.datasets().values() if d.in_all), key=lambda d: d.has_images)
        cmd_tokenizer_train(argparse.Namespace(data=[str(root / d.name) for d in found], vocab_size=args.vocab_size,
                                               out=str(tok_dir)))


def cmd_data_import(args: argparse.Namespace) -> None:
    from cola_mm.data import importer

    if args.source == "folder":
        rows = importer.folder_rows(args.images, args.captions)
        settings = {"source": "folder", "images": str(Path(args.images).resolve()),
                    "captions": str(Path(args.captions).resolve())}
    elif args.source == "coco":
        rows = importer.coco_rows(args.annotations, args.images)
        settings = {"source": "coco", "annotations": str(Path(args.annotations).resolve()),
                    "images": str(Path(args.images).resolve())}
    else:
        rows = importer.hf_rows(args.folder, args.image_column, args.caption_column)
        settings = {"source": "hf", "folder": str(Path(args.folder).resolve()), "image_column": args.image_column,
                    "caption_column": args.caption_column}
    entry = importer.import_rows(rows, None, args.out, args.split, settings, size=args.size,
                                 shard_size=args.shard_size, fmt=args.format, overwrite=args.overwrite,
                                 limit=args.limit, progress=not args.no_progress)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(entry["skipped"].items())) or "none"
    print(f"imported {entry['count']} samples of {entry['source_rows']} source rows into "
          f"{Path(args.out) / args.split} ({len(entry['shards'])} shards); skipped: {skipped}")


def cmd_data_encode(args: argparse.Namespace) -> None:
    from cola_mm.vae_image.latent_cache import encode_shards
    from cola_mm.vae_image.model import ImageVAE

    vae = ImageVAE.from_pretrained(args.vae)
    entry = encode_shards(vae, args.data, args.out, args.split, batch_size=args.batch_size,
                          shard_size=args.shard_size, overwrite=args.overwrite, vae_path=str(Path(args.vae).resolve()),
                          progress=not args.no_progress)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(entry["skipped"].items())) or "none"
    print(f"encoded {entry['count']} images into {Path(args.out) / args.split} ({len(entry['shards'])} shards, "
          f"VAE fingerprint {entry['vae_fingerprint']}); skipped: {skipped}")


def cmd_train(args: argparse.Namespace) -> None:
    from cola_mm.training.loop import train
    from cola_mm.training.config import load_train_config

    cfg = load_train_config(args.config, args.set)
    out = train(cfg, resume="auto" if args.resume_if_any else args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"trained: components in {out}")


DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}


# `cola-mm export`'s options that set a field of a pipeline's pipeline.json (argparse dest, field),
# and those of them an AR folder also takes (into its generation_config.json)
EXPORT_PIPELINE_FIELDS = (("text_cfg", "default_cfg_scale"), ("image_cfg", "default_image_cfg_scale"),
                          ("caption_cfg", "default_caption_cfg_scale"), ("steps", "default_steps"),
                          ("text_temperature", "text_temperature"), ("image_temperature", "image_temperature"),
                          ("caption_temperature", "caption_temperature"), ("text_lead_blocks", "text_lead_blocks"),
                          ("text_lead_temperature", "text_lead_temperature"), ("text_steps", "text_steps"),
                          ("time_shift", "time_shift"), ("solver", "solver"))
EXPORT_AR_OPTIONS = ("text_temperature",)


def cmd_export(args: argparse.Namespace) -> None:
    """Copy a pipeline folder, optionally storing its weights in half precision."""
    import dataclasses
    import shutil

    import torch

    from cola_mm.pipeline import ColaPipeline

    from cola_mm.core.families import detect_family

    src, dst = Path(args.src), Path(args.dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError(f"export: source and destination are the same folder ({src})")
    card = Path(args.card) if args.card else src / "README.md"
    if args.card and not card.is_file():
        raise FileNotFoundError(f"--card: no file {card}")
    if detect_family(src) == "ar":
        return _export_ar(args, src, dst, card)
    if args.text_top_p is not None:
        raise CheckpointError(f"export: --text-top-p applies to an AR model folder; {src} is a Cola-MM pipeline "
                              f"(its text sampler has no top-p)")
    pipe = ColaPipeline.from_pretrained(src)
    defaults = {field: getattr(args, dest) for dest, field in EXPORT_PIPELINE_FIELDS
                if getattr(args, dest) is not None}
    if defaults:  # the sampler settings chosen on val travel with the weights (pipeline.json)
        pipe.config = dataclasses.replace(pipe.config, **defaults)
    pipe.save_pretrained(dst, dtype=getattr(torch, DTYPES[args.dtype]))
    if card.is_file():
        shutil.copyfile(card, dst / "README.md")
    files = [f for f in dst.rglob("*") if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    print(f"exported {src} -> {dst} ({DTYPES[args.dtype]}): {len(files)} files, {total / 1e6:.1f} MB")


def _export_ar(args: argparse.Namespace, src: Path, dst: Path, card: Path) -> None:
    """``cola-mm export`` of an AR baseline folder: a copy whose ``ar/generation_config.json``
    holds the sampling defaults given (``--text-temperature``, ``--text-top-p``)."""
    import shutil

    from cola_mm.evaluation.ar import (check_stored_sampling, load_ar, sampling_defaults,
                                       write_sampling_defaults)

    pipeline_only = [f"--{dest.replace('_', '-')}" for dest, _ in EXPORT_PIPELINE_FIELDS
                     if dest not in EXPORT_AR_OPTIONS and getattr(args, dest) is not None]
    if args.dtype not in ("float32", "fp32"):
        pipeline_only.append("--dtype")
    if pipeline_only:
        raise CheckpointError(f"export: {src} is an AR model folder; {', '.join(pipeline_only)} apply to Cola-MM "
                              f"pipelines only (an AR folder takes --text-temperature and --text-top-p)")
    try:  # before loading: a refused setting writes nothing and prints no loading bar
        check_stored_sampling(args.text_temperature if args.text_temperature is not None else 1.0,
                              args.text_top_p if args.text_top_p is not None else 1.0)
    except ValueError as err:
        raise CheckpointError(f"export: {err}") from None
    lm, _ = load_ar(src)  # refuses a broken folder before anything is written
    temperature, top_p = sampling_defaults(lm)
    temperature = temperature if args.text_temperature is None else args.text_temperature
    top_p = top_p if args.text_top_p is None else args.text_top_p
    for name in ("ar", "tokenizer"):
        if (src / name).is_dir():
            if (dst / name).exists():
                shutil.rmtree(dst / name)
            shutil.copytree(src / name, dst / name)
    if card.is_file():
        shutil.copyfile(card, dst / "README.md")
    write_sampling_defaults(dst / "ar", temperature, top_p)
    print(f"exported {src} -> {dst} (AR, sampling temperature {temperature:g}, top-p {top_p:g})")


# the `generate text` options each baseline family takes (the rest are the Cola-MM pipeline's)
BASELINE_TEXT_OPTIONS = {"ar": ("--temperature", "--top-p", "--seed", "--max-new-tokens"),
                         "masked_diffusion": ("--steps", "--temperature", "--seed", "--max-new-tokens")}


def _refuse_options(ckpt, family: str, given: dict, takes: tuple[str, ...]) -> None:
    """A one-line error naming the options ``given`` (flag → value, None = not given) that a
    baseline folder of ``family`` does not take, and those it does."""
    from cola_mm.core.families import DESCRIPTIONS

    refused = [flag for flag, value in given.items() if value is not None and flag not in takes]
    if refused:
        raise CheckpointError(f"{ckpt} holds {DESCRIPTIONS[family]}: {', '.join(refused)} do not apply to it "
                              f"(it takes {', '.join(takes)})")


def _generate_text_baseline(args: argparse.Namespace, family: str) -> None:
    """``cola-mm generate text`` with a baseline folder, printed when done. An AR samples at its
    stored temperature and top-p unless --temperature / --top-p say otherwise (0 = greedy); a masked
    diffusion LM unmasks in --steps steps in all (default one per new token) at --temperature
    (default 1, 0 = greedy)."""
    _refuse_options(args.ckpt, family, {"--steps": args.steps, "--cfg-scale": args.cfg_scale,
                                        "--lead-blocks": args.lead_blocks, "--solver": args.solver,
                                        "--rounding/--no-rounding": args.rounding, "--top-p": args.top_p,
                                        "--min-new-tokens": args.min_new_tokens},
                    BASELINE_TEXT_OPTIONS[family])
    prompt = _prompt(args.prompt)
    if family == "ar":
        from cola_mm.evaluation.ar import ARGenerator

        text = ARGenerator.from_pretrained(args.ckpt).generate_text(
            prompt, max_new_tokens=args.max_new_tokens, seed=args.seed, temperature=args.temperature, top_p=args.top_p)
    else:
        from cola_mm.baselines.masked_diffusion import MaskedDiffusionGenerator

        gen = MaskedDiffusionGenerator.from_pretrained(
            args.ckpt, **({} if args.temperature is None else {"temperature": args.temperature}))
        text = gen.generate_text(prompt, max_new_tokens=args.max_new_tokens, steps=args.steps, seed=args.seed)
    print(prompt + text)


def cmd_generate_text(args: argparse.Namespace) -> None:
    from cola_mm.core.families import detect_family
    from cola_mm.pipeline import clean_text

    family = detect_family(args.ckpt) if args.ckpt else None
    if family in BASELINE_TEXT_OPTIONS:
        return _generate_text_baseline(args, family)
    if args.top_p is not None:
        raise CheckpointError("--top-p applies to an AR model folder; a Cola-MM pipeline's text sampler has none")
    pipe = load_pipeline(args)
    args.prompt = _prompt(args.prompt)
    stream = pipe.stream_text(args.prompt, max_new_tokens=args.max_new_tokens, steps=args.steps,
                              cfg_scale=args.cfg_scale, seed=args.seed, solver=args.solver, rounding=args.rounding,
                              temperature=args.temperature, lead_blocks=args.lead_blocks,
                              **({} if args.min_new_tokens is None else {"min_new_tokens": args.min_new_tokens}))
    print(clean_text(args.prompt, []), end="", flush=True)  # invalid UTF-8 in argv: shown as U+FFFD
    for deltas in stream:
        print(deltas[0], end="", flush=True)
    print()
    for notice in stream.notices:
        print(f"note: {notice}", file=sys.stderr)


def cmd_generate_image(args: argparse.Namespace) -> None:
    from cola_mm.core.images import make_grid

    pipe = load_pipeline(args)
    result = pipe.generate_image(_prompt(args.prompt), steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed, n=args.n,
                                 solver=args.solver, return_result=True, temperature=args.temperature)
    images = result.outputs
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (images[0] if len(images) == 1 else make_grid(images)).save(out)
    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    print(f"{len(images)} image(s) -> {out}")


def cmd_caption(args: argparse.Namespace) -> None:
    from cola_mm.core.families import detect_family

    if args.ckpt and detect_family(args.ckpt) == "ar_captioner":  # the captioning specialist (issue 19)
        from cola_mm.baselines.ar_captioner import ARCaptioner

        _refuse_options(args.ckpt, "ar_captioner", {"--steps": args.steps, "--cfg-scale": args.cfg_scale,
                                                    "--solver": args.solver, "--rounding/--no-rounding": args.rounding,
                                                    "--temperature": args.temperature}, ("--seed",))
        captions = ARCaptioner.from_pretrained(args.ckpt).caption(args.images, seed=args.seed)
    else:
        captions = load_pipeline(args).caption(args.images, steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed,
                                               solver=args.solver, rounding=args.rounding, temperature=args.temperature)
    for path, text in zip(args.images, captions):
        print(f"{path}\t{text}")


def _write_json(path: str | None, results: dict) -> None:
    import json

    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2) + "\n")


def cmd_eval_image_vae(args: argparse.Namespace) -> None:
    from cola_mm.evaluation.images import evaluate_image_vae, format_table
    from cola_mm.vae_image.model import ImageVAE

    vae = ImageVAE.from_pretrained(args.ckpt)
    results = evaluate_image_vae(vae, args.data, limit=args.limit)
    print(format_table(results))
    _write_json(args.json, results)


def _grid_png(examples: list, out: str, image_first: bool) -> None:
    """A labelled sample grid of (split, a, b, correct) examples."""
    from cola_mm.core.images import make_grid

    images, labels = [], []
    for _, a, b, ok in examples:
        img, text = (a, b) if image_first else (b, a)
        images.append(img.convert("RGB").resize((96, 96)))
        labels.append(("[ok] " if ok else "[x] ") + text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, cols=8, labels=labels).save(out)
    print(f"sample grid -> {out}")


def cmd_eval_text_to_image(args: argparse.Namespace) -> None:
    from cola_mm.evaluation.images import evaluate_text_to_image, format_table
    from cola_mm.evaluation.probe import Probe

    pipe = load_pipeline(args)
    if args.temperature is not None:
        pipe.config = dataclasses.replace(pipe.config, image_temperature=args.temperature)
    probe = Probe.from_pretrained(args.probe)
    results, examples = evaluate_text_to_image(pipe, probe, args.data, limit=args.limit, steps=args.steps,
                                               cfg_scale=args.cfg_scale, seed=args.seed, keep=8 if args.grid else 0)
    print(format_table(results))
    _write_json(args.json, results)
    if args.grid:
        _grid_png(examples, args.grid, image_first=False)


def cmd_eval_caption(args: argparse.Namespace) -> None:
    from cola_mm.evaluation.images import evaluate_captions, format_table

    pipe = load_pipeline(args)
    if args.temperature is not None:
        pipe.config = dataclasses.replace(pipe.config, caption_temperature=args.temperature)
    results, examples = evaluate_captions(pipe, args.data, limit=args.limit, steps=args.steps,
                                          cfg_scale=args.cfg_scale, seed=args.seed, keep=8 if args.grid else 0)
    print(format_table(results))
    _write_json(args.json, results)
    if args.grid:
        _grid_png(examples, args.grid, image_first=True)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


def _icon_judge_dir(given: str | None) -> str | None:
    """--icon-judge: a folder that must exist; by default runs/icon_judge when it does."""
    if given is not None:
        if not (Path(given) / "config.json").is_file():
            raise ValueError(f"--icon-judge {given}: no icon judge there (python -m cola_mm.evaluation.icon_judge "
                             f"train --out {given})")
        return given
    return DEFAULT_ICON_JUDGE if (Path(DEFAULT_ICON_JUDGE) / "config.json").is_file() else None


DEFAULT_ICON_JUDGE = "runs/icon_judge"


def cmd_eval_suite(args: argparse.Namespace) -> None:
    import json

    from cola_mm.evaluation import suite

    jobs = tuple(j for j in args.jobs.split(",") if j)
    unknown = sorted(set(jobs) - set(suite.JOBS))
    if unknown or not jobs:
        raise ValueError(f"--jobs: unknown {unknown or 'empty'}; choose from {', '.join(suite.JOBS)}")
    report = suite.run_suite(args.ckpt or [str(BUNDLED_CKPT)], data_root=args.data,
                             probe_dir=None if args.probe == "none" else args.probe, seeds=args.seeds,
                             limit=args.limit, steps=args.steps, ar_dir=args.ar, text_prompts=args.text_prompts,
                             speaker_prompts=args.speaker_prompts, text_cfg_scale=args.text_cfg,
                             jobs=jobs, progress=not args.no_progress, clip=args.clip,
                             clip_checkpoint=args.clip_checkpoint, split_set=args.splits,
                             icon_judge_dir=_icon_judge_dir(args.icon_judge),
                             datasets=[d for d in args.datasets.split(",") if d] if args.datasets else None,
                             reuse=args.reuse)
    report["command"] = suite.command_line()
    tag = "" if args.splits == "test" else f"_{args.splits}"
    json_path = Path(args.json_dir) / f"suite_{'_'.join(report['checkpoints'])}{tag}.json" if args.json_dir else None
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        examples = {n: e.pop("examples", None) for n, e in report["checkpoints"].items()}
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        for name, ex in examples.items():
            for job, items in (ex or {}).items():
                if items and args.grid_dir:
                    _grid_png(items, str(Path(args.grid_dir) / f"suite_{name}{tag}_{job}.png"),
                              image_first=job == "image_to_text")
        print(f"raw figures -> {json_path}")
    if args.md:
        suite.write_markdown(report, args.md, report["command"], json_path)
        print(f"tables -> {args.md}")
    print(suite.tables(report))


def cmd_probe_train(args: argparse.Namespace) -> None:
    from cola_mm.evaluation.probe import train_probe

    kwargs = {"steps": args.steps} if args.steps else {}
    out = train_probe(args.data, args.out, seed=args.seed, **kwargs)
    print(f"probe -> {out} (held-out accuracies in {Path(out) / 'report.json'})")


def _has_desktop() -> bool:
    """A graphical session to open a browser in (never a console browser in this terminal)."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_browser_when_up(url: str, timeout_s: float = 120.0) -> None:
    """Open ``url`` in the desktop's browser once the server answers its health check."""
    import threading
    import time
    import urllib.request
    import webbrowser

    def wait_then_open() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    webbrowser.open(url)
                    return
            except OSError:
                time.sleep(0.5)

    threading.Thread(target=wait_then_open, daemon=True, name="open-browser").start()


def cmd_app(args: argparse.Namespace) -> None:
    """``streamlit run apps/app.py -- --ckpt DIR`` in this process (its PID is the server's:
    ``kill PID`` stops it), with the pipeline loading in the background while the server starts."""
    import cola_mm.apps as apps
    from cola_mm.apps import preload
    from cola_mm.core.images import MAX_INPUT_BYTES

    ckpt = Path(args.ckpt)
    if not (ckpt / "pipeline.json").is_file():
        how = ("rebuild the bundled demo checkpoint with `make demo-checkpoint` (about 2 hours on 2 CPU cores; "
               "see docs/experiments.md)" if ckpt.resolve() == BUNDLED_CKPT else "pass --ckpt DIR, a pipeline folder such as "
               "runs/demo/model or checkpoints/demo")
        raise CheckpointError(f"no pipeline at {ckpt} (no pipeline.json): {how}")
    preload.start(ckpt)
    from streamlit.web import cli as st_cli

    script = Path(apps.__file__).resolve().parent / "app.py"
    url = f"http://{args.address}:{args.port}"
    # Always headless to Streamlit: its non-headless mode asks for an e-mail address on the first
    # run, which waits for Enter in a terminal and exits 255 without one (a service, nohup, CI).
    # The browser is opened here instead, where there is a desktop to open it on.
    if not args.headless and _has_desktop():
        _open_browser_when_up(url)
    flags = ["--server.port", str(args.port), "--server.address", args.address, "--server.headless", "true",
             "--server.maxUploadSize", str(MAX_INPUT_BYTES // 2**20), "--browser.gatherUsageStats", "false",
             "--client.toolbarMode", "minimal"]
    print(f"Cola-MM app on {url} (Ctrl+C stops it)", flush=True)
    st_cli.main(args=["run", str(script), *flags, "--", "--ckpt", str(ckpt.resolve())], prog_name="streamlit")


def cmd_serve(args: argparse.Namespace) -> None:
    from cola_mm.serve import serve

    ckpt = Path(args.ckpt)
    if not (ckpt / "pipeline.json").is_file():
        raise CheckpointError(f"no pipeline at {ckpt} (no pipeline.json): pass --ckpt DIR, a pipeline folder")
    for folder in args.allow_files:
        if not Path(folder).is_dir():
            raise NotADirectoryError(f"--allow-files: no folder {folder}")
    serve(ckpt, args.host, args.port, args.api_key or os.environ.get("COLA_MM_API_KEY") or None,
          args.max_batch, args.max_wait_ms, args.allow_files, args.trust_pickle_files)


def cmd_eval_text_vae(args: argparse.Namespace) -> None:
    import json

    from cola_mm.evaluation.text_vae import evaluate_text_vae, format_report

    results = evaluate_text_vae(args.ckpt, args.data, tokenizer=args.tokenizer, seq_len=args.seq_len,
                                batch_size=args.batch_size, max_batches=args.max_batches, seed=args.seed)
    print(format_report(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from cola_mm.vae_text.tokenizer import train_tokenizer_from_shards

    tok = train_tokenizer_from_shards(args.data, vocab_size=args.vocab_size, out=args.out)
    print(f"tokenizer: {len(tok)} tokens -> {args.out}")


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and a pointer to --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cola-mm",
        description="Cola-MM: text and images through one block-causal latent diffusion prior.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # ---- data
    data = sub.add_parser("data", help="build the bundled datasets as WebDataset shards",
                          description="Build datasets as WebDataset shards (NNNNNN.tar with "
                                      "{key}.txt/.png/.json) plus DIR/manifest.json.")
    dsub = data.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    def common(p: argparse.ArgumentParser, out_help: str) -> None:
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--shard-size", type=_positive_int, default=1000,
                       help="samples per shard (default 1000)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace shards that already exist (refused otherwise)")

    for dataset in registry.datasets().values():  # one subcommand per registered dataset (cola_mm.data.registry)
        p = dsub.add_parser(dataset.name, help=dataset.help, description=dataset.description)
        common(p, "dataset root; shards go to OUT/<split>/")
        dataset.add_arguments(p)
        p.set_defaults(func=dataset.build)

    imp = dsub.add_parser("import", help="real image-caption data (a folder, COCO, a datasets folder) as shards",
                          description="Write img2dataset-format shards (jpg + txt + json) from your own "
                                      "image-caption data: each image RGB, resized and centre-cropped to "
                                      "--size; unreadable images and empty captions skipped and counted; "
                                      "rerunning the same command continues after the last finished shard.")
    isub = imp.add_subparsers(dest="source", metavar="SOURCE", required=True)
    srcs = [isub.add_parser("folder", help="a folder of images + a captions .jsonl or .csv",
                            description="Rows name the image (file|image|path|file_name) and its caption "
                                        "(caption|text|txt); other columns go into the json."),
            isub.add_parser("coco", help="a COCO-style captions json + its image folder"),
            isub.add_parser("hf", help="a Hugging Face datasets folder (save_to_disk)")]
    srcs[0].add_argument("images", help="image folder")
    srcs[0].add_argument("--captions", required=True, help="captions file (.jsonl or .csv)")
    srcs[1].add_argument("annotations", help="captions json (e.g. captions_train2017.json)")
    srcs[1].add_argument("--images", required=True, help="image folder (e.g. train2017/)")
    srcs[2].add_argument("folder", help="a folder written by datasets' save_to_disk (one split)")
    srcs[2].add_argument("--image-column", default=None, help="default: image / img / file …")
    srcs[2].add_argument("--caption-column", default=None, help="default: caption / text / txt …")
    for p in srcs:
        p.add_argument("--out", required=True, help="dataset root; shards go to OUT/SPLIT/")
        p.add_argument("--split", default="train", help="split folder (default train)")
        p.add_argument("--size", type=_positive_int, default=64, help="image side after the centre crop (default 64)")
        p.add_argument("--format", choices=("jpg", "png", "webp"), default="jpg", help="image encoding (default jpg)")
        p.add_argument("--shard-size", type=_positive_int, default=1000, help="samples per shard (default 1000)")
        p.add_argument("--limit", type=_positive_int, default=None, help="read at most this many source rows")
        p.add_argument("--overwrite", action="store_true", help="replace an import already in OUT/SPLIT")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=cmd_data_import)

    p = dsub.add_parser("encode", help="image-caption shards -> latent shards (train without the VAE encoder)",
                        description="Encode every image of --data with the image VAE once and write its posterior "
                                    "(mean, logvar) with the caption into OUT/SPLIT; use OUT/SPLIT as a data.pairs "
                                    "source. The run refuses a cache made by another VAE (fingerprint).")
    p.add_argument("--vae", required=True, help="image VAE folder (a vae-image model or a pipeline folder)")
    p.add_argument("--data", required=True, help="image-caption shards (a directory, pattern or URL)")
    p.add_argument("--out", required=True, help="cache root; shards go to OUT/SPLIT/")
    p.add_argument("--split", default="train", help="split folder (default train)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per encoder call (default 64)")
    p.add_argument("--shard-size", type=_positive_int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--overwrite", action="store_true", help="replace shards that already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_encode)

    p = dsub.add_parser("all", help="every bundled dataset and the tokenizer under one root",
                        description="Build OUT/<dataset> for every registered dataset (" +
                                    ", ".join(n for n, d in registry.datasets().items() if d.in_all)
                                    + "; optional, where it can be built: "
                                    + ", ".join(n for n, d in registry.datasets().items()
                                                if not d.in_all and d.build_missing is not None)
                                    + ") and train OUT/tokenizer on the required ones; parts that already exist "
                                      "are kept.")
    p.add_argument("--out", default="datasets", help="root folder (default ./datasets)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--shard-size", type=_positive_int, default=1000, help="samples per shard")
    p.add_argument("--size", type=_positive_int, default=64, help="image side (default 64)")
    p.add_argument("--vocab-size", type=_positive_int, default=8192, help="tokenizer vocabulary")
    p.add_argument("--without", nargs="+", metavar="NAME", default=None,
                   help="leave out these optional datasets (e.g. --without icons)")
    for dataset in registry.datasets().values():
        if dataset.build_missing is not None:
            dataset.add_all_arguments(p)
    p.set_defaults(func=cmd_data_all)

    # ---- train
    p = sub.add_parser("train", help="train a stage (vae-text, …) from a YAML config",
                       description="One training loop for every stage: accelerate (+ DeepSpeed "
                                   "ZeRO via the config's `deepspeed:` key), checkpoints every "
                                   "ckpt_every steps in run_dir/checkpoints, exact --resume. "
                                   "Multi-process: ACCELERATE_USE_CPU=1 accelerate launch "
                                   "--multi_gpu --num_processes 2 -m cola_mm.cli train ...")
    p.add_argument("--config", required=True, help="YAML run config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest complete checkpoint. The run folder must be trusted: resuming "
                        "unpickles accelerate's optimizer, scheduler and RNG state (exported pipelines never do)")
    p.add_argument("--resume-if-any", action="store_true",
                   help="continue from the latest complete checkpoint if there is one, else start fresh "
                        "(a finished run just exports again); the run folder must be trusted, as for --resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    # ---- export
    p = sub.add_parser("export", help="copy a pipeline folder, e.g. with fp16 weights",
                       description="Copy a trained pipeline folder (text_vae/, dit/, image_vae/, tokenizer/, "
                                   "pipeline.json, README.md) to DST, storing the weights in --dtype. "
                                   "Loading always casts back to float32. The sampler options set the defaults "
                                   "the copy generates with. An AR baseline folder (ar/, tokenizer/) is copied too, "
                                   "with --text-temperature (its softmax temperature) and --text-top-p as defaults "
                                   "in ar/generation_config.json.")
    p.add_argument("src", help="pipeline folder, e.g. runs/demo/model")
    p.add_argument("dst", help="destination folder (replaced component by component)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="storage precision (default float32)")
    p.add_argument("--text-cfg", type=_positive_float, default=None,
                   help="set the text guidance default in pipeline.json (default: keep SRC's)")
    p.add_argument("--image-cfg", type=_positive_float, default=None, help="set the text → image guidance default")
    p.add_argument("--caption-cfg", type=_positive_float, default=None, help="set the captioning guidance default")
    p.add_argument("--steps", type=_positive_int, default=None, help="set the default ODE steps per block")
    p.add_argument("--time-shift", type=_positive_float, default=None,
                   help="set the sampler's time shift, every job (> 1 spends more of the steps at high noise)")
    solver_option(p)
    p.add_argument("--text-steps", type=_non_negative_int, default=None,
                   help="set the ODE steps per text-continuation block (0 = the --steps default, which "
                        "images and captions use)")
    for job in ("text", "image", "caption"):
        p.add_argument(f"--{job}-temperature", type=_temperature, default=None,
                       help=f"set the {job} job's default noise temperature (0–2; 1 = the training noise)")
    p.add_argument("--text-lead-blocks", type=_non_negative_int, default=None,
                   help="text: the first N generated blocks start from --text-lead-temperature noise (0 = off)")
    p.add_argument("--text-lead-temperature", type=_temperature, default=None,
                   help="text: the noise temperature of those first blocks (0–2)")
    p.add_argument("--text-top-p", type=_top_p, default=None,
                   help="an AR folder only: its default nucleus (top-p) cutoff, in (0, 1] (1 = none)")
    p.add_argument("--card", default=None, help="model card to ship as README.md (default: SRC's)")
    p.set_defaults(func=cmd_export)

    # ---- generate
    gen = sub.add_parser("generate", help="generate with a trained pipeline",
                         description="Generation jobs of a pipeline folder (pipeline.json, text_vae/, dit/, tokenizer/).")
    gsub = gen.add_subparsers(dest="job", metavar="JOB", required=True)
    p = gsub.add_parser("text", help="continue a text prompt",
                        description="Continue a prompt block by block (16 latents per block); the "
                                    "text is printed as each block is decoded. --ckpt may also be an AR "
                                    "baseline folder (stage: ar): then --temperature is its softmax "
                                    "temperature (0 = greedy) and --top-p its nucleus cutoff; or a masked "
                                    "diffusion folder (stage: masked-diffusion): then --steps is its number "
                                    "of unmasking steps in all (default: one per new token) and "
                                    "--temperature its softmax temperature (default 1, 0 = greedy).")
    ckpt_option(p, "pipeline folder, e.g. runs/prior_small/model, or an AR or masked diffusion baseline's "
                   "model folder")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=_positive_int, default=64, help="limit on new tokens (default 64)")
    p.add_argument("--min-new-tokens", type=_non_negative_int, default=None,
                   help="no <eos> before this many new tokens (default 1: the continuation is never empty; "
                        "0: the model may end the text at once)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="ODE steps per block (default: the pipeline's text_steps, else its default_steps); "
                        "a masked diffusion folder: "
                        "unmasking steps in all")
    p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    temperature_option(p)
    p.add_argument("--lead-blocks", type=_non_negative_int, default=None,
                   help="the first N generated blocks start from the pipeline's text_lead_temperature noise "
                        "(default: the pipeline's text_lead_blocks; 0: every block at --temperature)")
    solver_option(p)
    rounding_option(p)
    p.add_argument("--top-p", type=_top_p, default=None,
                   help="an AR baseline folder only: nucleus cutoff in (0, 1] (default: the folder's, 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_generate_text)

    def sampling(p: argparse.ArgumentParser) -> None:
        p.add_argument("--steps", type=_positive_int, default=None, help="ODE steps per block (default: the pipeline's, 16)")
        p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale (1 = off)")
        temperature_option(p)
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = gsub.add_parser("image", help="generate images from a text prompt",
                        description="Text → image: the prompt is encoded as a caption segment, the prior "
                                    "generates one image block, the image VAE decodes it. --n > 1 writes a grid.")
    ckpt_option(p, "pipeline folder with an image_vae/, e.g. runs/mm_small/model")
    p.add_argument("--prompt", required=True, help="what to draw, e.g. 'a large red circle in the center'")
    p.add_argument("--out", default="out.png", help="PNG to write (default out.png)")
    p.add_argument("--n", type=_positive_int, default=1, help="images (seeds seed..seed+n-1); >1 → a grid")
    solver_option(p)
    sampling(p)
    p.set_defaults(func=cmd_generate_image)

    p = sub.add_parser("caption", help="caption images with a trained pipeline",
                       description="Image → text: each image (any format, mode or size Pillow reads) is "
                                   "encoded by the image VAE and the prior writes its caption block by block.")
    ckpt_option(p, "pipeline folder with an image_vae/, or an AR captioner's model folder (stage: "
                   "ar-captioner; it samples at temperature 1 and takes --seed only)")
    p.add_argument("images", nargs="+", help="image files")
    solver_option(p)
    rounding_option(p)
    sampling(p)
    p.set_defaults(func=cmd_caption)

    # ---- app
    p = sub.add_parser("app", help="start the Streamlit app",
                       description="The three jobs in a browser: text → image, image → text, text continuation "
                                   "(a thin wrapper over `streamlit run apps/app.py`).")
    ckpt_option(p)
    p.add_argument("--port", type=_positive_int, default=8501, help="port (default 8501)")
    p.add_argument("--address", default="localhost", help="address to listen on (default localhost; 0.0.0.0 = all)")
    p.add_argument("--headless", action="store_true",
                   help="do not open a browser (none is opened without a desktop session anyway); the app never "
                        "asks a question on start, with or without a terminal")
    p.set_defaults(func=cmd_app)

    # ---- serve
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP API for the three jobs",
                       description="POST /v1/completions, /v1/chat/completions (text, or an image_url part to "
                                   "caption), /v1/images/generations; GET /v1/models, /health. Streaming "
                                   "(server-sent events) and request batching; see docs/serve.md.")
    ckpt_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only; "
                                                       "0.0.0.0 = every interface)")
    p.add_argument("--port", type=_positive_int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/* "
                                                   "(default: $COLA_MM_API_KEY, else no key)")
    p.add_argument("--max-batch", type=_positive_int, default=8,
                   help="most samples gathered into one sampler call (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=20.0,
                   help="how long a request waits for others to batch with (default 20 ms)")
    p.add_argument("--allow-files", action="append", default=[], metavar="DIR",
                   help="a folder whose images may be named by local path in image_url parts (repeatable; "
                        "default none: images come as base64 data URLs)")
    p.set_defaults(func=cmd_serve)

    # ---- probe
    pr = sub.add_parser("probe", help="the probe classifier that judges generated images",
                        description="A timm classifier trained here on real renders (shapes, digits).")
    prsub = pr.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = prsub.add_parser("train", help="train the probe on real renders",
                         description="Train the judge (object count and, per grid cell, shape, colour and size) on "
                                     "fresh 0-3-object renders (every colour-shape pair) and the digits train "
                                     "split; writes OUT/report.json with its held-out accuracies.")
    p.add_argument("--data", default="datasets", help="dataset root with shapes/ and digits/ (default datasets)")
    p.add_argument("--out", default="runs/probe", help="output folder (default runs/probe)")
    p.add_argument("--steps", type=_positive_int, default=None, help="training steps (default: train_probe's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_probe_train)

    # ---- eval
    ev = sub.add_parser("eval", help="measure a trained component",
                        description="Evaluation reports (figures quoted in the README and docs/ come from these).")
    esub = ev.add_subparsers(dest="target", metavar="TARGET", required=True)
    p = esub.add_parser("text-vae", help="Text VAE reconstruction on held-out shards",
                        description="Token reconstruction accuracy from the posterior mean and from a "
                                    "sampled z, KL per token and active latent dims, over one pass of "
                                    "held-out text shards.")
    p.add_argument("--ckpt", required=True, help="model folder (with text_vae/ and tokenizer/) or a text_vae folder")
    p.add_argument("--data", required=True, help="held-out shards, e.g. datasets/text/val")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the checkpoint's)")
    p.add_argument("--seq-len", type=_positive_int, default=128, help="tokens per window (default 128)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="windows per batch (default 16)")
    p.add_argument("--max-batches", type=_positive_int, default=None, help="stop after this many batches")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled z (default 0)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=cmd_eval_text_vae)

    p = esub.add_parser("image-vae", help="image VAE PSNR on held-out images",
                        description="PSNR (dB) of posterior-mean reconstructions of held-out images.")
    p.add_argument("--ckpt", required=True, help="pipeline/model folder with image_vae/, or an image_vae folder")
    p.add_argument("--data", required=True, help="held-out image shards, e.g. datasets/shapes/test")
    p.add_argument("--limit", type=_positive_int, default=500, help="images (default 500)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=cmd_eval_image_vae)

    p = esub.add_parser("suite", help="every job of every checkpoint on every held-out split, over seeds",
                        description="The evaluation suite: text → image (judged; CLIPScore with --clip), image → "
                                    "text (strict grader), text continuation metrics and context use, per held-out "
                                    "split, mean ± std over --seeds; writes the Markdown tables (--md), the raw JSON "
                                    "and PNG grids.")
    p.add_argument("--ckpt", action="append", default=[],
                   help="model folder (repeatable; default: the bundled demo checkpoint): a Cola-MM pipeline, or an "
                        "AR / masked diffusion baseline (stage ar / masked-diffusion; text rows only)")
    p.add_argument("--data", default="datasets", help="dataset root (default datasets)")
    p.add_argument("--probe", default="runs/probe", help="judge folder for text → image ('none': skip; default runs/probe)")
    p.add_argument("--icon-judge", default=None,
                   help="icon judge folder for the icons text → image rows (python -m cola_mm.evaluation.icon_judge "
                        "train); default runs/icon_judge when it exists. Icons splits are evaluated only where "
                        "built (DATA/icons, cola-mm data icons)")
    p.add_argument("--ar", default=None, help="reference AR folder for generative perplexity (cola-mm train stage ar)")
    p.add_argument("--clip", default=None,
                   help="also score text → image by CLIPScore (w = 2.5) with this CLIP: a SmallClip folder "
                        "(python -m cola_mm.evaluation.clip train; its report.json accuracy is printed beside the "
                        "table), or with --clip-checkpoint an open_clip arch (e.g. ViT-B-32); default: none")
    p.add_argument("--clip-checkpoint", default=None,
                   help="a local open_clip checkpoint file of the arch --clip names (nothing is downloaded)")
    p.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--limit", type=_positive_int, default=200, help="samples per split (default 200)")
    p.add_argument("--steps", type=_positive_int, default=None, help="ODE steps per block (default: the pipeline's)")
    p.add_argument("--text-prompts", type=_positive_int, default=32, help="held-out text prompts (default 32)")
    p.add_argument("--text-cfg", type=_positive_float, default=None,
                   help="text guidance of the Cola-MM checkpoints' continuations (default: each pipeline's)")
    p.add_argument("--speaker-prompts", type=int, default=16,
                   help="held-out prompts ending on a character's speaker line, for the speaker figures "
                        "(default 16; 0: none)")
    p.add_argument("--jobs", default="images,text,context", help="which jobs (default images,text,context)")
    p.add_argument("--splits", choices=("test", "val"), default="test",
                   help="test: the held-out splits, for reported figures (default); val: each image dataset's "
                        "val split, for choosing models and settings (files get a _val suffix)")
    p.add_argument("--datasets", default=None,
                   help="image rows of these image datasets only, comma-separated (e.g. icons; default: every "
                        "one built under --data)")
    p.add_argument("--reuse", action="append", default=[], metavar="SUITE_JSON",
                   help="also list the checkpoints of this earlier suite JSON that this run does not measure, "
                        "with their recorded figures (repeatable; e.g. a baseline whose folder is gone). Its "
                        "settings must equal this run's (splits, data, seeds, limit, steps, text guidance, --ar, "
                        "and --probe when images are scored), or the run stops before writing anything")
    p.add_argument("--md", default=None, help="write the tables here (e.g. docs/results.md)")
    p.add_argument("--json-dir", default="bench/results", help="raw JSON folder (default bench/results)")
    p.add_argument("--grid-dir", default="bench/results", help="PNG grids folder (default bench/results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval_suite)

    for name, func, what in (("text-to-image", cmd_eval_text_to_image,
                              "generated images judged by the probe classifier against the prompt's attributes"),
                             ("caption", cmd_eval_caption,
                              "captions of held-out images parsed against the json ground truth")):
        p = esub.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}; shapes test, shapes "
                                                          f"novel (unseen colour-shape pairs) and digits test apart.")
        p.add_argument("--ckpt", required=True, help="pipeline folder with an image_vae/")
        p.add_argument("--data", default="datasets", help="dataset root with shapes/ and digits/ (default datasets)")
        if name == "text-to-image":
            p.add_argument("--probe", default="runs/probe", help="probe folder (cola-mm probe train; default runs/probe)")
        p.add_argument("--limit", type=_positive_int, default=200, help="samples per split (default 200)")
        p.add_argument("--grid", default=None, help="also write a labelled sample grid PNG here")
        p.add_argument("--json", default=None, help="also write the results to this JSON file")
        sampling(p)
        p.set_defaults(func=func)

    # ---- tokenizer
    tok = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer",
                         description="Tokenizer tools.")
    tsub = tok.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = tsub.add_parser("train", help="train byte-level BPE on the txt of shards",
                        description="Train a byte-level BPE (specials <pad> <bos> <eos> <mask> "
                                    "<unk>) on every txt field of the given shards; saved so "
                                    "transformers.AutoTokenizer.from_pretrained(OUT) loads it.")
    p.add_argument("--data", nargs="+", required=True,
                   help="dataset roots, shard folders or shard patterns")
    p.add_argument("--vocab-size", type=_positive_int, default=8192, help="vocabulary size (default 8192)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_tokenizer_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (DataError, ConfigError, CheckpointError, TrainingDiverged, FileNotFoundError, ValueError,
            NotADirectoryError, PermissionError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"cola-mm: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cola-mm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
