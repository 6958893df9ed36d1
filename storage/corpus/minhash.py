"""MinHash LSH near-duplicate detection, vectorised with numpy.

Pipeline (each stage a plain function so a flow can cache or distribute it):
  shingle_sets(texts)            -> CSR of sorted unique 32-bit word n-gram hashes per doc
  signatures(shingles)           -> (N, bands*rows) uint32 MinHash matrix
  band_candidates(sig, bands)    -> candidate pairs from a subset of bands (one Ray task each)
  verify_pairs(...)              -> pairs whose *exact* Jaccard >= threshold
  clusters_from_pairs(...)       -> union-find cluster id per doc, and which docs to drop

Speed comes from never looping over words or shingles in Python: the corpus is
one byte array, word hashes are differences of a polynomial prefix hash, shingle
hashes are sums of shifted word hashes, and the permutations are one
multiply-add over a (shingles, permutations) block reduced per document.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

_U64 = np.uint64
_P = _U64(0x100000001B3)                  # odd multiplier of the prefix hash (FNV prime)
_P_INV = _U64(pow(0x100000001B3, -1, 1 << 64))  # its inverse mod 2^64 (odd numbers are invertible)
_NGRAM_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                        0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x94D049BB133111EB,
                        0xBF58476D1CE4E5B9, 0x2545F4914F6CDD1D, 0x9FB21C651E98DF25, 0x5851F42D4C957F2D],
                       dtype=_U64)

# Bytes that end a word: ASCII whitespace, punctuation and the document separator 0.
_SEPARATOR = np.zeros(256, dtype=bool)
for _c in b"\x00\t\n\x0b\x0c\r !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~":
    _SEPARATOR[_c] = True

_power_cache: dict[str, np.ndarray] = {}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P^i, P^-i and sum_{k<i} P^k mod 2^64 for i < n (grown on demand, shared)."""
    if _power_cache.get("p") is None or len(_power_cache["p"]) < n:
        size = max(n, 1 << 20)
        p = np.full(size, _P, dtype=_U64)
        p[0] = 1
        inv = np.full(size, _P_INV, dtype=_U64)
        inv[0] = 1
        _power_cache["p"], _power_cache["inv"] = np.cumprod(p), np.cumprod(inv)  # wraps mod 2^64
        _power_cache["sum"] = np.concatenate((np.zeros(1, _U64), np.cumsum(_power_cache["p"])[:-1]))
    return _power_cache["p"][:n], _power_cache["inv"][:n], _power_cache["sum"][:n]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


@dataclass
class Shingles:
    """CSR layout: doc i's sorted unique shingle hashes are values[offsets[i]:offsets[i+1]]."""
    offsets: np.ndarray  # (N+1,) int64
    values: np.ndarray   # (S,) uint32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def of(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def word_ngram_hashes(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every word n-gram of every text, in order: (doc index, position of its first word
    within the doc, 64-bit hash) plus the word count of each text.

    Words: lowercase runs of bytes that are not ASCII whitespace or punctuation.
    """
    empty = np.zeros(0, np.int64)
    data = np.frombuffer("\x00".join(texts).lower().encode("utf-8"), dtype=np.uint8)
    if data.size == 0:
        return empty, empty, np.zeros(0, _U64), np.zeros(len(texts), np.int64)
    is_word = ~_SEPARATOR[data]
    edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    # doc of each word: how many separators precede its start
    word_doc = np.searchsorted(np.flatnonzero(data == 0), starts)
    counts = np.bincount(word_doc, minlength=len(texts)).astype(np.int64)
    # word hash = sum_j (b_j + 1) P^j over the word = (H[end] - H[start]) * P^-start, H the prefix
    # hash; H = cumsum(b P^i) + cumsum(P^i), the second term cached, so two passes over the bytes
    powers, inverse, power_sums = _powers(data.size + 1)
    prefix = np.zeros(data.size + 1, dtype=_U64)
    np.cumsum(np.multiply(data, powers[:data.size], dtype=_U64), out=prefix[1:])
    spans = (prefix[ends] - prefix[starts]) + (power_sums[ends] - power_sums[starts])
    words = mix64(spans * inverse[starts])
    # n-gram hash: position-weighted sum of its words' hashes; valid only inside one document
    m = words.size - ngram + 1
    if m <= 0:
        return empty, empty, np.zeros(0, _U64), counts
    acc = np.zeros(m, dtype=_U64)
    for j in range(ngram):
        acc += words[j:j + m] * _NGRAM_MULT[j % len(_NGRAM_MULT)]
    valid = word_doc[:m] == word_doc[ngram - 1:]
    doc_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    docs = word_doc[:m][valid].astype(np.int64)
    position = np.flatnonzero(valid) - doc_start[docs]
    return docs, position, mix64(acc[valid]), counts


def _shingle_chunk(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc index, 32-bit shingle hash), unique per doc, sorted by (doc, hash)."""
    docs, _, hashes, _ = word_ngram_hashes(texts, ngram)
    keys = np.unique((docs.astype(_U64) << _U64(32)) | (hashes >> _U64(32)))
    return (keys >> _U64(32)).astype(np.int64), (keys & _U64(0xFFFFFFFF)).astype(np.uint32)


def shingle_sets(texts: Sequence[str], ngram: int = 5, chunk_bytes: int = 8 << 20) -> Shingles:
    """Word n-gram shingle sets (lowercase, split on whitespace and ASCII punctuation).

    A document with fewer than `ngram` words has no shingles and never becomes a candidate.
    """
    n = len(texts)
    counts = np.zeros(n, dtype=np.int64)
    parts: list[np.ndarray] = []
    lo = 0
    while lo < n:
        hi, size = lo, 0
        while hi < n and (hi == lo or size + len(texts[hi]) < chunk_bytes):
            size += len(texts[hi]) + 1
            hi += 1
        docs, values = _shingle_chunk(texts[lo:hi], ngram)
        counts[lo:hi] = np.bincount(docs, minlength=hi - lo)
        parts.append(values)
        lo = hi
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
    return Shingles(offsets, values)


def permutations(num_perm: int, seed: int) -> np.ndarray:
    """Multiply-shift hash family h_a(x) = (a x mod 2^64) >> 32 with a odd (Dietzfelbinger et al. 1997)
    on 32-bit shingle hashes: one multiply per (shingle, permutation)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)


def signatures(shingles: Shingles, num_perm: int, seed: int = 1, block: int = 2048) -> np.ndarray:
    """(N, num_perm) uint32 MinHash signatures; docs without shingles get all-0xFFFFFFFF rows.

    The min is taken on the full 64-bit product and shifted afterwards: >> 32 is
    monotone, so min(h >> 32) == min(h) >> 32 and we skip a pass per block.
    Blocks of 2048 shingles keep the (block, num_perm) product in L2 cache (measured: 1.2x faster than 8192).
    """
    a = permutations(num_perm, seed)
    n = len(shingles)
    sig = np.full((n, num_perm), np.iinfo(np.uint64).max, dtype=_U64)
    sizes = shingles.sizes()
    doc_of = np.repeat(np.arange(n), sizes)
    values = shingles.values.astype(_U64)
    buf = np.empty((block, num_perm), dtype=_U64)
    for lo in range(0, values.size, block):
        hi = min(lo + block, values.size)
        h = buf[:hi - lo]
        np.multiply(values[lo:hi, None], a[None, :], out=h)   # (block, num_perm)
        docs = doc_of[lo:hi]
        seg = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1])))
        mins = np.minimum.reduceat(h, seg, axis=0)            # (docs in block, num_perm)
        rows = docs[seg]
        sig[rows] = np.minimum(sig[rows], mins)
    return (sig >> _U64(32)).astype(np.uint32)


def band_keys(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """One 64-bit key per document for band `band` (equal rows -> equal key)."""
    key = np.zeros(sig.shape[0], dtype=_U64)
    for j in range(band * rows, (band + 1) * rows):
        key = mix64(key ^ sig[:, j].astype(_U64))
    return key


def band_candidates(sig: np.ndarray, bands: Sequence[int], rows: int, max_bucket_pairs: int = 50,
                    has_shingles: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs (i < j) sharing a bucket in any of `bands`: (K, 2) int64, unique.

    Pure function of its inputs: a partition of bands is one Ray task on a
    cluster, or one loop iteration here. Buckets over `max_bucket_pairs` members
    emit chain and star pairs only (linear, still connected), not all pairs.
    """
    idx = np.arange(sig.shape[0]) if has_shingles is None else np.flatnonzero(has_shingles)
    out: list[np.ndarray] = []
    for band in bands:
        keys = band_keys(sig[idx], band, rows)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
        sizes = np.diff(np.append(starts, sk.size))
        pairs = starts[sizes == 2]
        if pairs.size:
            out.append(np.stack([idx[order[pairs]], idx[order[pairs + 1]]], axis=1))
        for start, size in zip(starts[sizes > 2], sizes[sizes > 2]):
            members = idx[order[start:start + size]]
            if size <= max_bucket_pairs:
                i, j = np.triu_indices(size, k=1)
                out.append(np.stack([members[i], members[j]], axis=1))
            else:
                out.append(np.stack([members[:-1], members[1:]], axis=1))
                out.append(np.stack([np.full(size - 2, members[0]), members[2:]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(out).astype(np.int64)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    if pairs.size == 0:
        return np.zeros(0)
    return (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1)


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def verify_pairs(shingles: Shingles, sig: np.ndarray, pairs: np.ndarray, threshold: float,
                 prefilter: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidates whose exact Jaccard >= threshold: (pairs (K, 2), jaccard (K,)).

    The signature estimate discards hopeless candidates first (see
    CorpusConfig.minhash_prefilter); survivors are checked on the real sets.
    """
    if pairs.size == 0:
        return pairs, np.zeros(0)
    pairs = pairs[estimated_jaccard(sig, pairs) >= prefilter]
    sizes = shingles.sizes()
    # |A n B| <= min(|A|, |B|) so J <= min/max: a size-ratio bound skips more pairs for free
    lo = np.minimum(sizes[pairs[:, 0]], sizes[pairs[:, 1]])
    hi = np.maximum(sizes[pairs[:, 0]], sizes[pairs[:, 1]])
    pairs = pairs[lo >= threshold * hi]
    jac = np.array([exact_jaccard(shingles.of(i), shingles.of(j)) for i, j in pairs], dtype=np.float64)
    keep = jac >= threshold
    return pairs[keep], jac[keep]


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the smaller index (earlier document) is the root


def clusters_from_pairs(n: int, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id per doc: index of its first member, or -1 if alone; drop mask).

    Union-find makes clusters transitive, but a document is dropped only when it
    is itself a verified near-duplicate of a document that is kept: walking each
    cluster in corpus order, the first member is kept, and a later one is kept
    too if none of its verified partners was kept (so a chain A~B~C with A !~ C
    keeps A and C, not only A - the failure mode of purely transitive removal).
    """
    uf = UnionFind(n)
    for a, b in pairs:
        uf.union(int(a), int(b))
    roots = np.array([uf.find(i) for i in range(n)]) if n else np.zeros(0, dtype=np.int64)
    in_pair = np.zeros(n, dtype=bool)
    in_pair[pairs.ravel()] = True
    cluster = np.where(in_pair, roots, -1)
    partners: dict[int, list[int]] = {}
    for a, b in pairs:
        partners.setdefault(int(b), []).append(int(a))  # a < b: only earlier docs matter
    drop = np.zeros(n, dtype=bool)
    for doc in np.flatnonzero(in_pair):                  # corpus order
        if any(not drop[p] for p in partners.get(int(doc), ())):
            drop[doc] = True
    return cluster, drop
