"""Benchmark contamination as in Llama 2 appendix A.6.

The paper's rule: a token of an evaluation sample is contaminated when it lies in a token span of at
least `ngram` (10) tokens that also occurs in the training set ("10(+)-skipgrams"); to absorb format
differences, a matched span may differ from the training text in up to `skip_budget` (4) positions,
but not in its first `ngram` tokens and not at its end (no trailing mismatches). A sample's
contamination is the share of its tokens that are contaminated; the four overlapping buckets are
Clean (< 20%), Not Clean (>= 20%), Not Dirty (< 80%) and Dirty (>= 80%). When samples carry a score
(1 if the model answered correctly, say), each bucket's mean score is set against the whole set's as
in the paper's Table 51: Zn = (mean of the bucket - mean of the set) / (std of the mean of n samples
drawn at random from the set).

Tokens come from a tokenizer passed in (the project's BPE tokenizer when one is published, as the
paper counts Llama tokens), or lowercase words. Spans are found by seeding on exact `ngram`-grams
(hashed, then checked token by token) and extending each occurrence to the right within the budget.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

BUCKETS = ("clean", "not_clean", "not_dirty", "dirty")
Tokenizer = Callable[[str], Sequence[int] | Sequence[str]]

_WORDS = re.compile(r"[^\s!-/:-@\[-`{-~]+")  # minhash's word: no whitespace or ASCII punctuation
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9))
_SEPARATOR = -1   # between corpus documents: no span crosses it


def word_tokens(text: str) -> list[str]:
    """The tokenizer used when the project has none: lowercase words, ASCII punctuation dropped."""
    return _WORDS.findall(text.lower())


class _Ids:
    """Token -> integer id, shared by the corpus and the samples (str tokens get ids on first sight)."""

    def __init__(self, tokenize: Tokenizer):
        self.tokenize, self.vocab = tokenize, {}

    def __call__(self, text: str) -> np.ndarray:
        tokens = self.tokenize(text)
        if tokens and isinstance(tokens[0], str):
            tokens = [self.vocab.setdefault(t, len(self.vocab)) for t in tokens]
        return np.asarray(tokens, dtype=np.int64)


def _ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """(len - n + 1,) uint64 hash of each n-gram starting there (a polynomial over mixed ids)."""
    if tokens.size < n:
        return np.zeros(0, np.uint64)
    mixed = (tokens.astype(np.uint64) + _MIX[1]) * _MIX[0]
    h = np.zeros(tokens.size - n + 1, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _MIX[1] + mixed[j:j + h.size]
    return h


@dataclass
class CorpusIndex:
    """Every corpus token in one array (documents separated by -1) and its `ngram`-grams sorted by hash."""
    tokens: np.ndarray      # (T,) int64
    hashes: np.ndarray      # (G,) uint64, sorted
    positions: np.ndarray   # (G,) int64: where each n-gram starts in `tokens`
    ngram: int

    @classmethod
    def build(cls, texts: Sequence[str], ids: Callable[[str], np.ndarray], ngram: int) -> "CorpusIndex":
        parts = []
        for text in texts:
            parts += [ids(text), np.array([_SEPARATOR], np.int64)]
        tokens = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        hashes = _ngram_hashes(tokens, ngram)
        # an n-gram is valid when no separator falls inside it
        seps = np.concatenate(([0], np.cumsum(tokens == _SEPARATOR)))
        valid = np.flatnonzero(seps[ngram:ngram + hashes.size] == seps[:hashes.size])
        order = np.argsort(hashes[valid], kind="stable")
        return cls(tokens, hashes[valid][order], valid[order].astype(np.int64), ngram)

    def occurrences(self, gram_hash: np.uint64, limit: int) -> np.ndarray:
        lo = int(np.searchsorted(self.hashes, gram_hash, side="left"))
        hi = int(np.searchsorted(self.hashes, gram_hash, side="right"))
        return self.positions[lo:min(hi, lo + limit)]


def matched_spans(sample: np.ndarray, index: CorpusIndex, skip_budget: int, max_occurrences: int = 64) -> list[tuple[int, int]]:
    """[start, end) spans of `sample` matched in the corpus: an exact `ngram`-token seed, extended to the
    right while at most `skip_budget` tokens differ from the aligned corpus tokens; the span ends at the
    last token that matches (A.6: no trailing mismatches, none in the first `ngram` tokens)."""
    n, corpus = index.ngram, index.tokens
    spans = []
    for i, h in enumerate(_ngram_hashes(sample, n).tolist()):
        end = 0
        for c in index.occurrences(np.uint64(h), max_occurrences).tolist():
            if not np.array_equal(corpus[c:c + n], sample[i:i + n]):   # a hash collision, not a match
                continue
            last, misses, j, k = i + n, 0, i + n, c + n
            while j < sample.size and k < corpus.size and corpus[k] != _SEPARATOR:
                if sample[j] == corpus[k]:
                    last = j + 1
                else:
                    misses += 1
                    if misses > skip_budget:
                        break
                j, k = j + 1, k + 1
            end = max(end, last)
        if end:
            spans.append((i, end))
    return spans


def contaminated_share(sample: np.ndarray, index: CorpusIndex, skip_budget: int) -> float:
    """Share of the sample's tokens inside any matched span."""
    if not sample.size:
        return 0.0
    covered = np.zeros(sample.size + 1, np.int64)
    for start, end in matched_spans(sample, index, skip_budget):
        covered[start] += 1
        covered[end] -= 1
    return float((np.cumsum(covered)[:-1] > 0).mean())


def bucket_flags(shares: np.ndarray, clean_below: float, dirty_from: float) -> dict[str, np.ndarray]:
    return {"clean": shares < clean_below, "not_clean": shares >= clean_below,
            "not_dirty": shares < dirty_from, "dirty": shares >= dirty_from}


def score_table(shares: np.ndarray, scores: np.ndarray, flags: dict[str, np.ndarray]) -> list[dict]:
    """Table 51's rows for one evaluation set: per bucket, samples n, mean contamination %, mean score X,
    the set's mean mu_n (what n random samples average to) and Zn = (X - mu_n) / sigma_n, where
    sigma_n = sigma * sqrt((N - n) / (N - 1)) / sqrt(n) is the standard deviation of the mean of n
    samples drawn without replacement from the N scored samples (NaN when undefined)."""
    total, mu, sigma = scores.size, float(scores.mean()), float(scores.std())
    rows = []
    for bucket in BUCKETS:
        mask = flags[bucket]
        n = int(mask.sum())
        mean = float(scores[mask].mean()) if n else math.nan
        sigma_n = sigma * math.sqrt((total - n) / (total - 1)) / math.sqrt(n) if n and total > 1 else 0.0
        z = (mean - mu) / sigma_n if sigma_n > 0 else math.nan
        rows.append({"bucket": bucket, "n": n, "avg_contamination_pct": 100 * float(shares[mask].mean()) if n else math.nan,
                     "mean_score": mean, "mu_n": mu, "z_n": z})
    return rows


@dataclass
class ContaminationReport:
    table: pa.Table                          # one row per sample: eval_set, sample_id, share, four bucket flags
    summary: dict[str, dict[str, int]]       # eval set -> bucket -> samples (+ 'samples')
    scores: dict[str, list[dict]]            # eval set -> Table 51 rows, for sets whose samples all have a score


def contamination(eval_sets: dict[str, Sequence[tuple]], corpus_texts: Sequence[str], ngram: int = 10,
                  clean_below: float = 0.2, dirty_from: float = 0.8, skip_budget: int = 4,
                  tokenize: Tokenizer = word_tokens) -> ContaminationReport:
    """`eval_sets`: name -> [(sample id, text)] or [(sample id, text, score)]; a set gets Table 51 rows
    when every sample has a score that is not None."""
    ids = _Ids(tokenize)
    index = CorpusIndex.build(list(corpus_texts), ids, ngram)
    rows: dict[str, list] = {k: [] for k in ("eval_set", "sample_id", "share", *BUCKETS)}
    summary: dict[str, dict[str, int]] = {}
    scores: dict[str, list[dict]] = {}
    for name, samples in eval_sets.items():
        shares = np.array([contaminated_share(ids(s[1]), index, skip_budget) for s in samples], dtype=np.float64)
        flags = bucket_flags(shares, clean_below, dirty_from)
        summary[name] = {"samples": len(samples), **{b: int(flags[b].sum()) for b in BUCKETS}}
        if samples and all(len(s) > 2 and s[2] is not None for s in samples):
            scores[name] = score_table(shares, np.array([float(s[2]) for s in samples]), flags)
        rows["eval_set"] += [name] * len(samples)
        rows["sample_id"] += [s[0] for s in samples]
        rows["share"] += shares.tolist()
        for b in BUCKETS:
            rows[b] += flags[b].tolist()
    return ContaminationReport(pa.table(rows), summary, scores)
