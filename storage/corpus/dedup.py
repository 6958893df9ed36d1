"""Deduplication steps (Llama 2 §2.1): exact on a normalized-text hash in DuckDB, then MinHash LSH.

Both keep the first document of a group in corpus order and log every other
one as dropped with the id it duplicates. Near dedup writes `cluster_id` (the id
of the cluster's first document, '' when a document is alone) into metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from . import minhash
from .documents import Document, StepLog

# lowercase, whitespace collapsed, trimmed: two texts differing only in case or spacing are one document
NORMALIZED_HASH_SQL = "md5(trim(regexp_replace(lower(text), '\\s+', ' ', 'g')))"


def text_hashes(texts: Sequence[str]) -> list[str]:
    """The normalized-text hash of each text, computed by DuckDB (vectorised, multi-threaded)."""
    con = duckdb.connect()
    try:
        con.register("docs", pa.table({"row": np.arange(len(texts)), "text": list(texts)}))
        return [r[0] for r in con.execute(f"SELECT {NORMALIZED_HASH_SQL} FROM docs ORDER BY row").fetchall()]
    finally:
        con.close()


def exact_duplicates(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(hash of each text, index of the first text with the same hash; itself when first)."""
    con = duckdb.connect()
    try:
        con.register("docs", pa.table({"row": np.arange(len(texts), dtype=np.int64), "text": list(texts)}))
        rows = con.execute(f"""
            WITH h AS (SELECT row, {NORMALIZED_HASH_SQL} AS hash FROM docs)
            SELECT row, hash, min(row) OVER (PARTITION BY hash) AS first FROM h ORDER BY row""").fetchall()
    finally:
        con.close()
    return [r[1] for r in rows], np.array([r[2] for r in rows], dtype=np.int64)


class ExactDedup:
    name = "exact_dedup"

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        hashes, first = exact_duplicates([d.text for d in docs])
        kept = []
        for i, doc in enumerate(docs):
            doc.metadata["text_hash"] = hashes[i]
            if first[i] != i:
                log.drop(doc, "exact_duplicate", detail=docs[first[i]].id)
            else:
                kept.append(doc)
        return kept


BandRunner = Callable[[np.ndarray, list[list[int]], np.ndarray], list[np.ndarray]]


def run_bands_in_process(sig: np.ndarray, partitions: list[list[int]], has_shingles: np.ndarray,
                         rows: int, max_bucket_pairs: int) -> list[np.ndarray]:
    return [minhash.band_candidates(sig, part, rows, max_bucket_pairs, has_shingles) for part in partitions]


def band_partitions(bands: int, tasks: int) -> list[list[int]]:
    """Bands split into `tasks` contiguous groups (the unit of distribution)."""
    return [list(map(int, part)) for part in np.array_split(np.arange(bands), min(tasks, bands)) if len(part)]


@dataclass
class NearDedupResult:
    cluster: np.ndarray        # (N,) index of the cluster's first doc, -1 when alone
    drop: np.ndarray           # (N,) bool
    pairs: np.ndarray          # (K, 2) verified pairs
    jaccard: np.ndarray        # (K,)
    candidates: int
    stats: dict = field(default_factory=dict)


def near_duplicates(texts: Sequence[str], *, threshold: float = 0.8, ngram: int = 5, bands: int = 20,
                    rows: int = 6, seed: int = 1, prefilter: float = 0.6, max_bucket_pairs: int = 50,
                    band_tasks: int = 4, run_bands=None) -> NearDedupResult:
    """The whole near-dedup computation on a list of texts; `run_bands` can send band partitions to Ray."""
    shingles = minhash.shingle_sets(texts, ngram)
    sig = minhash.signatures(shingles, bands * rows, seed)
    has = shingles.sizes() > 0
    parts = band_partitions(bands, band_tasks)
    runner = run_bands or (lambda s, p, h: run_bands_in_process(s, p, h, rows, max_bucket_pairs))
    found = [c for c in runner(sig, parts, has) if c.size]
    candidates = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), dtype=np.int64)
    pairs, jac = minhash.verify_pairs(shingles, sig, candidates, threshold, prefilter)
    cluster, drop = minhash.clusters_from_pairs(len(texts), pairs)
    return NearDedupResult(cluster, drop, pairs, jac, len(candidates),
                           {"candidates": int(len(candidates)), "verified_pairs": int(len(pairs))})


class NearDedup:
    name = "near_dedup"

    def __init__(self, threshold: float = 0.8, ngram: int = 5, bands: int = 20, rows: int = 6, seed: int = 1,
                 prefilter: float = 0.6, max_bucket_pairs: int = 50, band_tasks: int = 4, run_bands=None):
        self.kwargs = dict(threshold=threshold, ngram=ngram, bands=bands, rows=rows, seed=seed, prefilter=prefilter,
                           max_bucket_pairs=max_bucket_pairs, band_tasks=band_tasks, run_bands=run_bands)

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        result = near_duplicates([d.text for d in docs], **self.kwargs)
        apply_near_dedup(docs, result, log)
        return [d for d, dropped in zip(docs, result.drop) if not dropped]


def apply_near_dedup(docs: Sequence[Document], result: NearDedupResult, log: StepLog) -> None:
    """Write cluster ids into metadata and log dropped documents with the kept partner they duplicate."""
    partner = {}
    for (a, b), j in zip(result.pairs.tolist(), result.jaccard.tolist()):
        if not result.drop[a] and b not in partner:
            partner[b] = (a, j)
    for key, value in result.stats.items():
        log.count(key, value)
    for i, doc in enumerate(docs):
        doc.metadata["cluster_id"] = docs[result.cluster[i]].id if result.cluster[i] >= 0 else ""
        if result.drop[i]:
            a, j = partner[i]
            log.drop(doc, "near_duplicate", detail=f"{docs[a].id} jaccard={j:.3f}")
