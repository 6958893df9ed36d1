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


# Hand-computed skip-gram case (ngram 3): corpus w1..w12; sample w1 w2 w3 X w5 w6 Y Z w9 Q R (11 tokens).
# Seed w1 w2 w3 at 0 (the only 3-gram in the corpus), then to the right against w4 w5 ...:
#   X!=w4 (miss 1), w5 w6 match (end 6), Y!=w7 (2), Z!=w8 (3), w9 matches (end 9), Q!=w10 (4), R!=w11 (5).
# budget 0 -> span [0, 3): 3/11; budget 2 -> stops at the 3rd miss: [0, 6): 6/11;
# budget 4 -> [0, 9): 9/11 (the trailing Q R never count).
HAND_CORPUS = [" ".join(f"w{i}" for i in range(1, 13))]
HAND_SAMPLE = "w1 w2 w3 X w5 w6 Y Z w9 Q R"


def test_skip_gram_budget_hand_computed():
    for budget, share in ((0, 3 / 11), (2, 6 / 11), (4, 9 / 11)):
        report = contamination({"s": [("x", HAND_SAMPLE)]}, HAND_CORPUS, ngram=3, skip_budget=budget)
        assert report.table.column("share").to_pylist() == [share], budget


def test_no_mismatch_inside_the_first_ngram_tokens():
    # X at position 1 breaks every seed that covers w1, so w1 is not contaminated: [2, 9) -> 7/9
    report = contamination({"s": [("x", "w1 X w3 w4 w5 w6 w7 w8 w9")]}, HAND_CORPUS, ngram=3, skip_budget=4)
    assert report.table.column("share").to_pylist() == [7 / 9]


def test_a_span_does_not_cross_corpus_documents():
    corpus = ["w1 w2 w3", "w4 w5 w6"]
    report = contamination({"s": [("x", "w1 w2 w3 w4 w5")]}, corpus, ngram=3, skip_budget=4)
    assert report.table.column("share").to_pylist() == [3 / 5]


def test_project_tokenizer_is_used():
    # a character tokenizer: "abcdef" shares the 4-gram "bcde" (and nothing longer) with the corpus
    report = contamination({"s": [("x", "abcdef")]}, ["zbcdez"], ngram=4, skip_budget=0, tokenize=list)
    assert report.table.column("share").to_pylist() == [4 / 6]
    ids = contamination({"s": [("x", "abc")]}, ["abc"], ngram=3, tokenize=lambda t: [ord(c) for c in t])
    assert ids.table.column("share").to_pylist() == [1.0]


def test_score_table_per_bucket_hand_computed():
    # four samples: two fully leaked (dirty, scores 1 and 1), two fresh (clean, scores 0 and 1)
    corpus = [prose(1, 20)]
    leaked = prose(1, 20).split()
    samples = [("a", " ".join(leaked[:30]), 1.0), ("b", " ".join(leaked[40:70]), 1.0),
               ("c", prose(77, 2), 0.0), ("d", prose(78, 2), 1.0)]
    report = contamination({"qa": samples}, corpus, ngram=10)
    assert report.summary["qa"] == {"samples": 4, "clean": 2, "not_clean": 2, "not_dirty": 2, "dirty": 2}
    rows = {r["bucket"]: r for r in report.scores["qa"]}
    # set mean 0.75, population std sqrt(0.1875); n=2 of N=4: sigma_n = 0.4330 * sqrt(2/3) / sqrt(2) = 0.25
    assert rows["dirty"]["n"] == 2 and rows["dirty"]["mean_score"] == 1.0 and rows["dirty"]["mu_n"] == 0.75
    assert abs(rows["dirty"]["z_n"] - 1.0) < 1e-12 and abs(rows["clean"]["z_n"] + 1.0) < 1e-12
    assert rows["clean"]["mean_score"] == 0.5 and rows["dirty"]["avg_contamination_pct"] == 100.0
    assert "qa" not in contamination({"qa": [s[:2] for s in samples]}, corpus).scores
