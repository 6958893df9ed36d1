import random

import numpy as np

from alignline.storage.corpus import Document, ExactDedup, NearDedup, near_duplicates, run_steps
from alignline.storage.corpus import minhash
from corpus_texts import prose


def edited(text: str, fraction: float, seed: int) -> str:
    """Replace `fraction` of the words with fresh ones (word-level edit)."""
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), int(fraction * len(words))):
        words[i] = f"zz{rng.randrange(10**9)}"
    return " ".join(words)


def jaccard(a: str, b: str, n: int = 5) -> float:
    s = minhash.shingle_sets([a, b], n)
    return minhash.exact_jaccard(s.of(0), s.of(1))


def test_exact_dedup_on_normalized_text_keeps_first():
    docs = [Document("a", "Hello   World.\nSame text", "t"), Document("b", "hello world. same TEXT", "t"),
            Document("c", "Other text", "t")]
    kept, stats, dropped = run_steps([ExactDedup()], docs)
    assert [d.id for d in kept] == ["a", "c"]
    assert dropped[0].id == "b" and dropped[0].reason == "exact_duplicate" and dropped[0].detail == "a"
    assert kept[0].metadata["text_hash"] != kept[1].metadata["text_hash"]


def test_shingles_and_exact_jaccard_match_a_python_reference():
    a, b = prose(1, 8), edited(prose(1, 8), 0.05, 2)
    def ref(t):
        w = t.lower().replace(".", " ").split()
        return {tuple(w[i:i + 5]) for i in range(len(w) - 4)}
    ra, rb = ref(a), ref(b)
    assert abs(jaccard(a, b) - len(ra & rb) / len(ra | rb)) < 1e-9
    assert minhash.shingle_sets(["too few words"], 5).sizes().tolist() == [0]


def test_near_dedup_on_constructed_clusters():
    base = [prose(100 + i, 10) for i in range(30)]
    docs, truth = [], {}
    for i, text in enumerate(base):
        docs.append(Document(f"b{i}", text, "t"))
        if i < 10:  # two near copies each (one word of 150 edited: J about 0.93)
            for k in range(2):
                docs.append(Document(f"b{i}-near{k}", edited(text, 0.01, 10 * i + k), "t"))
                truth[f"b{i}-near{k}"] = f"b{i}"
        elif i < 15:  # a far copy: 30% edited, J far below 0.8 -> must be kept
            docs.append(Document(f"b{i}-far", edited(text, 0.30, i), "t"))
    kept, stats, dropped = run_steps([NearDedup(threshold=0.8, bands=20, rows=6, band_tasks=3)], docs)
    assert {d.id: d.detail.split()[0] for d in dropped} == truth
    assert all(d.reason == "near_duplicate" for d in dropped)
    by_id = {d.id: d for d in kept}
    assert by_id["b0"].metadata["cluster_id"] == "b0"
    assert by_id["b12-far"].metadata["cluster_id"] == "" and "b12-far" in by_id
    assert stats[0].counters["verified_pairs"] == 30  # 10 clusters x 3 pairs


def test_chain_keeps_documents_not_similar_to_what_is_kept():
    a = prose(7, 20)
    b = edited(a, 0.015, 1)  # 4 of 300 words per step: J about 0.87 per step, about 0.76 two steps apart
    c = edited(b, 0.015, 2)
    d = edited(c, 0.015, 3)
    assert min(jaccard(a, b), jaccard(b, c), jaccard(c, d)) >= 0.8 > max(jaccard(a, c), jaccard(b, d))
    result = near_duplicates([a, b, c, d], threshold=0.8)
    assert result.cluster.tolist() == [0, 0, 0, 0]  # one transitive cluster ...
    # ... but c is kept: its only partners are b (dropped for a) and d, so dropping it would lose text
    # that nothing kept duplicates; d is dropped for c.
    assert result.drop.tolist() == [False, True, False, True]
    assert sorted(map(tuple, result.pairs.tolist())) == [(0, 1), (1, 2), (2, 3)]


def test_band_partitions_give_the_same_candidates():
    texts = [prose(i, 6) for i in range(20)] + [edited(prose(i, 6), 0.02, i) for i in range(20)]
    s = minhash.shingle_sets(texts, 5)
    sig = minhash.signatures(s, 120, 1)
    whole = minhash.band_candidates(sig, range(20), 6)
    split = minhash.Candidates.merge([minhash.band_candidates(sig, part, 6) for part in ([0, 1, 2], range(3, 11), range(11, 20))])
    assert np.array_equal(whole.pairs, split.pairs) and len(whole.pairs) >= 18
    assert np.array_equal(whole.bucket_offsets, split.bucket_offsets) and np.array_equal(whole.bucket_members, split.bucket_members)


def deleted_and_inserted(text: str, fraction: float, seed: int) -> str:
    """Delete, insert or replace `fraction` of the words (edits that shift every later shingle)."""
    rng = random.Random(seed)
    words = text.split()
    for _ in range(max(1, int(fraction * len(words)))):
        i, op = rng.randrange(len(words)), rng.choice("dis")
        if op == "d":
            del words[i]
        elif op == "i":
            words.insert(i, f"ins{rng.randrange(10**9)}")
        else:
            words[i] = f"sub{rng.randrange(10**9)}"
    return " ".join(words)


def ideal_greedy(texts: list[str], threshold: float = 0.8) -> list[bool]:
    """Reference: all pairs exactly, doc i dropped iff an earlier *kept* doc has Jaccard >= threshold."""
    s = minhash.shingle_sets(texts, 5)
    drop = []
    for i in range(len(texts)):
        drop.append(any(not drop[j] and minhash.exact_jaccard(s.of(j), s.of(i)) >= threshold for j in range(i)))
    return drop


def test_boilerplate_cluster_over_max_bucket_pairs_keeps_exactly_one():
    licence = prose(42, 12)
    copies = [licence if k % 3 == 0 else edited(licence, 0.01, k) for k in range(30)]
    others = [prose(500 + i, 10) for i in range(10)]
    texts = others[:5] + copies + others[5:]
    found = minhash.band_candidates(minhash.signatures(minhash.shingle_sets(texts, 5), 120, 1), range(20), 6,
                                    max_bucket_pairs=10)
    assert len(found.buckets()) >= 1 and all(len(b) > 10 for b in found.buckets())  # taken whole, not as pairs
    result = near_duplicates(texts, max_bucket_pairs=10)
    assert result.drop.tolist() == [False] * 6 + [True] * 29 + [False] * 5
    assert set(result.removal.partner[result.drop].tolist()) == {5}  # every copy names the kept first one
    assert result.stats["representative_checks"] >= 29 and result.stats["verified_pairs"] >= 29


def test_large_bucket_of_two_boilerplates_keeps_one_of_each():
    """A bucket mixing two clusters (first member from the first): a star around the first member would
    never link the second cluster's copies; representatives do."""
    a, b = prose(1, 12), prose(2, 12)
    texts = [a if k % 2 == 0 else b for k in range(20)]
    texts = [t if k < 2 else edited(t, 0.01, k) for k, t in enumerate(texts)]
    shingles = minhash.shingle_sets(texts, 5)
    sig = minhash.signatures(shingles, 120, 1)
    one_bucket = minhash.Candidates(np.zeros((0, 2), np.int64), np.array([0, 20]), np.arange(20))
    removal = minhash.remove_near_duplicates(shingles, sig, one_bucket, 0.8, 0.6)
    assert np.flatnonzero(~removal.drop).tolist() == [0, 1]
    assert removal.partner.tolist() == [-1, -1] + [k % 2 for k in range(2, 20)]


def test_greedy_order_decides_the_representative():
    a = prose(9, 20)
    b = edited(a, 0.015, 1)
    c = edited(b, 0.015, 2)
    assert jaccard(a, b) >= 0.8 and jaccard(b, c) >= 0.8 > jaccard(a, c)
    # b first: it represents both neighbours, which are dropped for it
    r = near_duplicates([b, a, c])
    assert r.drop.tolist() == [False, True, True] and r.removal.partner.tolist() == [-1, 0, 0]
    # a, c first: neither is like the other, both kept; b is dropped for the earliest kept partner
    r = near_duplicates([a, c, b])
    assert r.drop.tolist() == [False, False, True] and r.removal.partner.tolist() == [-1, -1, 0]


def test_removal_equals_the_exact_greedy_on_chained_edits():
    """Deletions, insertions and substitutions at 1-30%, copies of copies, in shuffled order:
    the LSH removal is the all-pairs exact greedy (nothing wrongly removed, nothing missed)."""
    rng = random.Random(3)
    texts = [prose(200 + i, 10) for i in range(25)]
    for i in range(25):
        source = texts[i]
        for k in range(rng.randint(1, 3)):
            source = deleted_and_inserted(source if rng.random() < 0.5 else texts[i], rng.choice([0.01, 0.03, 0.08, 0.15, 0.3]),
                                          100 * i + k)
            texts.append(source)
    rng.shuffle(texts)
    expected = ideal_greedy(texts)
    assert 10 < sum(expected) < len(texts) - 25  # a mix: removals, and edits too far to remove
    for max_bucket_pairs in (50, 2):  # also with every bucket of 3+ resolved by representatives
        assert near_duplicates(texts, max_bucket_pairs=max_bucket_pairs).drop.tolist() == expected


def test_miss_audit_finds_kept_pairs_lsh_did_not_propose():
    texts = [prose(1, 12), edited(prose(1, 12), 0.01, 1), prose(3, 12)]
    shingles = minhash.shingle_sets(texts, 5)
    sig = minhash.signatures(shingles, 120, 1)
    assert minhash.missed_in_sample(shingles, sig, np.array([True, True, True]), 10, 0.8, 0.6) == (3, 2)
    assert minhash.missed_in_sample(shingles, sig, np.array([True, False, True]), 10, 0.8, 0.6) == (2, 0)
