"""Deduplication steps (Llama 2 §2.1): exact on a normalized-text hash in DuckDB, then MinHash LSH.

Exact dedup keeps the first document of a group in corpus order; near dedup drops a
document only when an earlier *kept* document is its verified near-duplicate. Both log
every drop with the id of the kept document it duplicates. Near dedup writes
`cluster_id` (the id of the first document of its connected component of verified
pairs, '' when a document is alone) into metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from . import minhash
from .documents import Document, StepLog

# lowercase, whitespace collapsed, trimmed: two texts differing only in case or spacing are one document
NORMALIZED_HASH_SQL = "md5(trim(regexp_replace(lower(text), '\\s+', ' ', 'g')))"


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


class Sketcher(Protocol):
    """(texts, ngram, permutations, seed) -> ((N, permutations) uint32 signatures, (N,) shingle-set sizes):
    `minhash.sketch` here, shard by shard as Ray tasks in flows/corpus.py (rows are per document, so equal)."""

    def __call__(self, texts: Sequence[str], ngram: int, num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]: ...


class BandRunner(Protocol):
    """Runs band partitions and returns one `Candidates` per partition, in order: in process here,
    as Ray tasks with checkpoints in flows/corpus.py (steps never import the executor)."""

    def __call__(self, sig: np.ndarray, has_shingles: np.ndarray, partitions: list[list[int]], rows: int,
                 max_bucket_pairs: int) -> list[minhash.Candidates]: ...


def run_bands_in_process(sig: np.ndarray, has_shingles: np.ndarray, partitions: list[list[int]], rows: int,
                         max_bucket_pairs: int) -> list[minhash.Candidates]:
    return [minhash.band_candidates(sig, part, rows, max_bucket_pairs, has_shingles) for part in partitions]


def band_partitions(bands: int, tasks: int) -> list[list[int]]:
    """Bands split into `tasks` contiguous groups (the unit of distribution)."""
    return [list(map(int, part)) for part in np.array_split(np.arange(bands), min(tasks, bands)) if len(part)]


# Kept documents compared with every kept document to measure what LSH missed (report: "missed");
# 128 keeps the audit at a few seconds per 100k documents.
MISS_AUDIT_SAMPLE = 128


@dataclass
class NearDedupResult:
    cluster: np.ndarray        # (N,) index of the cluster's first doc, -1 when alone (a label, not a removal rule)
    removal: minhash.Removal   # drop mask, the kept partner of each dropped doc, verified pairs
    stats: dict = field(default_factory=dict)

    @property
    def drop(self) -> np.ndarray:
        return self.removal.drop

    @property
    def pairs(self) -> np.ndarray:
        return self.removal.pairs


def near_duplicates(texts: Sequence[str], *, threshold: float = 0.8, ngram: int = 5, bands: int = 20,
                    rows: int = 6, seed: int = 1, prefilter: float = 0.6, max_bucket_pairs: int = 50,
                    band_tasks: int = 4, run_bands: BandRunner = run_bands_in_process,
                    sketcher: Sketcher = minhash.sketch, audit_sample: int = MISS_AUDIT_SAMPLE) -> NearDedupResult:
    """The whole near-dedup computation on a list of texts; `sketcher` decides where signatures are computed
    (per shard on Ray in flows/corpus.py) and `run_bands` where band partitions run.

    Memory: the (N, bands*rows) uint32 signatures, one chunk of shingles, and the shingle sets of one
    batch of candidates; never the whole corpus's shingle sets (benchmarks/corpus.py --million)."""
    sig, sizes = sketcher(texts, ngram, bands * rows, seed)
    shingles = minhash.LazyShingles(texts, ngram, sizes)   # sets rebuilt only for candidates
    has = sizes > 0
    found = run_bands(sig, has, band_partitions(bands, band_tasks), rows, max_bucket_pairs)
    candidates = minhash.Candidates.merge(found)
    removal = minhash.remove_near_duplicates(shingles, sig, candidates, threshold, prefilter)
    sampled, missed = minhash.missed_in_sample(shingles, sig, ~removal.drop, audit_sample, threshold, prefilter) \
        if audit_sample else (0, 0)
    stats = {"candidate_pairs": len(candidates.pairs), "large_buckets": len(candidates.bucket_offsets) - 1,
             "representative_checks": removal.representative_checks, "verified_pairs": len(removal.pairs),
             "audit_kept_sampled": sampled, "audit_missed": missed}
    return NearDedupResult(minhash.cluster_ids(len(texts), removal.pairs), removal, stats)


class NearDedup:
    """MinHash LSH near dedup (Llama 2 §2.1): a document is dropped only for a kept verified near-duplicate."""
    name = "near_dedup"

    def __init__(self, threshold: float = 0.8, ngram: int = 5, bands: int = 20, rows: int = 6, seed: int = 1,
                 prefilter: float = 0.6, max_bucket_pairs: int = 50, band_tasks: int = 4,
                 run_bands: BandRunner = run_bands_in_process, sketcher: Sketcher = minhash.sketch,
                 audit_sample: int = MISS_AUDIT_SAMPLE):
        self.kwargs = dict(threshold=threshold, ngram=ngram, bands=bands, rows=rows, seed=seed, prefilter=prefilter,
                           max_bucket_pairs=max_bucket_pairs, band_tasks=band_tasks, run_bands=run_bands,
                           sketcher=sketcher, audit_sample=audit_sample)

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        result = near_duplicates([d.text for d in docs], **self.kwargs)
        apply_near_dedup(docs, result, log)
        return [d for d, dropped in zip(docs, result.drop) if not dropped]


def apply_near_dedup(docs: Sequence[Document], result: NearDedupResult, log: StepLog) -> None:
    """Write cluster ids into metadata and log dropped documents with the kept partner they duplicate."""
    for key, value in result.stats.items():
        log.count(key, value)
    removal = result.removal
    for i, doc in enumerate(docs):
        doc.metadata["cluster_id"] = docs[result.cluster[i]].id if result.cluster[i] >= 0 else ""
        if removal.drop[i]:
            log.drop(doc, "near_duplicate", detail=f"{docs[removal.partner[i]].id} jaccard={removal.partner_jaccard[i]:.3f}")
