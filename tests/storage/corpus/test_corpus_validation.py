import pyarrow as pa

from alignline.storage.corpus import validate_corpus


def table(texts, ids=None, hashes=None):
    ids = ids or [f"d{i}" for i in range(len(texts))]
    hashes = hashes or [f"h{i}" for i in range(len(texts))]
    return pa.table({"id": ids, "text": texts, "text_hash": hashes})


def test_clean_corpus_passes(tmp_path):
    result = validate_corpus(table(["A clean document of enough length.", "Another clean one, <EMAIL> replaced."]), tmp_path / "r.json")
    assert result.success and not result.failed and result.report.exists()


def test_each_violation_fails(tmp_path):
    bad = table(["Contact bob@example.com for details now.", "Server 10.0.0.1 is down again today.",
                 "Call 415-555-0132 to order more items.", "short", "Same hash text of good length."],
                ids=["a", "b", "c", "d", "d"], hashes=["1", "2", "3", "4", "4"])
    result = validate_corpus(bad, tmp_path / "r.json", min_chars=20)
    assert not result.success
    failed = " ".join(result.failed)
    assert "expect_column_values_to_be_unique(id)" in failed and "expect_column_values_to_be_unique(text_hash)" in failed
    assert "expect_column_value_lengths_to_be_between(text)" in failed
    assert failed.count("expect_column_values_to_not_match_regex(text)") == 3
