"""An n-gram judge of generated text: interpolated Kneser-Ney over the tokenizer's ids, counted on
the training corpus.

Generative perplexity needs a judge, and every neural judge the project can train on this CPU is
a small AR of the same family as one contestant: it scores low-temperature AR text near its own
modes (docs/experiments.md §19). An n-gram model of the training text belongs to neither family.
It sees only the last ``order - 1`` tokens, so it measures local fluency in the corpus's own
terms: how predictable each generated token is from the two before it.

Source: Kneser & Ney 1995; the interpolated form of Chen & Goodman 1998, with one absolute
discount per order (0.75), continuation counts for the lower orders and a uniform distribution
over the vocabulary below the unigrams.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Iterable, Sequence


class KneserNeyLM:
    """Interpolated Kneser-Ney over integer tokens ``0 … vocab_size - 1``.

    ``P_n(w | h) = max(c(h w) - D, 0) / c(h) + D · T(h) / c(h) · P_{n-1}(w | h')``, where ``h'`` drops
    the first token of ``h``, ``c`` are raw counts at the highest order and continuation counts
    (the number of distinct tokens seen before the n-gram) below it, ``T(h)`` is the number of
    distinct tokens seen after ``h``, and a context never seen falls through to the order below.
    ``P_0`` is uniform, so every token of the vocabulary has a probability > 0 and each
    ``P_n(· | h)`` sums to 1."""

    def __init__(self, order: int = 3, vocab_size: int = 0, discount: float = 0.75):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if not 0 < discount < 1:
            raise ValueError(f"discount must be in (0, 1), got {discount}")
        self.order, self.vocab_size, self.discount = order, vocab_size, discount
        # per order n (1 … order): counts[n][(h, w)], totals[n][h] = Σ_w counts, types[n][h] = #{w}
        self.counts: dict[int, Counter] = {}
        self.totals: dict[int, Counter] = {}
        self.types: dict[int, Counter] = {}

    def fit(self, sequences: Iterable[Sequence[int]], start: int | None = None) -> "KneserNeyLM":
        """Count every sequence, each preceded by ``order - 1`` copies of ``start`` (e.g. ``<bos>``)
        when given, so its first tokens are counted in the context they are scored in."""
        pad = [start] * (self.order - 1) if start is not None else []
        top: Counter = Counter()
        for seq in sequences:
            seq = pad + [int(t) for t in seq]
            for i in range(len(seq) - self.order + 1):
                top[tuple(seq[i:i + self.order])] += 1
            if seq:
                self.vocab_size = max(self.vocab_size, max(seq) + 1)
        if not top:
            raise ValueError("no n-grams to count: the sequences are shorter than the order")
        grams = {self.order: top}
        for n in range(self.order - 1, 0, -1):  # continuation counts: distinct left neighbours
            cont: Counter = Counter()
            for gram in grams[n + 1]:
                cont[gram[1:]] += 1
            grams[n] = cont
        for n, table in grams.items():
            counts, totals, types = Counter(), Counter(), Counter()
            for gram, c in table.items():
                h, w = gram[:-1], gram[-1]
                counts[(h, w)] = c
                totals[h] += c
                types[h] += 1
            self.counts[n], self.totals[n], self.types[n] = counts, totals, types
        return self

    def prob(self, word: int, context: Sequence[int]) -> float:
        """``P(word | the last order - 1 tokens of context)``."""
        if not self.counts:
            raise RuntimeError("KneserNeyLM: call fit() first")
        context = tuple(context[len(context) - (self.order - 1):]) if self.order > 1 else ()
        return self._prob(word, context, self.order)

    def _prob(self, word: int, h: tuple, n: int) -> float:
        if n == 0:
            return 1.0 / self.vocab_size
        h = h[len(h) - (n - 1):] if n > 1 else ()
        lower = self._prob(word, h[1:] if h else (), n - 1)
        total = self.totals[n].get(h, 0)
        if total == 0:
            return lower
        c = self.counts[n].get((h, word), 0)
        return max(c - self.discount, 0.0) / total + self.discount * self.types[n][h] / total * lower

    def perplexity(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> float:
        """exp of the mean -log P over the scored tokens of ``rows`` = [(context ids, scored ids)]:
        each scored token is predicted from the context and the scored tokens before it."""
        total, count = 0.0, 0
        for context, scored in rows:
            seq = list(context)
            for w in scored:
                total -= math.log(self.prob(int(w), seq))
                seq.append(int(w))
                count += 1
        return math.exp(total / count) if count else float("nan")


def corpus_ngram_judge(shards, tokenizer, order: int = 3) -> KneserNeyLM:
    """A :class:`KneserNeyLM` of the ``txt`` samples of text shards (e.g. ``datasets/text/train``),
    tokenized by ``tokenizer`` (each document after ``<bos>``)."""
    from cola_mm.data.loader import ShardDataset

    docs = (tokenizer.encode(s["txt"], add_special_tokens=False)
            for s in ShardDataset(shards, required=("txt",), fields=("txt",), epochs=1, rank=0, world_size=1))
    return KneserNeyLM(order, vocab_size=len(tokenizer)).fit(docs, start=tokenizer.bos_token_id)


def ngram_perplexity(texts: Sequence[str], judge: KneserNeyLM, tokenizer,
                     prompts: Sequence[str] | None = None) -> float:
    """Perplexity of the continuation tokens of ``texts`` under ``judge``, scored as
    :func:`cola_mm.evaluation.text_metrics.generative_perplexity` scores them
    (:func:`~cola_mm.evaluation.text_metrics.scored_rows`, token-weighted over all texts)."""
    from cola_mm.evaluation.text_metrics import scored_rows

    return judge.perplexity(scored_rows(texts, tokenizer, prompts))
