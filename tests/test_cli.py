"""The cola-mm command line: help on every subcommand, one-line errors, the data pipeline end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cola_mm.cli import main
from cola_mm.data.loader import ShardDataset

SUBCOMMANDS = [["data"], ["data", "shapes"], ["data", "digits"], ["data", "text"], ["data", "all"],
               ["train"], ["generate"], ["generate", "text"], ["eval"], ["eval", "text-vae"],
               ["tokenizer"], ["tokenizer", "train"], ["serve"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_help_on_every_subcommand(words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(words + ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cola-mm " + " ".join(words))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cola_mm.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_bad_input_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["data", "shapes", "--out", str(tmp_path / "s"), "--count", "0"], "positive integer"),
        (["data", "shapes", "--out", str(tmp_path / "s"), "--size", "abc"], "positive integer"),
        (["data", "text", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "t")], "missing"),
        (["data", "text", "--source", str(empty), "--out", str(tmp_path / "t")], "empty"),
        (["tokenizer", "train", "--data", str(empty), "--out", str(tmp_path / "tok")], "no shards"),
    ]
    for argv, needle in cases:
        proc = run_cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0] and needle in lines[0], (argv, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_existing_shards_are_not_overwritten(tmp_path, capsys):
    out = str(tmp_path / "shapes")
    assert main(["data", "shapes", "--out", out, "--count", "12", "--shard-size", "5"]) == 0
    before = (tmp_path / "shapes" / "train" / "000000.tar").read_bytes()
    assert main(["data", "shapes", "--out", out, "--count", "7", "--seed", "9"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "shapes" / "train" / "000000.tar").read_bytes() == before
    assert main(["data", "shapes", "--out", out, "--count", "7", "--overwrite"]) == 0
    assert len(list(ShardDataset(tmp_path / "shapes" / "train", required=("image",)))) == 7


def test_data_all_builds_every_dataset_and_the_tokenizer(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"book{i}.txt").write_text(
            "\n\n".join(f"Chapter {j}. The quick brown fox number {i} jumps over the lazy dog."
                        for j in range(40)), encoding="utf-8")
    root = tmp_path / "datasets"
    argv = ["data", "all", "--out", str(root), "--shapes-count", "40", "--text-source", str(corpus),
            "--vocab-size", "400", "--doc-chars", "300", "--icons-count", "20"]
    assert main(argv) == 0
    shapes = json.loads((root / "shapes" / "manifest.json").read_text())
    assert {k: v["count"] for k, v in shapes["splits"].items()} == {"train": 40, "val": 4, "test": 4, "novel": 4,
                                                                   "two": 4, "heldout-phrasing": 4}
    assert all(v["overlap_with_train"]["images"] == 0 for k, v in shapes["splits"].items() if k != "train")
    digits = json.loads((root / "digits" / "manifest.json").read_text())
    assert sum(digits["splits"][k]["count"] for k in ("train", "val", "test")) == 1797
    assert digits["splits"]["heldout-phrasing"]["count"] == 300  # the test scans, held-out wording
    assert (root / "text" / "manifest.json").is_file()
    icons = json.loads((root / "icons" / "manifest.json").read_text())  # optional; the test command installs its font
    assert {k: v["count"] for k, v in icons["splits"].items()} == {"train": 20, "val": 2, "test": 2, "novel": 2,
                                                                  "two": 2, "heldout-phrasing": 2}
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    text = "a large red circle in the top left"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    # idempotent: a second run keeps what exists
    stamp = (root / "tokenizer" / "tokenizer.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (root / "tokenizer" / "tokenizer.json").stat().st_mtime_ns == stamp


def test_job_commands_default_to_the_bundled_checkpoint(tmp_path):
    """generate text / generate image / caption work without --ckpt, from any folder."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = dict(capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "text", "--prompt", "ROMEO. ",
                        "--max-new-tokens", "8"], **common)
    assert r.returncode == 0 and r.stdout.startswith("ROMEO. ") and len(r.stdout.strip()) > len("ROMEO."), r.stderr
    out = tmp_path / "img.png"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "image", "--prompt", "a large red circle",
                        "--out", str(out)], **common)
    assert r.returncode == 0 and out.is_file(), r.stderr
    example = repo / "apps" / "examples" / "digit_3.png"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "caption", str(example)], **common)
    assert r.returncode == 0 and r.stdout.startswith(f"{example}\t") and r.stdout.split("\t")[1].strip(), r.stderr


def test_regression_invalid_utf8_in_argv(tmp_path):
    """Invalid UTF-8 bytes in a prompt reach Python as lone surrogates; they once crashed
    `generate text|image` with a tokenizer traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LC_ALL": "C.UTF-8"}
    common = dict(capture_output=True, timeout=180, cwd=tmp_path, env=env)
    cli = [sys.executable.encode(), b"-m", b"cola_mm.cli", b"generate"]
    r = subprocess.run(cli + [b"text", b"--prompt", b"ROMEO\xff\xfe. ", b"--max-new-tokens", b"4"], **common)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout.decode().startswith("ROMEO\ufffd\ufffd. ")
    assert b"not valid Unicode" in r.stderr and b"Traceback" not in r.stderr
    out = tmp_path / "img.png"
    r = subprocess.run(cli + [b"image", b"--prompt", b"a red \xc3 circle", b"--out", str(out).encode()], **common)
    assert r.returncode == 0 and out.is_file(), r.stderr.decode(errors="replace")
    assert b"not valid Unicode" in r.stderr
