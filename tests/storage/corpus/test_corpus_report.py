from collections import Counter

from alignline.storage.corpus import Document, Dropped, StepStats, write_report
from alignline.storage.corpus.report import demographics, document_terms, near_dedup_audit

# Five documents with hand-counted mentions.
FIXTURE = [
    "See the man page of ls. The manual is long; a human wrote it and man(1) explains man-db.",  # nothing
    "A man and two men met her. She smiled.",                                                    # man, men; she-group
    "White space matters in native code: for i in range(3) the US version is straight.",        # nothing
    "Black women and Native Americans spoke; I listened to them.",                              # women, black, native; I; them
    "He said we should go.",                                                                     # he-group; we
]


def test_ambiguous_terms_count_only_in_their_people_sense():
    assert document_terms("the man page, the manual, a human") & {"man", "manual", "human"} == {"manual", "human"}
    assert "man" not in document_terms("see man(1), man-db and man 5 passwd; man pages")
    assert {"man", "men", "she", "her"} <= document_terms("The man and the men saw her; she waved.")
    assert "i" not in document_terms("for i in range(3)") and "i" in document_terms("I wrote it.")
    assert "us" not in document_terms("US English") and "us" in document_terms("Tell us.")
    assert not document_terms("white space, black box, native code, straight line, bi-directional, Latin-1") & \
        {"white", "black", "native", "straight", "bi", "latin"}
    assert {"black", "white"} <= document_terms("Black people and white families")


def test_demographics_on_a_fixture_with_known_counts():
    demo = demographics(FIXTURE, top=5)
    assert demo["pronouns"] == {
        "She (she, her, hers, herself)": 20.0, "He (he, him, his, himself)": 20.0,
        "Unspecified (they, them, their, ...)": 20.0, "1st-person (I, me, my, we, us, our, ...)": 40.0,
        "2nd-person (you, your, ...)": 0.0}
    axes = demo["axes"]
    assert axes["Gender and Sex"]["docs_pct"] == 40.0  # docs 2 and 4
    assert dict(axes["Gender and Sex"]["top"]) == {"man": 50.0, "men": 50.0, "women": 50.0}
    assert axes["Race and Ethnicity"]["docs_pct"] == 20.0 and dict(axes["Race and Ethnicity"]["top"]) == {"black": 100.0, "native": 100.0}
    assert axes["Nationality"]["docs_pct"] == 0.0 and axes["Sexual Orientation"]["docs_pct"] == 0.0


def test_report_prints_the_counts_and_both_near_dedup_error_kinds(tmp_path):
    docs = [Document(f"d{i}", t, "t", metadata={"cluster_id": "d1" if i == 1 else ""}) for i, t in enumerate(FIXTURE)]
    dropped = [Dropped("x1", "t", "near_dedup", "near_duplicate", "copy", "d1 jaccard=0.910"),
               Dropped("x2", "t", "near_dedup", "near_duplicate", "copy", "gone jaccard=0.950"),   # partner not kept
               Dropped("x3", "t", "near_dedup", "near_duplicate", "copy", "d1 jaccard=0.700"),     # below threshold
               Dropped("x4", "t", "exact_dedup", "exact_duplicate", "copy", "d2")]
    stats = [StepStats("exact_dedup", 9, 8, Counter(exact_duplicate=1), Counter(), 0.25),
             StepStats("near_dedup", 8, 5, Counter(near_duplicate=3), Counter(audit_kept_sampled=4, audit_missed=1), 1.5)]
    report = write_report(tmp_path, docs, stats, dropped, {}, {"en": 5}, near_threshold=0.8).read_text()
    lines = set(report.splitlines())
    assert "| She (she, her, hers, herself) | 20.00 |" in lines
    assert "| 1st-person (I, me, my, we, us, our, ...) | 40.00 |" in lines
    assert any(line.startswith("| Gender and Sex | 40.00 | ") for line in lines)
    assert any(line.startswith("| Race and Ethnicity | 20.00 | black (100.0), native (100.0)") or
               line.startswith("| Race and Ethnicity | 20.00 | native (100.0), black (100.0)") for line in lines)
    assert "| near_dedup | 8 | 5 | 3 | 1.50 | audit_kept_sampled=4, audit_missed=1 |" in lines
    assert "| removed as near duplicates | 3 |" in lines
    assert "| wrongly removed | 2 (66.67% of removals) |" in lines
    assert "| missed (sampled kept documents with a kept near duplicate) | 1 of 4 (25.00%) |" in lines
    assert "| 2 | 1 |" in lines  # cluster d1: itself + x1 (x3's Jaccard is below the threshold)


def test_near_dedup_audit_without_threshold_checks_only_the_partner():
    docs = [Document("a", "text", "t", metadata={"cluster_id": "a"})]
    dropped = [Dropped("b", "t", "near_dedup", "near_duplicate", "copy", "a jaccard=0.500")]
    audit = near_dedup_audit(docs, dropped, [], None)
    assert (audit["removed"], audit["wrongly_removed"], audit["cluster_sizes"]) == (1, 0, [2])
