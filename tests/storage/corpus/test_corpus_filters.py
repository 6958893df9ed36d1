from alignline.storage.corpus import (C4Lines, Document, GopherQuality, GopherRepetition, LanguageFilter, Normalize,
                                      StepLog, identify_language, normalize_text, run_steps)
from corpus_texts import prose


def doc(text: str, i: str = "d") -> Document:
    return Document(i, text, "test")


def test_normalize_nfc_controls_whitespace():
    assert normalize_text("Cafe\u0301\x07  au\t lait \r\n\n\n\nend ") == "Caf\u00e9 au lait\n\nend"
    kept, stats, dropped = run_steps([Normalize()], [doc("ok text"), doc(" \x00\u200b ", "e")])
    assert [d.id for d in kept] == ["d"] and dropped[0].reason == "empty_after_normalization"
    assert stats[0].dropped["empty_after_normalization"] == 1


def test_language_id_keeps_english_drops_others():
    assert identify_language(prose(1), 0.08)[0] == "en"
    german = "Der Hund und die Katze sind in dem Garten, und es ist nicht kalt, aber die Kinder sind auch mit dem Ball im Haus."
    french = "Le chat est dans la maison et il ne veut pas sortir pour le moment, mais les enfants sont au jardin avec une balle."
    assert identify_language(german, 0.08)[0] == "de"
    assert identify_language(french, 0.08)[0] == "fr"
    assert identify_language("x = f(y) + 3; return z[4]", 0.08)[0] == "unknown"
    f = LanguageFilter("en", 0.08)
    assert f.filter(doc(prose(2))) is True
    assert f.filter(doc(german)) == (False, "language_de")


def test_gopher_quality_pass_and_each_failure():
    g = GopherQuality()
    assert g.filter(doc(prose(3))) is True
    assert g.filter(doc("The cat and the dog.")) == (False, "gopher_short_doc")
    assert g.filter(doc(" ".join(["supercalifragilistic"] * 30 + ["the", "of", "and"] * 10))) == (False, "gopher_above_avg_word_length")
    assert g.filter(doc(prose(4) + " #" * 40)) == (False, "gopher_too_many_hashes")
    assert g.filter(doc(prose(5) + " ..." * 40)) == (False, "gopher_too_many_ellipsis")
    bullets = "\n".join(f"- {prose(i, 1)}" for i in range(12))
    assert g.filter(doc(bullets)) == (False, "gopher_too_many_bullets")
    assert g.filter(doc(prose(6) + " " + " ".join(["123", "4.5", "67"] * 60))) == (False, "gopher_below_alpha_ratio")
    no_stop = " ".join(f"river{i} mountain garden" for i in range(30))
    assert g.filter(doc(no_stop)) == (False, "gopher_too_few_stop_words")


def test_gopher_repetition_pass_and_fail():
    r = GopherRepetition()
    assert r.filter(doc(prose(7))) is True
    assert r.filter(doc("\n".join(["the same line is here again"] * 10 + [prose(8, 3)])))[1] == "dup_line_frac"
    assert r.filter(doc(" ".join([prose(9, 3)] * 4)))[1].startswith(("top_", "duplicated_"))


def test_c4_lines_removed_and_documents_dropped():
    c4 = C4Lines(unit="line")
    good = "\n".join(prose(i, 1) for i in range(6))
    d = doc(good + "\nclick here\nEnable javascript in your browser to see this page.\nRead our privacy policy for more details.")
    log = StepLog("c4")
    assert c4.clean(d, log) is True
    assert "click here" not in d.text and "javascript" not in d.text and "privacy" not in d.text
    assert log.stats.counters["line_removed_no_terminal_punct"] == 1
    assert c4.clean(doc(good + "\nIt says lorem ipsum dolor sit amet.")) == (False, "c4_lorem_ipsum")
    assert c4.clean(doc(good + "\nThe code is int main() { return 0; }.")) == (False, "c4_curly_bracket")
    assert c4.clean(doc("Only one sentence here.\nAnd a second one here.")) == (False, "c4_too_few_sentences")


def test_c4_paragraph_unit_keeps_hard_wrapped_prose():
    # a man page / docstring paragraph: sentences hard-wrapped every 6 words, no line ends a sentence
    words = prose(11, 6).split()
    wrapped = "\n".join(" ".join(words[i:i + 6]) for i in range(0, len(words), 6)).replace(".\n", ". ")
    assert C4Lines(unit="line").clean(doc(wrapped)) == (False, "c4_too_few_sentences")
    assert C4Lines(unit="paragraph").clean(doc(wrapped)) is True


def test_every_drop_is_recorded_with_step_and_reason():
    docs = [doc(prose(20), "good"), doc("short text", "short"), doc(" ", "blank")]
    steps = [Normalize(), LanguageFilter(), GopherQuality()]
    kept, stats, dropped = run_steps(steps, docs)
    assert [d.id for d in kept] == ["good"]
    assert {(d.id, d.step, d.reason) for d in dropped} == {("blank", "normalize", "empty_after_normalization"),
                                                          ("short", "language", "language_unknown")}
    assert sum(sum(s.dropped.values()) for s in stats) == len(dropped) == 2
