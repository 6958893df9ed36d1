from alignline.storage.corpus import contamination
from corpus_texts import prose


def test_buckets_on_a_constructed_corpus():
    corpus = [prose(1, 20), prose(2, 20)]
    leaked = prose(1, 20).split()
    samples = [
        ("all", " ".join(leaked[:40])),                                   # 100% in corpus -> dirty
        ("half", " ".join(leaked[40:70]) + " " + " ".join(f"q{i}" for i in range(30))),  # 50%: not clean, not dirty
        ("tenth", " ".join(leaked[80:90]) + " " + " ".join(f"q{i}" for i in range(90))),  # 10%: clean
        ("none", prose(99, 4)),                                            # clean
    ]
    report = contamination({"evalset": samples}, corpus, ngram=10, clean_below=0.2, dirty_from=0.8)
    rows = report.table.to_pylist()
    shares = {r["sample_id"]: r["share"] for r in rows}
    assert shares["all"] == 1.0 and abs(shares["half"] - 0.5) < 1e-9 and abs(shares["tenth"] - 0.1) < 1e-9
    assert shares["none"] < 0.2
    assert report.summary["evalset"] == {"samples": 4, "clean": 2, "not_clean": 2, "not_dirty": 3, "dirty": 1}
    flags = {r["sample_id"]: (r["clean"], r["not_clean"], r["not_dirty"], r["dirty"]) for r in rows}
    assert flags["half"] == (False, True, True, False)


def test_short_matches_do_not_count():
    corpus = ["alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"]
    sample = "alpha beta gamma delta epsilon zeta eta theta iota omega"  # 9 shared tokens < 10-gram
    assert contamination({"s": [("x", sample)]}, corpus, ngram=10).table.column("share").to_pylist() == [0.0]
