"""Sharded per-document steps give what one pass gives; streamed signatures equal the in-memory ones;
the integer n-gram rules of GopherRepetition equal Gopher's string definition."""
import random
from collections import Counter

import numpy as np
import pytest

from alignline.config.corpus import CorpusConfig
from alignline.storage.corpus import (Document, clean_shard, cleaning_steps, documents_to_table, dropped_to_table,
                                      merge_shards, minhash, run_steps, shard_bounds)
from alignline.storage.corpus.quality import _duplicated_ngram_chars, _top_ngram_chars, _Words
from corpus_texts import prose


def corpus() -> list[Document]:
    docs = [Document(f"d{i}", prose(i, 12) + (" Mail a@example.com." if i % 3 == 0 else ""), "t") for i in range(20)]
    docs[4].text = "Too short."                                  # language / gopher drop
    docs[7].text = ("The same line again and again here.\n" * 30)  # repetition drop
    docs[11].text = prose(11, 12) + " function f() { return 1; }"  # C4 curly bracket
    return docs


@pytest.mark.parametrize("shards", [1, 3, 7, 40])
def test_sharded_cleaning_equals_one_pass(shards):
    cfg = CorpusConfig()
    kept, stats, dropped = run_steps(cleaning_steps(cfg), corpus())
    table = documents_to_table(corpus())
    parts = [clean_shard(table.slice(lo, hi - lo), cfg) for lo, hi in shard_bounds(table.num_rows, shards)]
    merged_docs, merged_stats, merged_dropped = merge_shards(parts)
    assert merged_docs.equals(documents_to_table(kept))
    assert merged_dropped.equals(dropped_to_table(dropped))
    strip = lambda rows: [{k: v for k, v in r.as_dict().items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(merged_stats) == strip(stats)
    assert len(dropped) >= 3


def test_shard_bounds_cover_in_order():
    assert shard_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]
    assert shard_bounds(0, 4) == []


def test_streamed_and_sharded_signatures_equal_in_memory():
    texts = [prose(i, 1 + i % 9) for i in range(60)] + ["too few words", ""]
    full = minhash.signatures(minhash.shingle_sets(texts, 5), 120, 7)
    sig, sizes = minhash.sketch(texts, 5, 120, 7, chunk_bytes=500)   # many chunks
    np.testing.assert_array_equal(sig, full)
    np.testing.assert_array_equal(sizes, minhash.shingle_sets(texts, 5).sizes())
    stacked = np.concatenate([minhash.sketch(texts[lo:hi], 5, 120, 7)[0] for lo, hi in shard_bounds(len(texts), 4)])
    np.testing.assert_array_equal(stacked, full)
    lazy = minhash.LazyShingles(texts, 5, sizes, cache_docs=3)
    eager = minhash.shingle_sets(texts, 5)
    for i in (0, 59, 3, 61):
        np.testing.assert_array_equal(lazy.of(i), eager.of(i))


def _reference_top(words, n):   # Gopher's definition on strings (the former implementation)
    counts = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count


def _reference_duplicated(words, n):
    seen, repeated, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = " ".join(words[i:i + n])
        if gram in seen:
            repeated += len(gram) - (n - 1)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def test_integer_ngram_rules_match_string_definition():
    rng = random.Random(0)
    vocab = ["a", "bb", "ccc", "dddd", "the", "of"]
    for trial in range(300):
        words = [rng.choice(vocab[: 2 + trial % 5]) for _ in range(rng.randrange(0, 60))]
        w = _Words(words)
        for n in (2, 3, 5, 7):
            assert _top_ngram_chars(w, n) == _reference_top(words, n), (words, n)
            assert _duplicated_ngram_chars(w, n) == _reference_duplicated(words, n), (words, n)


def test_duplicated_ngrams_hand_computed():
    # a b a b a b with n=2: ab(0) ba(1) ab(2) hit -> +2 chars, jump to 4: ab(4) hit -> +2; total 4
    assert _duplicated_ngram_chars(_Words("a b a b a b".split()), 2) == 4
    # x a b a b with n=2: xa ab ba ab(3) hit -> 2
    assert _duplicated_ngram_chars(_Words("x a b a b".split()), 2) == 2
