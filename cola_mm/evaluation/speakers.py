"""Does a continuation answer the speaker its prompt names? (issue 24: "a speaker named in the
prompt is answered in kind").

The plays mark each speech with its speaker alone on a line (``MACBETH.``, ``LADY MACBETH.``).
The held-out plays (``text/val``) are never seen in training, so their own characters' names can
only come from the prompt. Prompts here are the text of a held-out play up to and including the
line of a speaker who belongs to that play only (no training play has a speaker of that name),
cut to their last ``prompt_tokens`` tokens. Two figures of the continuations:

* ``speech_after_speaker``: the continuation's first non-empty line is speech (at least two words,
  not another speaker line): the line the prompt opened is answered;
* ``speakers_of_the_play``: of the speaker lines the continuation writes, the share naming a
  speaker of the prompt's play (one the model can only have read in the prompt, or a common one
  such as ``MESSENGER.`` that the play also has); the rest are the training plays' characters.
  ``speaker_lines`` counts them (the rate is NaN without any).

A model that ignores its context writes some speech but names the training plays' characters.
"""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from typing import Sequence

SPEAKER = re.compile(r"^([A-Z][A-Z'\-]*(?: [A-Z][A-Z'\-]*)*)\.\s*$")
WORD = re.compile(r"[A-Za-z]+")


def speaker_lines(text: str) -> list[str]:
    """The speaker names of ``text``'s speaker lines (``NAME.`` alone on a line), in order."""
    return [m.group(1) for line in text.splitlines() if (m := SPEAKER.match(line.strip()))]


def _documents(shards: str | os.PathLike) -> tuple[tuple[str, str], ...]:
    """(play name, document text) of every document of a text split, in shard order (read once
    per folder: a suite run asks for the same splits for every checkpoint)."""
    return _read_documents(str(Path(shards).resolve()))


@functools.lru_cache(maxsize=4)
def _read_documents(shards: str) -> tuple[tuple[str, str], ...]:
    from cola_mm.data.loader import ShardDataset

    return tuple((s["json"].get("name", ""), s["txt"]) for s in ShardDataset(Path(shards), required=("txt", "json"),
                                                                             epochs=1))


def speakers_by_play(shards: str | os.PathLike) -> dict[str, set[str]]:
    """{play name: the speaker names its documents use} of a text split."""
    out: dict[str, set[str]] = {}
    for play, text in _documents(shards):
        out.setdefault(play, set()).update(speaker_lines(text))
    return out


def _evenly(items: list, n: int) -> list:
    return [items[round(i * (len(items) - 1) / max(n - 1, 1))] for i in range(n)]


def speaker_prompts(val: str | os.PathLike, train: str | os.PathLike, tokenizer, n: int,
                    prompt_tokens: int = 48, avoid: int = 0) -> list[dict]:
    """``n`` prompts (evenly spaced over the candidates): ``{"prompt", "play", "speaker"}``, each
    the held-out text up to a line naming a speaker of its play only, cut to ``prompt_tokens``
    tokens (whole tokens from the end; the speaker line is always whole). ``avoid``: leave out
    the candidates that a call with ``n=avoid`` picks (the suite's), so that tuning prompts never
    include the suite's."""
    seen_in_training = set().union(*speakers_by_play(train).values()) if Path(train).is_dir() else set()
    candidates = []
    for play, text in _documents(val):
        offset, earlier = 0, 0
        for line in text.splitlines(keepends=True):
            offset += len(line)
            m = SPEAKER.match(line.strip())
            if m and m.group(1) not in seen_in_training and earlier >= 2:  # in a scene, not the cast list
                candidates.append((play, m.group(1), text[:offset]))
            earlier += bool(m)
    if avoid:
        taken = {id(c) for c in _evenly(candidates, avoid)}
        candidates = [c for c in candidates if id(c) not in taken]
    if len(candidates) < n:
        raise ValueError(f"{val}: {len(candidates)} speaker lines of held-out characters, {n} asked for")
    picks = _evenly(candidates, n)
    out = []
    for play, speaker, text in picks:
        ids = tokenizer.encode(text, add_special_tokens=False)[-prompt_tokens:]
        prompt = tokenizer.decode(ids, skip_special_tokens=True)
        out.append({"prompt": prompt, "play": play, "speaker": speaker})
    return out


def speaker_figures(continuations: Sequence[str], prompts: Sequence[dict],
                    play_speakers: dict[str, set[str]]) -> dict[str, float]:
    """``speech_after_speaker``, ``speakers_of_the_play`` and ``speaker_lines`` (module docstring)."""
    if len(continuations) != len(prompts):
        raise ValueError(f"{len(continuations)} continuations for {len(prompts)} prompts")
    speech, own, lines = 0, 0, 0
    for text, p in zip(continuations, prompts):
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        speech += int(not SPEAKER.match(first) and len(WORD.findall(first)) >= 2)
        names = speaker_lines(text)
        lines += len(names)
        own += sum(name in play_speakers.get(p["play"], ()) for name in names)
    return {"speech_after_speaker": speech / max(len(prompts), 1),
            "speakers_of_the_play": own / lines if lines else math.nan, "speaker_lines": float(lines)}
