"""One evaluation suite: every job of every checkpoint on every held-out split, over seeds.

    cola-mm eval suite --ckpt checkpoints/demo [--ckpt runs/x/model …] [--limit 200] [--seeds 0,1,2]
                       [--data datasets] [--probe runs/probe] [--ar runs/ar_reference/model]
                       [--clip runs/clip | --clip ViT-B-32 --clip-checkpoint FILE]
                       [--md docs/results.md] [--json-dir bench/results] [--grid-dir bench/results]

For each checkpoint and seed it runs

- **text → image** on each dataset's ``image_splits`` (:mod:`cola_mm.data.registry`), judged by
  the probe (:mod:`cola_mm.evaluation.probe`) through the dataset's ``judge_image``; with
  ``--clip``, also the CLIPScore (Hessel et al. 2021, w = 2.5, in [0, 2.5]) of the generated
  images against their prompts, per split and object size, by that CLIP
  (:mod:`cola_mm.evaluation.clip`: a :class:`~cola_mm.evaluation.clip.SmallClip` folder, or a
  user's open_clip arch + a local checkpoint file);
- **image → text** on each dataset's ``caption_splits``, graded by the dataset's strict
  ``grade_caption``;
- **text** continuation of held-out prompts (the first tokens of windows of the held-out plays,
  ``data/text/val``): the rate of generated words found in the training corpus, unigram
  entropy, repeated 4-grams, a MAUVE-style score against the true continuations (when the
  sentence encoder is installed), generative perplexity under a reference AR (``--ar``), and
  the similarity of continuations of different prompts at one seed (a prior that ignores its
  prompt scores high); and, on prompts that end on the speaker line of a held-out play's own
  character, whether the continuation answers with speech and names that play's characters
  (:mod:`cola_mm.evaluation.speakers`; ``speaker_prompts``, 16 by default);
- **context use**: the teacher-forced flow loss of held-out text blocks with a foreign context
  minus with their true one, and the same for caption blocks with a foreign image
  (:mod:`cola_mm.evaluation.context`); for two-object ``shapes/val`` images, the binding ratios
  (:mod:`cola_mm.evaluation.binding`: the loss from exchanging the objects' colours, shapes or
  phrases over the loss from replacing them; near 0, the prior reads a bag of attributes).

A ``--ckpt`` may also be a baseline's folder, an AR (stage ``ar``) or a masked diffusion LM
(stage ``masked-diffusion``; :mod:`cola_mm.core.families`): it gets the text rows, scored
exactly like the prior's, and its image and context rows are "not available", so one run scores
every family.

Each figure is reported as mean ± std over the seeds. The judge's own accuracy (its
``report.json``) is printed beside every text → image table, and so is the CLIP's (its
held-out retrieval accuracy and the CLIPScore of matching vs shuffled real pairs, from the
``report.json`` that :func:`~cola_mm.evaluation.clip.train_clip` writes beside it, else measured
by the run on the text → image splits). Without ``--clip`` there is no CLIP column; a bad
``--clip`` is a one-line error. A checkpoint without an image VAE gets its image rows marked
"not available"; a missing split is a one-line error naming it; bad samples are skipped and
counted (``*_skipped``). :func:`write_markdown` writes the tables, the command, the date and
the machine; the JSON holds every per-seed figure (and ``clip``: the CLIP and its own figures,
null without ``--clip``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from cola_mm.data import registry

PathLike = str | os.PathLike
NOT_AVAILABLE = "not available"
JOBS = ("images", "text", "context")
SPLIT_SETS = ("test", "val")  # the held-out splits reported, or the val splits models are chosen on


def eval_splits(split_set: str, job: str, root: PathLike | None = None,
                datasets: Sequence[str] | None = None) -> tuple[str, ...]:
    """The image splits of ``job`` (``text_to_image`` or ``image_to_text``) for a split set: ``test``,
    each dataset's held-out evaluation splits (touched only for reported figures); ``val``, each
    image dataset's ``val`` split (for choosing models and settings). Text has one held-out split,
    the val plays, which both sets read. Given the dataset ``root``, an optional dataset (icons)
    counts only where it was built (:func:`cola_mm.data.registry.evaluated`). ``datasets``: only
    these image datasets' splits (None: every one)."""
    if split_set not in SPLIT_SETS:
        raise ValueError(f"split set must be one of {', '.join(SPLIT_SETS)}, got {split_set!r}")
    image_datasets = [d.name for d in registry.datasets().values() if d.has_images]
    unknown = sorted(set(datasets or ()) - set(image_datasets))
    if unknown or (datasets is not None and not datasets):
        raise ValueError(f"image datasets: unknown {unknown or 'none given'}; choose from {', '.join(image_datasets)}")
    if split_set == "test":
        splits = registry.image_eval_splits(job, root)
    else:
        splits = tuple(f"{d.name}/val" for d in registry.datasets().values()
                       if d.has_images and getattr(d, registry.JOB_SPLITS[job]) and registry.evaluated(d, root))
    return splits if datasets is None else tuple(s for s in splits if s.split("/")[0] in datasets)


# --------------------------------------------------------------------------- aggregation


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), NaNs left out."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def aggregate(per_seed: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{figure: {"mean", "std", "n"}} over the seeds' flat result dicts."""
    keys: list[str] = []
    for r in per_seed:
        keys += [k for k in r if k not in keys and isinstance(r[k], (int, float))]
    out = {}
    for k in keys:
        m, sd = mean_std([float(r[k]) for r in per_seed if k in r])
        out[k] = {"mean": m, "std": sd, "n": sum(k in r for r in per_seed)}
    return out


# --------------------------------------------------------------------------- the jobs


def _has_images(pipe) -> bool:
    return getattr(pipe, "image_vae", None) is not None  # False for the text-only baselines


def image_jobs(pipe, probe, data_root: PathLike, seeds: Sequence[int], limit: int | None,
               steps: int | None, progress: bool, grid_examples: int = 0, clip=None,
               split_set: str = "test", datasets: Sequence[str] | None = None) -> dict[str, Any]:
    """Text → image and image → text per seed (flat dicts) and a few examples for the grids;
    ``clip`` (a :class:`~cola_mm.evaluation.clip.ClipEncoder` or None) adds ``*_clip_score``
    figures to text → image; ``split_set`` and ``datasets`` are :func:`eval_splits`'."""
    from cola_mm.evaluation.images import evaluate_captions, evaluate_text_to_image

    if not _has_images(pipe):
        return {"text_to_image": NOT_AVAILABLE, "image_to_text": NOT_AVAILABLE}
    judges = {k: v for k, v in (probe if isinstance(probe, dict) else {"probe": probe}).items() if v is not None}
    t2i_splits = eval_splits(split_set, "text_to_image", data_root, datasets)
    judged = tuple(s for s in t2i_splits if registry.of_split(s).judge in judges)
    out: dict[str, Any] = {"text_to_image": {"per_seed": []}, "image_to_text": {"per_seed": []},
                           "examples": {"text_to_image": [], "image_to_text": []},
                           "text_to_image_unjudged": [s for s in t2i_splits if s not in judged]}
    draws = hasattr(pipe, "generate_image")  # a captioning specialist has no text → image rows
    if not draws:
        judged, out["text_to_image_unjudged"] = (), []
    for i, seed in enumerate(seeds):
        keep = grid_examples if i == 0 else 0
        if judged:
            t2i, ex = evaluate_text_to_image(pipe, judges, data_root, limit=limit, steps=steps, seed=seed,
                                             progress=progress, keep=keep, clip=clip, splits=judged)
            out["text_to_image"]["per_seed"].append(t2i)
            out["examples"]["text_to_image"] += ex
        i2t, ex = evaluate_captions(pipe, data_root, limit=limit, steps=steps, seed=seed, progress=progress, keep=keep,
                                    splits=eval_splits(split_set, "image_to_text", data_root, datasets))
        out["image_to_text"]["per_seed"].append(i2t)
        out["examples"]["image_to_text"] += ex
    if not draws:
        out["text_to_image"] = NOT_AVAILABLE
    elif not judged:
        out["text_to_image"] = "no judge (--probe)"
    for job in ("text_to_image", "image_to_text"):
        if isinstance(out[job], dict):
            out[job]["summary"] = aggregate(out[job]["per_seed"])
    return out


TEXT_BATCH = 16  # prompts per sampler call for a Cola-MM pipeline (its batch equals one-by-one)


def continue_prompts(pipe, prompts: Sequence[str], max_new_tokens: int, steps: int | None,
                     cfg_scale: float | None, seed: int, progress: bool, desc: str) -> list[str]:
    """Every prompt continued at ``seed`` (each from the same starting noise, as one call per
    prompt would): a Cola-MM pipeline in batches of :data:`TEXT_BATCH` (its sampler's batch gives
    the one-by-one results), a baseline one prompt at a time."""
    from tqdm import tqdm

    if getattr(pipe, "family", None) != "cola_mm":
        return [pipe.generate_text(p, max_new_tokens=max_new_tokens, steps=steps, cfg_scale=cfg_scale, seed=seed)
                for p in tqdm(prompts, desc=desc, disable=not progress, leave=False)]
    out: list[str] = []
    for i in tqdm(range(0, len(prompts), TEXT_BATCH), desc=desc, disable=not progress, leave=False):
        chunk = list(prompts[i:i + TEXT_BATCH])
        out += pipe.generate_text(chunk, max_new_tokens=max_new_tokens, steps=steps, cfg_scale=cfg_scale,
                                  seeds=[seed] * len(chunk))
    return out


def continuation_figures(texts: Sequence[str], prompts: Sequence[str], vocabulary: frozenset[str], tokenizer,
                         ar=None, encoder=None, references: Sequence[str] | None = None,
                         ngram=None) -> tuple[list[str], dict]:
    """The continuations of one seed without their prompts, and the suite's text figures of them
    (:mod:`cola_mm.evaluation.text_metrics`); ``ar`` (model, tokenizer) adds gen-PPL, ``encoder``
    and ``references`` MAUVE, ``ngram`` (a :class:`~cola_mm.evaluation.ngram.KneserNeyLM` over
    ``tokenizer``'s ids) the n-gram judge's perplexity."""
    from cola_mm.evaluation import text_metrics as tm

    texts = [t[len(p):] if t.startswith(p) else t for p, t in zip(prompts, texts)]
    r = {"corpus_word_rate": tm.corpus_word_rate(texts, vocabulary),
         "unigram_entropy_bits": tm.unigram_entropy(texts, tokenizer),
         "repeated_4gram_rate": tm.repeated_ngrams(texts, 4)}
    overlap = tm.continuation_overlap(texts)
    r["same_seed_difflib"] = overlap["difflib_ratio"]
    r["same_seed_3gram"] = overlap["shared_3gram_rate"]
    if encoder is not None:
        r["mauve"] = tm.mauve_score(texts, references, encoder)
    if ar is not None:
        model, tok = ar
        r["gen_ppl"] = tm.generative_perplexity(texts, model, tok, prompts=prompts)
    if ngram is not None:
        from cola_mm.evaluation.ngram import ngram_perplexity

        r["ngram_ppl"] = ngram_perplexity(texts, ngram, tokenizer, prompts=prompts)
    return texts, r


def ngram_judge_for(tokenizer, train_shards: PathLike, cache: dict | None = None):
    """The trigram Kneser-Ney judge (:mod:`cola_mm.evaluation.ngram`) of the training text in
    ``tokenizer``'s ids, counted once per vocabulary when ``cache`` is kept across models."""
    from cola_mm.evaluation.ngram import corpus_ngram_judge

    cache = {} if cache is None else cache
    key = hash(frozenset(tokenizer.get_vocab().items()))
    if key not in cache:
        cache[key] = corpus_ngram_judge(train_shards, tokenizer)
    return cache[key]


def text_job(pipe, data_root: PathLike, seeds: Sequence[int], n_prompts: int, max_new_tokens: int,
             steps: int | None, ar=None, encoder=None, progress: bool = True,
             vocabulary: frozenset[str] | None = None, n_speaker_prompts: int = 0,
             cfg_scale: float | None = None, ngram_cache: dict | None = None) -> dict[str, Any]:
    """Continuations of held-out prompts per seed, scored by :mod:`cola_mm.evaluation.text_metrics`
    (``vocabulary``: the training corpus's words, read once per suite run); with
    ``n_speaker_prompts``, also continuations of prompts that end on a held-out character's speaker
    line, scored by :mod:`cola_mm.evaluation.speakers`. ``cfg_scale``: the prior's text guidance
    (None: the pipeline's default; the baselines ignore it). ``ngram_cache`` keeps the n-gram
    judge of each vocabulary across the models of one run."""
    from tqdm import tqdm

    from cola_mm.evaluation import text_metrics as tm
    from cola_mm.evaluation.context import prompts_from_windows, read_windows

    root = Path(data_root)
    val = root / "text" / "val"
    ids = read_windows(val, pipe.tokenizer, n_prompts, seq_len=2 * max_new_tokens)
    prompts = prompts_from_windows(pipe.tokenizer, ids, n_tokens=max_new_tokens)
    references = [pipe.tokenizer.decode(row[max_new_tokens:].tolist(), skip_special_tokens=True).strip() for row in ids]
    if vocabulary is None:
        vocabulary = tm.corpus_vocabulary(root / "text" / "train")
    speaker_prompts, play_speakers = [], {}
    if n_speaker_prompts:
        from cola_mm.evaluation import speakers as sp

        try:
            speaker_prompts = sp.speaker_prompts(val, root / "text" / "train", pipe.tokenizer, n_speaker_prompts,
                                                 prompt_tokens=max_new_tokens)
            play_speakers = sp.speakers_by_play(val)
        except ValueError as err:  # a corpus without (enough) speaker lines: no speaker figures
            print(f"note: no speaker figures ({err})", file=sys.stderr)
    ngram = ngram_judge_for(pipe.tokenizer, root / "text" / "train", ngram_cache)
    per_seed, samples = [], {}
    for seed in seeds:
        texts = continue_prompts(pipe, prompts, max_new_tokens, steps, cfg_scale, seed, progress, f"text seed {seed}")
        texts, r = continuation_figures(texts, prompts, vocabulary, pipe.tokenizer, ar, encoder, references,
                                        ngram)
        if speaker_prompts:
            said = continue_prompts(pipe, [p["prompt"] for p in speaker_prompts], max_new_tokens, steps, cfg_scale,
                                    seed, progress, f"speakers seed {seed}")
            r.update(sp.speaker_figures(said, speaker_prompts, play_speakers))
            samples[f"{seed}_speakers"] = [{"prompt": p["prompt"][-120:], "continuation": t}
                                           for p, t in zip(speaker_prompts[:3], said[:3])]
        per_seed.append(r)
        samples[str(seed)] = [{"prompt": p, "continuation": t} for p, t in zip(prompts[:4], texts[:4])]
    return {"per_seed": per_seed, "summary": aggregate(per_seed), "samples": samples, "prompts": len(prompts)}


def context_job(pipe, data_root: PathLike, seeds: Sequence[int], n_windows: int, caption_rows: int,
                progress: bool = True, binding_rows: int = 200) -> dict[str, Any]:
    """Foreign − true flow loss of held-out text blocks and of caption blocks, and the binding
    ratios of two-object ``shapes/val`` images (:mod:`cola_mm.evaluation.binding`), per seed."""
    from cola_mm.evaluation.binding import EXCHANGED, binding_losses, summarize_binding
    from cola_mm.evaluation.context import (caption_context_losses, read_windows, summarize,
                                            text_context_losses)
    from cola_mm.evaluation.images import read_samples

    root = Path(data_root)
    ids = read_windows(root / "text" / "val", pipe.tokenizer, n_windows, seq_len=pipe.config.trained_context)
    caption_samples = []
    if _has_images(pipe) and caption_rows:
        for dataset in registry.datasets().values():
            if dataset.has_images and dataset.caption_splits and dataset.canonical_caption is not None \
                    and registry.evaluated(dataset, root):
                caption_samples += read_samples(root / dataset.name / dataset.caption_splits[0], caption_rows)
    binding_samples = []
    if _has_images(pipe) and binding_rows and (root / "shapes" / "val").is_dir():
        binding_samples = read_samples(root / "shapes" / "val", binding_rows, allow_empty=True,
                                       keep=lambda j: len(j.get("objects", [])) == 2)
    per_seed = []
    for seed in seeds:
        text = summarize(text_context_losses(pipe.text_vae, pipe.dit, ids, conditions=("true", "foreign"),
                                             draws=2, seed=seed))
        r = {"text_true_loss": text["mean"]["true"], "text_foreign_gap": text["gap"]["foreign"],
             "text_foreign_gap_se": text["gap_se"]["foreign"]}
        if caption_samples:
            captions = [registry.of_sample(s["json"]).canonical_caption(s["json"]) for s in caption_samples]
            cap = summarize(caption_context_losses(pipe, caption_samples, captions, conditions=("true", "foreign"),
                                                   draws=2, seed=seed))
            r.update(caption_true_loss=cap["mean"]["true"], caption_foreign_gap=cap["gap"]["foreign"],
                     caption_foreign_gap_se=cap["gap_se"]["foreign"])
        if binding_samples:
            bound = summarize_binding(binding_losses(pipe, binding_samples, draws=2, seed=seed))
            r.update({f"binding_ratio_{e.removeprefix('swap_')}": bound["ratio"][e] for e in EXCHANGED})
        per_seed.append(r)
    return {"per_seed": per_seed, "summary": aggregate(per_seed)}


# --------------------------------------------------------------------------- the suite


def load_clip_judge(clip: Any, checkpoint: PathLike | None, data_root: PathLike,
                    limit: int | None) -> tuple[Any, dict[str, Any]]:
    """The CLIP that scores text → image and what the report says of it.

    ``clip``: a :class:`~cola_mm.evaluation.clip.SmallClip` folder (``checkpoint`` None), an
    open_clip arch with a local ``checkpoint`` file (both as
    :func:`~cola_mm.evaluation.clip.load_clip` takes them), or a ``ClipEncoder`` object (tests,
    notebooks). Returns ``(encoder, {"dir", "checkpoint", "source", "results"})``: ``results``
    is ``{split: {"retrieval": {...}, "clip_score": {"matching", "shuffled"}}}`` from the
    folder's ``report.json`` (``source`` "report.json"), else measured here with
    :func:`~cola_mm.evaluation.clip.evaluate_clip` on the text → image splits (``source``
    "measured", at most ``limit`` pairs per split). A bad folder or file is a
    :class:`CheckpointError`, a report that is not one a :class:`ValueError`."""
    from cola_mm.evaluation.clip import REPORT_NAME, ClipEncoder, evaluate_clip, load_clip

    if isinstance(clip, ClipEncoder):
        encoder, name = clip, type(clip).__name__
    else:
        encoder, name = load_clip(clip, checkpoint), str(clip)
    info: dict[str, Any] = {"dir": name, "checkpoint": str(checkpoint) if checkpoint is not None else None}
    report_file = Path(clip) / REPORT_NAME if checkpoint is None and isinstance(clip, (str, os.PathLike)) else None
    if report_file is not None and report_file.is_file():
        try:
            results = json.loads(report_file.read_text())["results"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            results = None
        if not isinstance(results, dict) or not all(isinstance(r, dict) and "retrieval" in r
                                                    for r in results.values()):
            raise ValueError(f"{report_file} is not a CLIP report (`python -m cola_mm.evaluation.clip train` "
                             f"writes one)")
        info.update(source=REPORT_NAME, results=results)
    else:
        splits = registry.image_eval_splits("text_to_image", data_root)
        info.update(source="measured", results=evaluate_clip(encoder, data_root, splits, limit))
    return encoder, info


def checkpoint_name(path: PathLike) -> str:
    p = Path(path).resolve()
    return p.parent.name if p.name == "model" else p.name


def run_suite(ckpts: Sequence[PathLike], data_root: PathLike = "datasets", probe_dir: Any = "runs/probe",
              seeds: Sequence[int] = (0, 1, 2), limit: int | None = 200, steps: int | None = None,
              ar_dir: PathLike | None = None, text_prompts: int = 32, max_new_tokens: int = 48,
              context_windows: int = 32, caption_rows: int = 32, binding_rows: int = 200, jobs: Sequence[str] = ("images", "text", "context"),
              progress: bool = True, grid_examples: int = 16, clip: Any = None,
              clip_checkpoint: PathLike | None = None, split_set: str = "test",
              icon_judge_dir: Any = None, speaker_prompts: int = 16,
              text_cfg_scale: float | None = None, datasets: Sequence[str] | None = None,
              reuse: Sequence[PathLike] = ()) -> dict[str, Any]:
    """Run every job on every checkpoint; returns the report (see the module docstring).
    ``split_set``: ``test`` (reported figures) or ``val`` (model selection), see :func:`eval_splits`.
    ``probe_dir`` is the judge's folder, or a judge object with ``predict(images)``;
    ``icon_judge_dir`` the icon judge's (:mod:`cola_mm.evaluation.icon_judge`; or an object), read
    only when the icons splits are evaluated (built under ``data_root``): without it they get no
    text → image rows (listed in ``text_to_image_unjudged``); ``clip``
    (None: no CLIPScore) and ``clip_checkpoint`` are what :func:`load_clip_judge` takes;
    ``datasets`` keeps the image rows of these image datasets only (None: every built one);
    ``reuse``: earlier suite JSONs whose other checkpoints are listed too (:func:`reusable_entries`)."""
    from cola_mm.evaluation.generators import load_text_generator
    from cola_mm.data.shards import DataError

    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"no dataset root {root}: build it with `cola-mm data all --out {root}`")
    eval_splits(split_set, "text_to_image", datasets=datasets)  # bad split sets / datasets fail before any model loads
    if clip_checkpoint is not None and clip is None:
        raise ValueError("--clip-checkpoint needs --clip ARCH (the checkpoint's open_clip arch, e.g. ViT-B-32)")
    clip_encoder, clip_info = None, None
    if "images" in jobs and clip is not None:
        if probe_dir is None:
            raise ValueError("--clip scores the text → image rows, which need a judge (--probe)")
        clip_encoder, clip_info = load_clip_judge(clip, clip_checkpoint, root, limit)
    probe, judge_report = None, None
    t2i_judges = {registry.of_split(s).judge for s in eval_splits(split_set, "text_to_image", root, datasets)}
    if "images" in jobs and probe_dir is not None and hasattr(probe_dir, "predict"):
        probe, probe_dir = probe_dir, type(probe_dir).__name__  # a judge object (tests, notebooks)
    elif "images" in jobs and probe_dir is not None and "probe" in t2i_judges:  # not for icons rows only
        from cola_mm.evaluation.probe import Probe

        probe = Probe.from_pretrained(probe_dir)
        report_file = Path(probe_dir) / "report.json"
        judge_report = json.loads(report_file.read_text()).get("metrics") if report_file.is_file() else None
    icon_judge, icon_report = None, None
    if "images" in jobs and icon_judge_dir is not None and "icons" in t2i_judges:
        if hasattr(icon_judge_dir, "predict"):
            icon_judge, icon_judge_dir = icon_judge_dir, type(icon_judge_dir).__name__
        else:
            from cola_mm.evaluation.icon_judge import IconJudge

            icon_judge = IconJudge.from_pretrained(icon_judge_dir)
            report_file = Path(icon_judge_dir) / "report.json"
            icon_report = json.loads(report_file.read_text()).get("renders") if report_file.is_file() else None
    ar = None
    if "text" in jobs and ar_dir is not None:
        from cola_mm.evaluation.ar import load_ar

        ar = load_ar(ar_dir)
    encoder = vocabulary = None
    ngram_cache: dict = {}  # one n-gram judge per tokenizer vocabulary
    if "text" in jobs:
        from cola_mm.evaluation import text_metrics as tm

        vocabulary = tm.corpus_vocabulary(root / "text" / "train")
        encoder = mauve_encoder()
    report: dict[str, Any] = {"suite_version": 1, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": machine(), "data": str(root), "split_set": split_set,
                              "datasets": list(datasets) if datasets is not None else None, "seeds": list(seeds), "limit": limit,
                              "steps": steps, "text_cfg_scale": text_cfg_scale, "judge": {"dir": str(probe_dir) if probe else None,
                                                        "report": judge_report},
                              "icon_judge": {"dir": str(icon_judge_dir) if icon_judge else None,
                                             "report": icon_report},
                              "clip": clip_info, "ar": str(ar_dir) if ar else None, "checkpoints": {}}
    names = [checkpoint_name(c) for c in ckpts]
    reused = {name: entry for path in reuse for name, entry in reusable_entries(report, path, jobs, names).items()}
    for ckpt, name in zip(ckpts, names):
        torch.manual_seed(0)
        pipe = load_text_generator(ckpt)  # a Cola-MM pipeline, or an AR / masked diffusion baseline
        entry: dict[str, Any] = {"path": str(ckpt), "family": pipe.family, "sampling": sampling_settings(pipe)}
        started = time.time()
        if "images" in jobs:
            entry.update(image_jobs(pipe, {"probe": probe, "icons": icon_judge}, root, seeds, limit, steps, progress,
                                    grid_examples, clip_encoder, split_set, datasets))
        if "text" in jobs and not hasattr(pipe, "generate_text"):
            entry["text"] = NOT_AVAILABLE
        elif "text" in jobs:
            entry["text"] = text_job(pipe, root, seeds, text_prompts, max_new_tokens, steps, ar, encoder, progress,
                                     vocabulary, speaker_prompts, text_cfg_scale, ngram_cache)
        if "context" in jobs and pipe.family != "cola_mm":  # flow losses exist only for the prior
            entry["context"] = NOT_AVAILABLE
        elif "context" in jobs:
            entry["context"] = context_job(pipe, root, seeds, context_windows, caption_rows, progress, binding_rows)
        entry["seconds"] = round(time.time() - started, 1)
        report["checkpoints"][name] = entry
    report["checkpoints"].update(reused)
    return report


# what a run's figures depend on besides the checkpoint: an earlier run is reused only where all agree
REUSE_SETTINGS = ("split_set", "data", "datasets", "seeds", "limit", "steps", "text_cfg_scale", "ar")
JOB_KEYS = {"images": ("text_to_image", "image_to_text"), "text": ("text",), "context": ("context",)}


def reusable_entries(report: dict[str, Any], path: PathLike, jobs: Sequence[str],
                     measured: Sequence[str]) -> dict[str, dict]:
    """The checkpoints of an earlier suite JSON that this run does not measure (``measured``: the
    names it does), marked ``reused_from``: a baseline that has not changed, whose folder may be
    gone. ``report`` is this run's (its settings, before any checkpoint runs): the earlier run must
    agree on :data:`REUSE_SETTINGS` (and the judge's folder when images are scored) and cover
    ``jobs``, or this raises ``ValueError`` before anything is measured."""
    path = Path(path)
    try:
        old = json.loads(path.read_text())
        entries = old["checkpoints"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"--reuse {path}: not a suite JSON ({e})") from None
    def settings(r: dict[str, Any]) -> dict[str, Any]:
        judge = {"judge": (r.get("judge") or {}).get("dir")} if "images" in jobs else {}
        return {**{k: r.get(k) for k in REUSE_SETTINGS}, **judge}

    mine_all, theirs_all = settings(report), settings(old)
    for key, mine in mine_all.items():
        if (theirs := theirs_all[key]) != mine:
            raise ValueError(f"--reuse {path}: its {key} is {theirs!r}, this run's {mine!r}; "
                             f"only figures measured the same way are put side by side")
    kept = {}
    for name, entry in entries.items():
        if name in measured:  # measured again in this run: the new figures stand
            continue
        missing = [job for job in jobs if not all(k in entry for k in JOB_KEYS[job])]
        if missing:
            raise ValueError(f"--reuse {path}: {name} has no figures for {', '.join(missing)} (--jobs)")
        kept[name] = {**entry, "reused_from": f"{path.name} ({old.get('date', '?')})"}
    return kept


def mauve_encoder():
    """The sentence encoder MAUVE scores with, or None (with a note on stderr) where it cannot load."""
    from cola_mm.evaluation import text_metrics as tm

    try:
        return tm.load_sentence_encoder()
    except (ImportError, FileNotFoundError, OSError, RuntimeError) as err:
        print(f"note: no MAUVE score ({str(err).splitlines()[0]})", file=sys.stderr)
        return None


def sampling_settings(pipe) -> dict[str, Any]:
    """The sampling defaults a model folder generated with (what two reports must share to compare):
    a pipeline's noise temperatures, lead blocks, guidance and steps; an AR's temperature and top-p."""
    if getattr(pipe, "family", None) == "cola_mm":
        keys = ("text_temperature", "text_lead_blocks", "text_lead_temperature", "image_temperature",
                "caption_temperature", "default_cfg_scale", "default_image_cfg_scale", "default_caption_cfg_scale",
                "default_steps", "text_steps")
        return {k: getattr(pipe.config, k) for k in keys if hasattr(pipe.config, k)}
    return dict(getattr(pipe, "sampling", {}))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


# --------------------------------------------------------------------------- writing


def _cell(stat: dict[str, float] | None, percent: bool) -> str:
    if stat is None:
        return "–"
    m, sd = stat["mean"], stat["std"]
    if math.isnan(m):
        return "–"
    if percent:
        return f"{100 * m:.1f} ± {100 * sd:.1f} %"
    return f"{m:.4f} ± {sd:.4f}" if abs(m) < 10 else f"{m:.1f} ± {sd:.1f}"


def _rows(summaries: dict[str, Any], suffix: str = "_all_acc") -> list[str]:
    """Figure names (ending in ``suffix``) present in any checkpoint's summary, in first-seen order."""
    names: list[str] = []
    for s in summaries.values():
        if isinstance(s, dict):
            names += [k for k in s if k.endswith(suffix) and k not in names]
    return names


# Per-attribute verdicts, in the order a reader checks them (data.shapes.judge_image, the icon judge,
# the caption graders): was the output read at all, how many objects, what they are, where they are.
ATTRIBUTES = ("parsed", "count", "shape", "color", "icon", "size", "cell", "relation", "background", "objects")


def attribute_cells(summary: dict[str, Any], split: str) -> str:
    """``count 51 · shape 28 · …``: the mean share (%) of ``split``'s samples with each attribute
    right, from a summary's ``{split}_{attribute}_acc`` figures ('' when it has none)."""
    parts = [f"{a} {100 * summary[f'{split}_{a}_acc']['mean']:.0f}" for a in ATTRIBUTES
             if isinstance(summary.get(f"{split}_{a}_acc"), dict) and not math.isnan(summary[f"{split}_{a}_acc"]["mean"])]
    return " · ".join(parts) + " %" if parts else ""


def attribute_table(summaries: dict[str, Any]) -> list[str]:
    """Markdown rows (header included) of what each split got right attribute by attribute, one
    column per checkpoint (a checkpoint without the job: why, as in the job's table); [] when no
    split has per-attribute figures. ``objects``: both objects of
    a two-object prompt drawn/named with the right shape, colour and size; ``relation``: and placed
    as the prompt says."""
    splits = [row[: -len("_all_acc")] for row in _rows(summaries)]
    splits = [sp for sp in splits if any(isinstance(s, dict) and attribute_cells(s, sp) for s in summaries.values())]
    if not splits:
        return []
    lines = ["| split, share right per attribute | " + " | ".join(f"`{n}`" for n in summaries) + " |",
             "|---|" + "---|" * len(summaries)]
    for sp in splits:
        lines.append(f"| {sp} | " + " | ".join((attribute_cells(s, sp) or "–") if isinstance(s, dict) else str(s)
                                             for s in summaries.values()) + " |")
    return lines


def clip_note(clip: dict[str, Any]) -> str:
    """One sentence on the CLIP's own held-out accuracy (``report["clip"]``), for beside the text →
    image table: per split, text → image retrieval (an image of the prompt's content ranked first,
    with its chance level) and the CLIPScore of matching vs shuffled real pairs."""
    name = clip["dir"] + (f" {clip['checkpoint']}" if clip.get("checkpoint") else "")
    where = f"{clip['dir']}/report.json" if clip["source"] == "report.json" else "measured by this run"
    retrieval, scores = [], []
    for split, r in clip["results"].items():
        ret = r.get("retrieval") or {}
        if "t2i_content_top1" in ret:
            retrieval.append(f"{split} {100 * ret['t2i_content_top1']:.1f} % "
                             f"(chance {100 * ret.get('content_chance_top1', float('nan')):.1f} %)")
        if "matching" in (r.get("clip_score") or {}):
            scores.append(f"{split} {r['clip_score']['matching']:.2f} vs {r['clip_score']['shuffled']:.2f}")
    text = (f"CLIPScore by the CLIP {name}. Its own accuracy on held-out real pairs ({where}): text → image "
            f"retrieval, an image of the prompt's content ranked first, {', '.join(retrieval) or '–'}")
    if scores:
        text += f"; its CLIPScore of matching vs shuffled real pairs: {', '.join(scores)}"
    return text + "."


def tables(report: dict[str, Any]) -> str:
    """The report's tables in Markdown: one per job, one column per checkpoint (text → image: two
    with a CLIP, the judge's figure and the CLIPScore)."""
    names = list(report["checkpoints"])
    head = "| figure | " + " | ".join(f"`{n}`" for n in names) + " |\n|---|" + "---|" * len(names) + "\n"
    clip = report.get("clip")
    out = []
    for job, title in (("text_to_image", "Text → image: all right (judge)"),
                       ("image_to_text", "Image → text: caption right (strict grammar, exactly the scene)")):
        summaries = {n: e.get(job) for n, e in report["checkpoints"].items()}
        if all(s is None for s in summaries.values()):  # the job was not run (--jobs): no table
            continue
        summaries = {n: (s["summary"] if isinstance(s, dict) else s) for n, s in summaries.items()}
        with_clip = job == "text_to_image" and bool(clip)
        per = 2 if with_clip else 1  # columns per checkpoint
        if with_clip:
            title += " and CLIPScore (w = 2.5, in [0, 2.5])"
            job_head = ("| figure | " + " | ".join(f"`{n}` | `{n}` CLIPScore" for n in names) + " |\n|---|"
                        + "---|" * (2 * len(names)))
        else:
            job_head = head.rstrip("\n")
        lines = [f"### {title}\n", job_head]
        if not _rows(summaries):  # nothing measured: say why per checkpoint
            lines.append("| all splits | " + " | ".join(v if isinstance(v, str) else "see below"
                                                        for v in summaries.values() for _ in range(per)) + " |")
        top5 = {r[: -len("_icon_top5_acc")] + "_all_acc": r for r in _rows(summaries, "_icon_top5_acc")}
        for row in _rows(summaries) + [r for r in top5.values()]:
            split = row[: -len("_icon_top5_acc")] if row in top5.values() else row[: -len("_all_acc")]
            label = f"{split} top-5 icon" if row in top5.values() else split
            cells = []
            for s in summaries.values():
                cells.append(s if isinstance(s, str) else _cell(s.get(row), True))
                if with_clip:
                    cells.append(s if isinstance(s, str) else _cell(s.get(f"{split}_clip_score"), False))
            n = next((int(s[f"{split}_n"]["mean"]) for s in summaries.values()
                      if isinstance(s, dict) and f"{split}_n" in s), 0)
            lines.append(f"| {label} (n={n}) | " + " | ".join(cells) + " |")
        skipped = sum(int(s[k]["mean"]) for s in summaries.values() if isinstance(s, dict)
                      for k in s if k.endswith("_skipped"))
        lines.append("")
        if skipped:
            lines.append(f"Bad samples skipped while reading the splits: {skipped}.\n")
        attributes = attribute_table(summaries)
        if attributes:
            lines += ["Where the misses are (mean over seeds; `objects`: a two-object scene's two objects with "
                      "the right shape, colour and size; `relation`: and placed as the prompt says):\n",
                      *attributes, ""]
        if job == "text_to_image" and report["judge"]["report"]:
            judge = report["judge"]["report"]
            shown = ", ".join(f"{k} {100 * v:.1f} %" for k, v in judge.items()  # the all-right figures
                              if isinstance(v, float) and k.endswith("_all") and v <= 1)
            lines.append(f"The judge's own accuracy on held-out renders ({report['judge']['dir']}/report.json): "
                         f"{shown}.\n")
        icon = (report.get("icon_judge") or {}).get("report")
        if job == "text_to_image" and icon:
            shown = ", ".join(f"{k} {100 * v:.1f} %" for k, v in icon.items() if k != "n" and isinstance(v, float))
            lines.append(f"The icon judge's own accuracy on {icon.get('n', '?')} held-out renders "
                         f"({report['icon_judge']['dir']}/report.json): {shown}.\n")
        unjudged = sorted({s for e in report["checkpoints"].values() for s in e.get("text_to_image_unjudged") or ()})
        if job == "text_to_image" and unjudged:
            lines.append(f"Not judged (no judge for them was given, e.g. `--icon-judge`): {', '.join(unjudged)}.\n")
        if with_clip:
            lines.append(clip_note(clip) + "\n")
        out.append("\n".join(lines))
    for job, title, fields in (
            ("text", "Text continuation (held-out plays)",
             ("corpus_word_rate", "unigram_entropy_bits", "repeated_4gram_rate", "same_seed_difflib",
              "same_seed_3gram", "mauve", "gen_ppl", "ngram_ppl", "speech_after_speaker", "speakers_of_the_play",
              "speaker_lines")),
            ("context", "Context use (teacher-forced flow loss)",
             ("text_true_loss", "text_foreign_gap", "caption_true_loss", "caption_foreign_gap",
              "binding_ratio_colors", "binding_ratio_shapes", "binding_ratio_objects"))):
        summaries = {n: e.get(job) if isinstance(e.get(job), dict) else {}
                     for n, e in report["checkpoints"].items()}
        summaries = {n: s.get("summary", {}) for n, s in summaries.items()}
        present = [f for f in fields if any(f in s for s in summaries.values())]
        if not present:
            continue
        lines = [f"### {title}\n", head.rstrip("\n")]
        for f in present:
            lines.append(f"| {f} | " + " | ".join(_cell(s.get(f), False) for s in summaries.values()) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


SPLIT_NOTES = {
    "test": "Splits are held out by construction (their combinations never occur in training; every\n"
            "  evaluation image and prompt is hashed against the training stream, overlap in each\n"
            "  dataset's `manifest.json`).",
    "val": "**Model-selection splits** (`--splits val`: each image dataset's `val` split, held out by\n"
           "  construction like test); choose models and settings on these, report on test.",
}


KEPT_MARKER = "<!-- below: bench figures, kept when the suite rewrites this file -->"


def write_markdown(report: dict[str, Any], path: PathLike, command: str, json_path: PathLike | None) -> None:
    """``docs/results.md``: what was run, on what, when, and the tables."""
    def described(e: dict) -> str:
        sampling = e.get("sampling") or {}
        if e.get("family") == "ar" and sampling:  # an AR's sampling is not the pipeline.json one can read
            return f"{e['path']}, ar, temperature {sampling['temperature']:g}, top-p {sampling['top_p']:g}"
        return f"{e['path']}, {e.get('family', 'cola_mm')}"

    def source(e: dict) -> str:
        return f"; figures of {e['reused_from']}, not re-run" if e.get("reused_from") else ""

    names = ", ".join(f"`{n}` ({described(e)}{source(e)})" for n, e in report["checkpoints"].items())
    text = f"""# Measured results

Written by `cola-mm eval suite` on {report['date']} — do not edit by hand; re-run the command:

    {command}

- Checkpoints: {names}.
- Machine: {report['machine']}.
- Seeds {', '.join(map(str, report['seeds']))}: every figure is mean ± std over them. At most {report['limit']}
  samples per split; sampler steps: {report['steps'] or "the pipeline's default"}.
- {SPLIT_NOTES[report.get("split_set", "test")]} Captions are graded by the strict grammar:
  exactly the scene.
- Raw figures, per seed: [{Path(json_path).name if json_path else "–"}](../bench/results/{Path(json_path).name if json_path else ""}).

{tables(report)}"""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    old = Path(path).read_text() if Path(path).is_file() else ""
    if KEPT_MARKER in old:  # figures of the benches (serving, fuzzing …), written by hand with their commands
        text = text.rstrip("\n") + "\n\n" + old[old.index(KEPT_MARKER):]
    Path(path).write_text(text)


def command_line() -> str:
    return "cola-mm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
