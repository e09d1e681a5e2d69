"""The speaker figures (issue 24): prompts end on a held-out play's own character, a
continuation that answers with speech and that play's names scores, one that names the training
plays' characters or opens with another speaker line does not."""

from __future__ import annotations

import math

import pytest

from cola_mm.data.shards import ShardWriter
from cola_mm.evaluation import speakers as S

TRAIN = "ROMEO.\nBut soft, what light.\n\nJULIET.\nAy me.\n\nMESSENGER.\nNews, my lord.\n"
VAL = ("THE TEMPEST\n\nPROSPERO, the right Duke.\nMIRANDA, his daughter.\n\nMESSENGER.\nThe ship is lost.\n\n"
       "MIRANDA.\nIf by your art, my dearest father, you have\nPut the wild waters in this roar.\n\n"
       "PROSPERO.\nBe collected;\nNo more amazement.\n\nMIRANDA.\nO, woe the day!\n\nPROSPERO.\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("plays")
    for split, name, text in (("train", "romeo", TRAIN), ("val", "tempest", VAL)):
        with ShardWriter(root / split) as w:
            w.write("0000", {"txt": text, "json": {"name": name, "split": split}})
    return root


class CharTokenizer:
    """One token per character (so cutting to N tokens keeps the last N characters)."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def test_speaker_lines():
    assert S.speaker_lines("LADY MACBETH.\nOut, damned spot!\nFIRST WITCH.\nWhen shall we three\n"
                           "I said: GO.\nTHE END. Of it\n") == ["LADY MACBETH", "FIRST WITCH"]


def test_prompts_end_on_a_held_out_character_in_a_scene(corpus):
    prompts = S.speaker_prompts(corpus / "val", corpus / "train", CharTokenizer(), 3, prompt_tokens=60)
    # MESSENGER also speaks in training, and the cast list is no scene: only MIRANDA and PROSPERO lines count
    assert [p["speaker"] for p in prompts] == ["PROSPERO", "MIRANDA", "PROSPERO"]
    assert all(p["prompt"].endswith(p["speaker"] + ".\n") and len(p["prompt"]) <= 60 for p in prompts)
    assert all(p["play"] == "tempest" for p in prompts)
    with pytest.raises(ValueError, match="speaker lines of held-out characters"):
        S.speaker_prompts(corpus / "val", corpus / "train", CharTokenizer(), 9)


def test_tuning_prompts_leave_out_the_suites(corpus):
    suite = S.speaker_prompts(corpus / "val", corpus / "train", CharTokenizer(), 1, prompt_tokens=200)
    tuning = S.speaker_prompts(corpus / "val", corpus / "train", CharTokenizer(), 2, prompt_tokens=200, avoid=1)
    assert len(tuning) == 2 and not {p["prompt"] for p in suite} & {p["prompt"] for p in tuning}
    assert [p["speaker"] for p in tuning] == ["MIRANDA", "PROSPERO"]
    with pytest.raises(ValueError, match="speaker lines of held-out characters"):
        S.speaker_prompts(corpus / "val", corpus / "train", CharTokenizer(), 3, avoid=1)


def test_figures_reward_the_right_answer_and_refuse_the_wrong_ones(corpus):
    prompts = S.speaker_prompts(corpus / "val", corpus / "train", CharTokenizer(), 2)
    play = S.speakers_by_play(corpus / "val")
    right = ["Hear me speak, my daughter.\n\nMIRANDA.\nI do, sir.", "Alack, what trouble\n\nPROSPERO.\nPeace."]
    r = S.speaker_figures(right, prompts, play)
    assert r == {"speech_after_speaker": 1.0, "speakers_of_the_play": 1.0, "speaker_lines": 2.0}
    wrong = ["ROMEO.\nHe jests at scars.", "Well.\n\nJULIET.\nO Romeo, Romeo."]  # a speaker line first; a one-word line
    r = S.speaker_figures(wrong, prompts, play)
    assert r["speech_after_speaker"] == 0.0 and r["speakers_of_the_play"] == 0.0 and r["speaker_lines"] == 2
    assert math.isnan(S.speaker_figures(["no names here at all", "none"], prompts, play)["speakers_of_the_play"])
    with pytest.raises(ValueError):
        S.speaker_figures(right[:1], prompts, play)
