"""Near-dedup benchmark: alignline's MinHash LSH vs datasketch MinHashLSH vs datatrove's MinHash pipeline.

One run, one corpus: real text found on this machine (man pages, READMEs and
copyright files, Python docstrings of the stdlib and installed packages; exact
copies removed) plus synthetic near-duplicates made by replacing 1-12% of a
document's words. Ground truth: every pair with exact Jaccard >= 0.8 on word
5-gram shingle sets, found exhaustively by prefix filtering (AllPairs; a pair
with J >= t must share a token among the rarest |s| - ceil(t|s|) + 1 of each
set) and checked exactly. All three methods see the same shingles
(lowercase words split on whitespace and ASCII punctuation, 5-grams) and the
same 120 permutations.

    python benchmarks/dedup.py --docs 100000 [--scaling 10000,100000] [--skip-datatrove]
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import random
import re
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from alignline.storage.corpus import minhash
from alignline.storage.corpus.dedup import near_duplicates
from alignline.storage.corpus.normalize import normalize_text
from alignline.storage.corpus.sources import local_records

THRESHOLD, NGRAM, BANDS, ROWS = 0.8, 5, 20, 6
NUM_PERM = BANDS * ROWS
_SPLIT = re.compile(r"[\s!-/:-@\[-`{-~\x00]+")  # same separators as minhash._SEPARATOR


class PeakRSS:
    """Peak resident memory above the starting level, sampled every 10 ms."""

    def __enter__(self):
        gc.collect()
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        self.start = time.perf_counter()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.running = False
        self.thread.join()
        self.mb = (self.peak - self.base) / 2**20


def build_corpus(n: int, seed: int = 0, min_words: int = 30) -> tuple[list[str], int]:
    """(texts, number of real documents); synthetic copies are appended after the real ones."""
    n_real = int(n * 0.8)
    real, seen = [], set()
    for record in local_records(1_000_000, include_site_packages=True):
        if not hasattr(record, "text"):
            continue
        text = normalize_text(record.text)
        if len(text.split()) < min_words or text in seen:
            continue
        seen.add(text)
        real.append(text)
        if len(real) >= n_real:
            break
    rng = random.Random(seed)
    synthetic = []
    while len(real) + len(synthetic) < n:
        words = rng.choice(real).split()
        fraction = rng.choice([0.01, 0.02, 0.03, 0.05, 0.08, 0.12])
        for i in rng.sample(range(len(words)), max(1, int(fraction * len(words)))):
            words[i] = f"edit{rng.randrange(10**9)}"
        synthetic.append(" ".join(words))
    return real + synthetic, len(real)


def ground_truth(shingles: minhash.Shingles, t: float) -> set[tuple[int, int]]:
    sizes = shingles.sizes()
    values = shingles.values
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    rank = np.argsort(np.argsort(counts, kind="stable"), kind="stable")[inverse]  # rarest first
    docs = np.repeat(np.arange(len(sizes)), sizes)
    order = np.lexsort((rank, docs))                     # per doc, rarest token first
    position = np.arange(values.size) - np.repeat(shingles.offsets[:-1], sizes)
    prefix_len = sizes - np.ceil(t * sizes).astype(np.int64) + 1
    in_prefix = position < np.repeat(prefix_len, sizes)
    tok, doc = rank[order][in_prefix], docs[order][in_prefix]
    by_tok = np.lexsort((doc, tok))
    tok, doc = tok[by_tok], doc[by_tok]
    starts = np.flatnonzero(np.concatenate(([True], tok[1:] != tok[:-1])))
    ends = np.append(starts[1:], tok.size)
    truth = set()
    checked = set()
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        members = doc[s:e]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = int(members[i]), int(members[j])
                if (a, b) in checked:
                    continue
                checked.add((a, b))
                sa, sb = sizes[a], sizes[b]
                if min(sa, sb) < t * max(sa, sb):
                    continue
                if minhash.exact_jaccard(shingles.of(a), shingles.of(b)) >= t:
                    truth.add((a, b))
    return truth


def prf(found: set, truth: set) -> tuple[float, float, float]:
    tp = len(found & truth)
    p = tp / len(found) if found else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def bad_removals(removed: np.ndarray, truth: set) -> int:
    """Removed documents with no J >= 0.8 partner that was kept (text lost, not deduplicated)."""
    partners: dict[int, list[int]] = {}
    for a, b in truth:
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    return int(sum(not any(not removed[p] for p in partners.get(int(i), ())) for i in np.flatnonzero(removed)))


def transitive_removal(n: int, pairs) -> np.ndarray:
    uf = minhash.UnionFind(n)
    for a, b in pairs:
        uf.union(int(a), int(b))
    roots = np.array([uf.find(i) for i in range(n)])
    return roots != np.arange(n)


def run_ours(texts):
    result = near_duplicates(texts, threshold=THRESHOLD, ngram=NGRAM, bands=BANDS, rows=ROWS, band_tasks=1)
    return {tuple(p) for p in result.pairs.tolist()}, result.drop, result.candidates


def words(text: str) -> list[str]:
    return [w for w in _SPLIT.split(text.lower()) if w]


def run_datasketch(texts):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    sketches = []
    for i, text in enumerate(texts):
        w = words(text)
        grams = {" ".join(w[j:j + NGRAM]).encode() for j in range(len(w) - NGRAM + 1)}
        if not grams:
            sketches.append(None)
            continue
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch(list(grams))
        lsh.insert(i, m)
        sketches.append(m)
    pairs = set()
    for i, m in enumerate(sketches):
        if m is not None:
            pairs.update((min(i, j), max(i, j)) for j in lsh.query(m) if j != i)
    return pairs, lsh.b, lsh.r


def run_datatrove(texts, workdir: Path):
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupSignature)
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):  # its default English tokenizer is ~6x slower (shared/INTEGRATION.md)
        def word_tokenize(self, text):
            return words(text)

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    sig = MinhashDedupSignature(output_folder=str(workdir / "sigs"), config=cfg, language=SplitTokenizer())
    # datatrove 0.10.1 passes str to xxhash, which the installed xxhash refuses: encode first
    import xxhash

    sig._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode())
    LocalPipelineExecutor(pipeline=[docs, sig], tasks=1, workers=1, logging_dir=str(workdir / "l1")).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(str(workdir / "sigs"), str(workdir / "buckets"), config=cfg)],
                          tasks=BANDS, workers=1, logging_dir=str(workdir / "l2")).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(str(workdir / "buckets"), str(workdir / "remove"), config=cfg)],
                          tasks=1, workers=1, logging_dir=str(workdir / "l3")).run()
    pairs = set()
    for f in (workdir / "buckets").glob("*.dups"):
        data = f.read_bytes()
        for f1, d1, f2, d2 in struct.iter_unpack("<4I", data):
            pairs.add((min(d1, d2), max(d1, d2)))
    removed = np.zeros(len(texts), dtype=bool)
    for f in (workdir / "remove").glob("*.remove"):
        for (d,) in struct.iter_unpack("<I", f.read_bytes()):
            removed[d] = True
    return pairs, removed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--scaling", default="10000,100000", help="sizes for our scaling curve (1000000 if it fits)")
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("DATATROVE_DISABLE_PROGRESS", "1")
    sizes = sorted({int(s) for s in args.scaling.split(",") if s} | {args.docs})
    t0 = time.perf_counter()
    corpus, n_real = build_corpus(max(sizes))
    print(f"corpus: {len(corpus):,} docs ({n_real:,} real local, {len(corpus) - n_real:,} synthetic edits), "
          f"{sum(len(t.split()) for t in corpus[:args.docs]):,} words in the benchmark slice; built in {time.perf_counter() - t0:.0f}s")
    texts = corpus[:args.docs] if args.docs < len(corpus) else corpus
    if args.docs < len(corpus):  # keep synthetic copies in the slice: real prefix + its share of synthetic
        texts = corpus[:int(args.docs * 0.8)] + [t for t in corpus[n_real:]][:args.docs - int(args.docs * 0.8)]
    n = len(texts)
    t0 = time.perf_counter()
    shingles = minhash.shingle_sets(texts, NGRAM)
    truth = ground_truth(shingles, THRESHOLD)
    print(f"ground truth: {len(truth):,} pairs with exact Jaccard >= {THRESHOLD} ({time.perf_counter() - t0:.0f}s)")
    del shingles
    rows = []

    with PeakRSS() as m:
        ours, drop, candidates = run_ours(texts)
    p, r, f = prf(ours, truth)
    rows.append(("alignline (LSH 20x6 + exact Jaccard)", p, r, f, n / m.seconds, m.mb, int(drop.sum()), bad_removals(drop, truth), m.seconds))
    print(f"  ours: {candidates:,} candidates, {len(ours):,} verified pairs")

    with PeakRSS() as m:
        ds_pairs, b, rr = run_datasketch(texts)
    p, r, f = prf(ds_pairs, truth)
    ds_removed = transitive_removal(n, ds_pairs)
    rows.append((f"datasketch MinHashLSH ({b}x{rr}, raw candidates)", p, r, f, n / m.seconds, m.mb, int(ds_removed.sum()),
                 bad_removals(ds_removed, truth), m.seconds))
    p, r, f = prf(ds_pairs & truth, truth)
    rows.append(("datasketch + exact verification (recall bound)", p, r, f, float("nan"), float("nan"), -1, -1, float("nan")))

    if not args.skip_datatrove:
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as m:
            dt_pairs, dt_removed = run_datatrove(texts, Path(tmp))
        p, r, f = prf(dt_pairs, truth)
        rows.append(("datatrove MinHash (20x6, split tokenizer)", p, r, f, n / m.seconds, m.mb, int(dt_removed.sum()),
                     bad_removals(dt_removed, truth), m.seconds))

    print(f"\nnear-duplicate pairs at Jaccard >= {THRESHOLD}, {n:,} documents, 1 process")
    print(f"{'method':<48} {'prec':>6} {'recall':>6} {'F1':>6} {'docs/s':>9} {'peak MB':>8} {'removed':>8} {'bad rm':>7} {'sec':>7}")
    for name, p, r, f, dps, mb, removed, bad, sec in rows:
        print(f"{name:<48} {p:6.3f} {r:6.3f} {f:6.3f} {dps:9,.0f} {mb:8.0f} {removed:8} {bad:7} {sec:7.1f}")
    ours_dps = rows[0][4]
    print(f"\nthroughput ratio vs datasketch: {ours_dps / rows[1][4]:.1f}x")
    if not args.skip_datatrove:
        print(f"throughput ratio vs datatrove:  {ours_dps / rows[-1][4]:.1f}x")

    print("\nscaling (alignline near dedup only)")
    print(f"{'docs':>10} {'seconds':>8} {'docs/s':>9} {'peak MB':>8} {'MB per 1M docs':>15}")
    for size in sizes:
        if size > len(corpus):
            continue
        sub = corpus[:size]
        with PeakRSS() as m:
            run_ours(sub)
        print(f"{size:>10,} {m.seconds:8.1f} {size / m.seconds:9,.0f} {m.mb:8.0f} {m.mb / size * 1e6:15,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
