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
    split = np.unique(np.concatenate([minhash.band_candidates(sig, part, 6) for part in ([0, 1, 2], range(3, 11), range(11, 20))]), axis=0)
    assert np.array_equal(whole, split) and len(whole) >= 18
