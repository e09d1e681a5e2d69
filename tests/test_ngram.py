"""The n-gram judge (:mod:`cola_mm.evaluation.ngram`): a proper distribution, Kneser-Ney's
continuation counts, and a perplexity that ranks real held-out text above damaged text of the
same words."""

from __future__ import annotations

import math
import random

import pytest

from cola_mm.evaluation.ngram import KneserNeyLM, corpus_ngram_judge, ngram_perplexity


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_gives_a_distribution(order):
    rng = random.Random(order)
    seqs = [[rng.randrange(12) for _ in range(rng.randrange(3, 30))] for _ in range(20)]
    lm = KneserNeyLM(order, vocab_size=15).fit(seqs, start=0)
    for context in ([], [1], [3, 4], [5, 5, 5], [14, 13, 14], seqs[0][:5]):
        probs = [lm.prob(w, context) for w in range(15)]
        assert sum(probs) == pytest.approx(1.0, abs=1e-9)
        assert min(probs) > 0  # tokens never seen (12, 13, 14) still have mass, from the uniform floor


def test_kneser_ney_counts_contexts_not_occurrences():
    # "francisco" is frequent but only ever after "san"; "glasses" is rarer but follows many words.
    seqs = [[1, 2]] * 50 + [[w, 3] for w in range(4, 14)]  # 1 = san, 2 = francisco, 3 = glasses
    lm = KneserNeyLM(2, vocab_size=20).fit(seqs)
    # after an unseen context the unigram level decides: continuation counts favour "glasses"
    assert lm.prob(3, [19]) > lm.prob(2, [19])
    # after "san", "francisco" is near-certain
    assert lm.prob(2, [1]) > 0.9
    # the highest order uses raw counts: a seen bigram beats the same word in an unseen context
    assert lm.prob(2, [1]) > lm.prob(2, [19])


def test_perplexity_is_the_exp_of_the_mean_surprise():
    lm = KneserNeyLM(2, vocab_size=6).fit([[0, 1, 2, 3, 1, 2], [1, 2, 4]])
    rows = [([0], [1, 2]), ([3], [1])]
    surprise = -(math.log(lm.prob(1, [0])) + math.log(lm.prob(2, [0, 1])) + math.log(lm.prob(1, [3])))
    assert lm.perplexity(rows) == pytest.approx(math.exp(surprise / 3))
    assert math.isnan(lm.perplexity([]))


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="order must be >= 1"):
        KneserNeyLM(0)
    with pytest.raises(ValueError, match="discount must be in"):
        KneserNeyLM(3, discount=1.5)
    with pytest.raises(ValueError, match="no n-grams"):
        KneserNeyLM(3).fit([[1]])
    with pytest.raises(RuntimeError, match="fit"):
        KneserNeyLM(3).prob(1, [])


def test_real_held_out_text_beats_the_same_words_shuffled_and_gibberish(tiny_datasets):
    from cola_mm.evaluation.context import read_windows
    from cola_mm.vae_text.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_datasets / "tokenizer")
    judge = corpus_ngram_judge(tiny_datasets / "text" / "train", tok)
    ids = read_windows(tiny_datasets / "text" / "val", tok, 8, seq_len=48)
    prompts = [tok.decode(r[:24].tolist(), skip_special_tokens=True) for r in ids]
    real = [tok.decode(r[24:].tolist(), skip_special_tokens=True) for r in ids]
    rng = random.Random(0)
    shuffled = []
    for text in real:
        words = text.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    letters = "bcdfghjklmnpqrstvwxz"
    gibberish = [" ".join("".join(rng.choice(letters) for _ in range(6)) for _ in range(10)) for _ in real]
    ppl = {name: ngram_perplexity(texts, judge, tok, prompts)
           for name, texts in (("real", real), ("shuffled", shuffled), ("gibberish", gibberish))}
    assert ppl["real"] < ppl["shuffled"] < ppl["gibberish"], ppl
    assert ppl["real"] < len(tok)  # better than guessing uniformly
    with pytest.raises(ValueError, match="prompts for"):
        ngram_perplexity(real, judge, tok, prompts[:1])
