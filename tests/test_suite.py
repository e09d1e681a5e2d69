"""`cola-mm eval suite`: every job on every checkpoint in one run, mean ± std over seeds, the
Markdown tables, "not available" rows for a checkpoint without an image VAE, one-line errors,
CLIPScore of text → image with ``--clip`` (and nothing of it without)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import open_clip
import pytest
import torch

from cola_mm.cli import main
from cola_mm.core.components import CheckpointError
from cola_mm.data.shards import DataError
from cola_mm.evaluation import suite
from cola_mm.evaluation.clip import REPORT_NAME, ClipTrainConfig, OpenClip, SmallClip, train_clip
from test_clip import TINY, register_tiny_open_clip


class FixedJudge:
    """Reads every image as a small red circle in the top left (so the suite's plumbing, not
    the tiny model, decides the figures)."""

    def predict(self, images):
        return [{"count": 1, "objects": [{"shape": "circle", "color": "red", "size": "small", "cell": "top left"}],
                 "shape": "circle", "color": "red", "size": "small", "cell": "top left", "kind": "shapes",
                 "digit": 7} for _ in images]


@pytest.fixture(scope="module")
def text_only(tiny_mm_pipeline, tmp_path_factory):
    """The tiny pipeline without its image VAE (a text-only prior)."""
    out = tmp_path_factory.mktemp("text_only") / "model"
    shutil.copytree(tiny_mm_pipeline, out)
    shutil.rmtree(out / "image_vae")
    cfg = json.loads((out / "pipeline.json").read_text())
    cfg["jobs"] = ["text_to_text"]
    (out / "pipeline.json").write_text(json.dumps(cfg))
    return out


def test_suite_runs_every_job_on_two_checkpoints(tiny_mm_pipeline, text_only, tiny_datasets, tmp_path):
    report = suite.run_suite([tiny_mm_pipeline, text_only], data_root=tiny_datasets, probe_dir=FixedJudge(),
                             seeds=(0, 1), limit=3, steps=2, text_prompts=3, context_windows=2, caption_rows=2,
                             progress=False, grid_examples=2)
    assert len(report["checkpoints"]) == 2
    full, text = report["checkpoints"].values()
    t2i = full["text_to_image"]["summary"]
    assert len(full["text_to_image"]["per_seed"]) == 2 and t2i["shapes_test_all_acc"]["n"] == 2
    assert {"shapes_test_all_acc", "shapes_novel_all_acc", "digits_test_all_acc"} <= set(t2i)
    i2t = full["image_to_text"]["summary"]
    assert {"shapes_test_1obj_all_acc", "shapes_two_2obj_all_acc", "digits_test_all_acc"} <= set(i2t)
    assert all(0 <= v["mean"] <= 1 for k, v in i2t.items() if k.endswith("_acc"))
    assert text["text_to_image"] == suite.NOT_AVAILABLE and text["image_to_text"] == suite.NOT_AVAILABLE
    for entry in (full, text):
        figures = entry["text"]["summary"]
        assert 0 <= figures["corpus_word_rate"]["mean"] <= 1 and figures["corpus_word_rate"]["n"] == 2
        assert "same_seed_difflib" in figures and "text_foreign_gap" in entry["context"]["summary"]
        assert figures["ngram_ppl"]["mean"] > 1 and figures["ngram_ppl"]["n"] == 2  # the judge of neither family
        assert entry["sampling"]["text_temperature"] >= 0  # what the figures were sampled with
    assert "caption_foreign_gap" in full["context"]["summary"] and "caption_foreign_gap" not in text["context"]["summary"]
    assert {"binding_ratio_colors", "binding_ratio_shapes", "binding_ratio_objects"} <= set(full["context"]["summary"])
    assert not any(k.startswith("binding") for k in text["context"]["summary"])  # no image job, no binding row
    md = tmp_path / "results.md"
    suite.write_markdown(report, md, "cola-mm eval suite --ckpt A --ckpt B", tmp_path / "suite.json")
    page = md.read_text()
    assert "| ngram_ppl |" in page and "| binding_ratio_colors |" in page
    assert "mean ± std" in page and "cola-mm eval suite --ckpt A --ckpt B" in page and report["machine"] in page
    rows = [line for line in page.splitlines() if line.startswith("| shapes_") or line.startswith("| digits_")]
    assert rows and all(line.rstrip(" |").endswith(suite.NOT_AVAILABLE) for line in rows)  # the text-only column
    assert "| shapes_test (n=3) | " in page and " ± " in page
    assert "Where the misses are" in page and "| shapes_test | count " in page  # the per-attribute table


def test_attribute_table_says_which_attribute_was_missed():
    """One row per split with per-attribute figures, in reading order, means only; a split with only
    its all-right figure, a NaN figure and a checkpoint without the job add nothing of their own."""
    def stat(m):
        return {"mean": m, "std": 0.1, "n": 3}

    two = {"shapes_two_all_acc": stat(0.005), "shapes_two_relation_acc": stat(0.0067), "shapes_two_count_acc": stat(0.51),
           "shapes_two_objects_acc": stat(0.035), "shapes_two_color_acc": stat(0.17), "shapes_two_shape_acc": stat(0.28),
           "shapes_two_size_acc": stat(float("nan")), "digits_test_all_acc": stat(0.99)}
    lines = suite.attribute_table({"demo": two, "text": suite.NOT_AVAILABLE})
    assert lines[0] == "| split, share right per attribute | `demo` | `text` |"
    assert lines[2:] == [f"| shapes_two | count 51 · shape 28 · color 17 · relation 1 · objects 4 % | {suite.NOT_AVAILABLE} |"]
    assert suite.attribute_table({"demo": {"digits_test_all_acc": stat(0.99)}}) == []
    assert suite.attribute_table({"text": suite.NOT_AVAILABLE}) == []


def test_markdown_of_a_text_only_run_has_no_image_tables(tiny_mm_pipeline, tiny_datasets, tmp_path):
    """--jobs text,context: the image jobs were not run, so their tables are left out (this used to
    raise KeyError while writing the Markdown)."""
    report = suite.run_suite([tiny_mm_pipeline], data_root=tiny_datasets, probe_dir=None, seeds=(0,), limit=2,
                             steps=2, text_prompts=2, context_windows=2, caption_rows=2, jobs=("text", "context"),
                             progress=False)
    md = tmp_path / "results.md"
    suite.write_markdown(report, md, "cola-mm eval suite --jobs text,context", None)
    page = md.read_text()
    assert "Text continuation" in page and "Context use" in page
    assert "Text → image" not in page and "Image → text" not in page
    # hand-written bench figures below the marker survive a rewrite; the tables above it do not
    md.write_text("stale tables\n\n" + suite.KEPT_MARKER + "\n\n## Serving\n\nkept figures\n")
    suite.write_markdown(report, md, "cola-mm eval suite --jobs text,context", None)
    page = md.read_text()
    assert "stale tables" not in page and page.endswith(suite.KEPT_MARKER + "\n\n## Serving\n\nkept figures\n")
    assert page.index("Context use") < page.index(suite.KEPT_MARKER)


def test_reuse_lists_an_earlier_runs_other_checkpoints_measured_the_same_way(tiny_mm_pipeline, text_only,
                                                                           tiny_datasets, tmp_path):
    """--reuse: the checkpoints of an earlier suite JSON that this run does not measure come along
    unchanged and marked (a baseline whose folder is gone); a checkpoint measured again keeps its new
    figures; another seed set, another --ar or a job the earlier run lacks stops the run before any
    model loads."""
    run = dict(data_root=tiny_datasets, probe_dir=None, seeds=(0,), limit=2, steps=2, text_prompts=2,
               speaker_prompts=0, jobs=("text",), progress=False)
    earlier = suite.run_suite([tiny_mm_pipeline, text_only], **run)
    saved = tmp_path / "suite_earlier.json"
    saved.write_text(json.dumps(earlier, default=str))
    mm_name, text_name = earlier["checkpoints"]
    report = suite.run_suite([tiny_mm_pipeline], reuse=[saved], **run)
    assert list(report["checkpoints"]) == [mm_name, text_name]
    assert report["checkpoints"][mm_name].get("reused_from") is None  # measured again, not copied
    reused = report["checkpoints"][text_name]
    assert reused["reused_from"].startswith("suite_earlier.json (")
    assert reused["text"] == json.loads(json.dumps(earlier["checkpoints"][text_name]["text"], default=str))
    md = tmp_path / "results.md"
    suite.write_markdown(report, md, "cola-mm eval suite --reuse suite_earlier.json", None)
    assert f"`{text_name}` ({text_only}, cola_mm; figures of suite_earlier.json (" in md.read_text()

    gone = tmp_path / "no_model"  # never loaded: each check fails first
    with pytest.raises(ValueError, match=r"its seeds is \[0\], this run's \[1\]"):
        suite.run_suite([gone], reuse=[saved], **{**run, "seeds": (1,)})
    with pytest.raises(ValueError, match="its ar is None, this run's 'runs/other_ar'"):
        suite.reusable_entries({**report, "ar": "runs/other_ar"}, saved, ("text",), [])
    with pytest.raises(ValueError, match=f"{mm_name} has no figures for context"):
        suite.run_suite([gone], reuse=[saved], **{**run, "jobs": ("text", "context")})
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a suite JSON"):
        suite.run_suite([gone], reuse=[tmp_path / "bad.json"], **run)


def test_val_split_set_reads_only_the_val_splits(tiny_mm_pipeline, tiny_datasets, tmp_path):
    """--splits val (model selection) grades the image jobs on each image dataset's val split and
    on nothing of test; test stays the default; a bad split set fails before any model loads."""
    # icons are optional: read only under a root where they were built
    assert suite.eval_splits("val", "text_to_image", tiny_datasets) == ("shapes/val", "digits/val")
    assert suite.eval_splits("val", "image_to_text", tiny_datasets) == ("shapes/val", "digits/val")
    assert suite.eval_splits("val", "text_to_image") == ("shapes/val", "digits/val", "icons/val")
    assert "shapes/test" in suite.eval_splits("test", "text_to_image")
    with pytest.raises(ValueError, match="split set"):
        suite.run_suite([tmp_path / "no_model"], data_root=tiny_datasets, probe_dir=None, split_set="train")
    report = suite.run_suite([tiny_mm_pipeline], data_root=tiny_datasets, probe_dir=FixedJudge(), seeds=(0,),
                             limit=2, steps=1, jobs=("images",), progress=False, split_set="val")
    entry = next(iter(report["checkpoints"].values()))
    figures = set(entry["text_to_image"]["summary"]) | set(entry["image_to_text"]["summary"])
    assert report["split_set"] == "val" and figures
    assert all(k.startswith(("shapes_val", "digits_val")) for k in figures), sorted(figures)
    md = tmp_path / "val.md"
    suite.write_markdown(report, md, "cola-mm eval suite --splits val", None)
    page = md.read_text()
    assert "Model-selection splits" in page and "| shapes_val" in page and "test (n=" not in page


def test_a_split_of_one_and_two_object_prompts_is_also_scored_per_object_count(tiny_mm_pipeline, tiny_datasets):
    """shapes/val mixes one- and two-object prompts: besides the split's figures, each count gets its
    own (``shapes_val_2obj_count_acc`` …), and the groups add up to the split. The judge reads one
    object in every image, so no two-object prompt can have its count right."""
    from cola_mm.evaluation.images import evaluate_text_to_image
    from cola_mm.pipeline import ColaPipeline

    pipe = ColaPipeline.from_pretrained(tiny_mm_pipeline)
    results, _ = evaluate_text_to_image(pipe, FixedJudge(), tiny_datasets, limit=12, steps=1,
                                        splits=("shapes/val",), progress=False)
    one, two = results["shapes_val_1obj_n"], results["shapes_val_2obj_n"]
    assert one > 0 and two > 0 and one + two == results["shapes_val_n"]
    assert results["shapes_val_2obj_count_acc"] == 0 and results["shapes_val_2obj_all_acc"] == 0
    assert "shapes_val_2obj_relation_acc" in results and "shapes_val_2obj_cell_acc" not in results
    for attr in ("count", "all", "shape"):
        assert results[f"shapes_val_{attr}_acc"] * (one + two) == pytest.approx(
            results[f"shapes_val_1obj_{attr}_acc"] * one + results[f"shapes_val_2obj_{attr}_acc"] * two)
    # a verdict only one kind of prompt has is a share of those prompts, not of the whole split: a judge
    # that reads every image as its prompt's scene gets every attribute of every group right
    from cola_mm.evaluation.images import read_samples

    truths = [s["json"] for s in read_samples(tiny_datasets / "shapes" / "val", 12)]

    class Oracle:
        def predict(self, images):
            scenes, truths[:len(images)] = truths[:len(images)], []
            return [{"kind": "shapes", "count": len(t["objects"]), "objects": t["objects"]} for t in scenes]

    perfect, _ = evaluate_text_to_image(pipe, Oracle(), tiny_datasets, limit=12, steps=1, splits=("shapes/val",),
                                        progress=False)
    assert {k: v for k, v in perfect.items() if k.endswith("_acc")} == {
        k: 1.0 for k in perfect if k.endswith("_acc")}, perfect
    assert {"shapes_val_cell_acc", "shapes_val_relation_acc", "shapes_val_objects_acc"} <= set(perfect)
    assert not any("test_1obj" in k for k in
                   evaluate_text_to_image(pipe, FixedJudge(), tiny_datasets, limit=2, steps=1, splits=("shapes/test",),
                                          progress=False)[0])  # a one-object split gets no per-count rows


def test_datasets_option_keeps_the_rows_of_the_named_image_datasets(tiny_mm_pipeline, tiny_datasets, tmp_path):
    """--datasets: only the named image datasets' splits are read (a root without the others
    works); an unknown name fails before any model loads."""
    assert suite.eval_splits("val", "text_to_image", tiny_datasets, ["digits"]) == ("digits/val",)
    assert suite.eval_splits("test", "image_to_text", None, ["icons"]) == ("icons/test", "icons/novel", "icons/two")
    for bad in (["emoji"], ["text"], []):
        with pytest.raises(ValueError, match="image datasets"):
            suite.run_suite([tmp_path / "no_model"], data_root=tiny_datasets, probe_dir=None, datasets=bad)
    root = tmp_path / "digits_only"  # a dataset root that holds digits (and the plays) only
    root.mkdir()
    for name in ("digits", "text"):
        (root / name).symlink_to(tiny_datasets / name)
    report = suite.run_suite([tiny_mm_pipeline], data_root=root, probe_dir=FixedJudge(), seeds=(0,), limit=2,
                             steps=1, jobs=("images",), progress=False, split_set="val", datasets=["digits"])
    entry = next(iter(report["checkpoints"].values()))
    figures = set(entry["text_to_image"]["summary"]) | set(entry["image_to_text"]["summary"])
    assert report["datasets"] == ["digits"] and figures
    assert all(k.startswith("digits_val") for k in figures), sorted(figures)


class FixedIconJudge:
    """Reads every image as one large rocket in the centre on a pink background."""

    def predict(self, images):
        return [{"count": 1, "background": "pink",
                 "objects": [{"cell": "center", "icon": "rocket", "size": "large", "top": ["rocket"]}]}
                for _ in images]


def test_icons_rows_alone_need_no_shapes_probe(tiny_mm_pipeline, tiny_datasets, tmp_path):
    """--datasets icons judges with the icon judge only: the shapes probe is not loaded, so a
    machine without runs/probe can evaluate an icons model."""
    from cola_mm.data import icons as world

    root = tmp_path / "icons_only"
    root.mkdir()
    (root / "text").symlink_to(tiny_datasets / "text")
    world.build_icons(root / "icons", "val", 3, progress=False)
    report = suite.run_suite([tiny_mm_pipeline], data_root=root, probe_dir=tmp_path / "no_probe", seeds=(0,),
                             limit=2, steps=1, jobs=("images",), progress=False, split_set="val",
                             datasets=["icons"], icon_judge_dir=FixedIconJudge())
    entry = next(iter(report["checkpoints"].values()))
    assert "icons_val_all_acc" in entry["text_to_image"]["summary"], sorted(entry["text_to_image"]["summary"])
    with pytest.raises(CheckpointError):  # the probe is still read where a probe-judged split is evaluated
        suite.run_suite([tiny_mm_pipeline], data_root=tiny_datasets, probe_dir=tmp_path / "no_probe", seeds=(0,),
                        limit=2, steps=1, jobs=("images",), progress=False, split_set="val", datasets=["digits"])


def test_mean_std_and_aggregate():
    assert suite.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert suite.mean_std([0.5]) == (0.5, 0.0)
    agg = suite.aggregate([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert agg["a"]["mean"] == 2.0 and agg["b"] == {"mean": 2.0, "std": 0.0, "n": 1}


def test_missing_split_and_root_are_one_line_errors(tiny_mm_pipeline, tiny_datasets, tmp_path):
    with pytest.raises(DataError, match="no dataset root"):
        suite.run_suite([tiny_mm_pipeline], data_root=tmp_path / "nope", probe_dir=None, progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_datasets, partial)
    shutil.rmtree(partial / "shapes" / "two")
    with pytest.raises(DataError, match="missing split .*shapes/two"):
        suite.run_suite([tiny_mm_pipeline], data_root=partial, probe_dir=None, seeds=(0,), limit=2, steps=1,
                        jobs=("images",), progress=False)
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "eval", "suite", "--ckpt", str(tiny_mm_pipeline),
                        "--data", str(partial), "--probe", "none", "--jobs", "images", "--limit", "2",
                        "--seeds", "0", "--json-dir", "", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "missing split" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "eval", "suite", "--jobs", "images,typo"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--jobs: unknown ['typo']" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def tiny_clip(tiny_datasets, tmp_path_factory):
    """A SmallClip of test_clip's TINY config, three steps on the tiny datasets, with its report.json."""
    cfg = ClipTrainConfig(model=TINY, steps=3, batch_size=8, eval_limit=8)
    return train_clip(tiny_datasets, tmp_path_factory.mktemp("clip") / "clip", progress=False, config=cfg)


def _without_clip(report):
    """The report as a run without --clip would write it: no CLIP, no *_clip_score figures."""
    report = copy.deepcopy(report)
    report["clip"] = None
    for entry in report["checkpoints"].values():
        if isinstance(entry.get("text_to_image"), dict):
            t2i = entry["text_to_image"]
            t2i["per_seed"] = [{k: v for k, v in r.items() if not k.endswith("_clip_score")} for r in t2i["per_seed"]]
            t2i["summary"] = {k: v for k, v in t2i["summary"].items() if not k.endswith("_clip_score")}
    return report


def test_clip_scores_every_text_to_image_row(tiny_mm_pipeline, text_only, tiny_datasets, tiny_clip, tmp_path):
    run = dict(data_root=tiny_datasets, probe_dir=FixedJudge(), seeds=(0, 1), limit=2, steps=1, jobs=("images",),
               progress=False, grid_examples=0)
    scored = suite.run_suite([tiny_mm_pipeline, text_only], clip=tiny_clip, **run)
    plain = suite.run_suite([tiny_mm_pipeline, text_only], **run)
    own = json.loads((tiny_clip / REPORT_NAME).read_text())["results"]
    assert scored["clip"] == {"dir": str(tiny_clip), "checkpoint": None, "source": REPORT_NAME, "results": own}
    full, text = scored["checkpoints"].values()
    t2i = full["text_to_image"]["summary"]
    rows = [k[: -len("_all_acc")] for k in t2i if k.endswith("_all_acc")]  # splits and per-size rows
    assert {"shapes_test", "shapes_novel", "digits_test"} <= set(rows)
    for row in rows:  # every row: mean ± std of the per-seed mean CLIPScore, in [0, 2.5]
        stat = t2i[f"{row}_clip_score"]
        assert stat["n"] == 2 and 0 <= stat["mean"] <= 2.5, (row, stat)
        per_seed = [r[f"{row}_clip_score"] for r in full["text_to_image"]["per_seed"]]
        assert (stat["mean"], stat["std"]) == suite.mean_std(per_seed)
    assert text["text_to_image"] == suite.NOT_AVAILABLE
    # the CLIP changes nothing else: the judge's figures, and the tables once its figures are taken out
    assert plain["clip"] is None
    assert not any(k.endswith("_clip_score") for k in plain["checkpoints"][next(iter(plain["checkpoints"]))]
                   ["text_to_image"]["summary"])
    assert suite.tables(_without_clip(scored)) == suite.tables(plain)
    assert "CLIP" not in suite.tables(plain)

    page_file = tmp_path / "results.md"
    suite.write_markdown(scored, page_file, "cola-mm eval suite --clip X", None)
    page = page_file.read_text()
    name = next(iter(scored["checkpoints"]))
    assert f"| figure | `{name}` | `{name}` CLIPScore | `{text_only.parent.name}` | " in page
    line = next(x for x in page.splitlines() if x.startswith("| shapes_test (n=2) | "))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    assert cells == [suite._cell(t2i["shapes_test_all_acc"], True), suite._cell(t2i["shapes_test_clip_score"], False),
                     suite.NOT_AVAILABLE, suite.NOT_AVAILABLE]
    retrieval = own["shapes/test"]["retrieval"]
    assert f"Its own accuracy on held-out real pairs ({tiny_clip}/report.json)" in page
    assert f"shapes/test {100 * retrieval['t2i_content_top1']:.1f} % (chance " in page
    assert "matching vs shuffled real pairs: shapes/test " in page
    # image → text gains no CLIP column
    i2t_table = page.split("### Image → text")[1]
    assert "CLIPScore" not in i2t_table


def test_clip_without_report_is_measured_and_bad_clip_is_one_line(tiny_mm_pipeline, tiny_datasets, tiny_clip,
                                                                   tmp_path, capsys):
    bare = tmp_path / "bare"
    SmallClip.from_pretrained(tiny_clip).save_pretrained(bare)  # no report.json
    encoder, info = suite.load_clip_judge(bare, None, tiny_datasets, limit=3)
    assert isinstance(encoder, SmallClip) and info["source"] == "measured"
    assert "shapes/test" in info["results"] and info["results"]["shapes/test"]["retrieval"]["n"] == 3
    assert "(measured by this run)" in suite.clip_note(info)

    # a user's own open_clip: an arch + a local checkpoint file, as load_clip takes them
    arch = register_tiny_open_clip(tmp_path, "cola-tiny-suite-clip", embed_dim=16)
    torch.save(open_clip.create_model(arch).state_dict(), tmp_path / "ckpt.pt")
    encoder, info = suite.load_clip_judge(arch, tmp_path / "ckpt.pt", tiny_datasets, limit=3)
    assert isinstance(encoder, OpenClip) and info["source"] == "measured" and info["checkpoint"].endswith("ckpt.pt")

    with pytest.raises(CheckpointError, match="not found"):
        suite.load_clip_judge(tmp_path / "nope", None, tiny_datasets, limit=3)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_clip, bad)
    (bad / REPORT_NAME).write_text("{}")
    with pytest.raises(ValueError, match="not a CLIP report"):
        suite.load_clip_judge(bad, None, tiny_datasets, limit=3)
    with pytest.raises(ValueError, match="need a judge"):
        suite.run_suite([tiny_mm_pipeline], data_root=tiny_datasets, probe_dir=None, clip=tiny_clip, jobs=("images",),
                        progress=False)
    base = ["eval", "suite", "--ckpt", str(tiny_mm_pipeline), "--data", str(tiny_datasets), "--jobs", "images",
            "--json-dir", "", "--no-progress"]
    for extra, message in ((["--clip", str(tmp_path / "nope")], "checkpoint folder not found"),
                           (["--clip", str(bad)], "not a CLIP report"),
                           (["--clip", "no-such-arch", "--clip-checkpoint", str(tmp_path / "ckpt.pt")],
                            "unknown open_clip arch"),
                           (["--clip-checkpoint", str(tmp_path / "ckpt.pt")], "--clip-checkpoint needs --clip")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("cola-mm: error: ") and err.strip().count("\n") == 0 and message in err, err
