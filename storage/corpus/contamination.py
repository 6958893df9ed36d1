"""Benchmark contamination as in Llama 2 appendix A.6.

A token of an evaluation sample is contaminated when it lies inside a token
n-gram (n = `ngram`, the paper counts matches longer than 10 tokens) that also
occurs in the corpus. A sample's contamination is the share of its tokens that
are contaminated, and the paper's four overlapping buckets follow from it:
clean (< 20%), not clean (>= 20%), not dirty (< 80%), dirty (>= 80%).
Tokens are lowercase words (the paper uses the Llama tokenizer and allows
small skip-grams; exact word n-grams are the stricter, tokenizer-free form).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from . import minhash

BUCKETS = ("clean", "not_clean", "not_dirty", "dirty")


def corpus_ngrams(texts: Sequence[str], ngram: int, chunk: int = 20000) -> np.ndarray:
    """Sorted unique 64-bit hashes of every token n-gram in the corpus."""
    parts = [np.unique(minhash.word_ngram_hashes(texts[i:i + chunk], ngram)[2]) for i in range(0, len(texts), chunk)]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)


def contaminated_shares(samples: Sequence[str], corpus_index: np.ndarray, ngram: int) -> np.ndarray:
    """Share of each sample's tokens covered by an n-gram found in `corpus_index`."""
    docs, position, hashes, counts = minhash.word_ngram_hashes(samples, ngram)
    hit = np.zeros(len(hashes), dtype=bool)
    if corpus_index.size and hashes.size:
        where = np.clip(np.searchsorted(corpus_index, hashes), 0, corpus_index.size - 1)
        hit = corpus_index[where] == hashes
    shares = np.zeros(len(samples))
    for i in range(len(samples)):
        if counts[i] == 0:
            continue
        covered = np.zeros(counts[i] + 1, dtype=np.int64)
        starts = position[(docs == i) & hit]
        np.add.at(covered, starts, 1)               # difference array over token positions
        np.add.at(covered, starts + ngram, -1)
        shares[i] = (np.cumsum(covered)[:counts[i]] > 0).mean()
    return shares


@dataclass
class ContaminationReport:
    table: pa.Table                 # one row per sample: eval_set, sample_id, share, four bucket flags
    summary: dict[str, dict[str, int]]


def contamination(eval_sets: dict[str, Sequence[tuple[str, str]]], corpus_texts: Sequence[str], ngram: int = 10,
                  clean_below: float = 0.2, dirty_from: float = 0.8) -> ContaminationReport:
    """`eval_sets`: name -> [(sample id, text)]. Summary: name -> bucket -> sample count (+ 'samples')."""
    index = corpus_ngrams(list(corpus_texts), ngram)
    rows: dict[str, list] = {k: [] for k in ("eval_set", "sample_id", "share", *BUCKETS)}
    summary: dict[str, dict[str, int]] = {}
    for name, samples in eval_sets.items():
        shares = contaminated_shares([t for _, t in samples], index, ngram)
        flags = {"clean": shares < clean_below, "not_clean": shares >= clean_below,
                 "not_dirty": shares < dirty_from, "dirty": shares >= dirty_from}
        summary[name] = {"samples": len(samples), **{b: int(flags[b].sum()) for b in BUCKETS}}
        rows["eval_set"] += [name] * len(samples)
        rows["sample_id"] += [sid for sid, _ in samples]
        rows["share"] += shares.tolist()
        for b in BUCKETS:
            rows[b] += flags[b].tolist()
    return ContaminationReport(pa.table(rows), summary)
