"""Quality filters: Gopher quality and repetition rules, C4 line rules.

Llama 2 §2.1 only says "more robust data cleaning"; these are the published,
widely reproduced heuristics (Gopher, Rae et al. 2021 §A.1.1 and Table A1; C4,
Raffel et al. 2020 §2.2) with datatrove's thresholds, all passed in from
`CorpusConfig` so every number is a named field.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from .documents import Document, StepLog, Verdict, keep_passing

_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u2026\u2014\u2013\u00ab\u00bb\u201c\u201d\u2018\u2019\u2022")
GOPHER_STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])


def words_of(text: str) -> list[str]:
    """Whitespace-separated words, Gopher's own unit (datatrove swaps in a language tokenizer
    that also splits off punctuation, which lowers the alpha-word ratio of technical text)."""
    return text.split()


class GopherQuality:
    name = "gopher_quality"

    def __init__(self, min_doc_words: int = 50, max_doc_words: int = 100_000, min_avg_word_length: float = 3,
                 max_avg_word_length: float = 10, max_symbol_word_ratio: float = 0.1,
                 max_bullet_lines_ratio: float = 0.9, max_ellipsis_lines_ratio: float = 0.3,
                 min_alpha_words_ratio: float = 0.8, min_stop_words: int = 2):
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg_word_length, self.max_avg_word_length = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio, self.max_ellipsis_lines_ratio = max_bullet_lines_ratio, max_ellipsis_lines_ratio
        self.min_alpha_words_ratio, self.min_stop_words = min_alpha_words_ratio, min_stop_words

    def filter(self, doc: Document) -> Verdict:
        text = doc.text
        words = words_of(text)
        if not words:
            return False, "gopher_short_doc"
        non_symbol = [w for w in words if any(ch not in _PUNCT for ch in w)]
        if len(non_symbol) < self.min_doc_words:
            return False, "gopher_short_doc"
        if len(non_symbol) > self.max_doc_words:
            return False, "gopher_long_doc"
        mean_length = sum(map(len, non_symbol)) / len(non_symbol)
        if mean_length < self.min_avg_word_length:
            return False, "gopher_below_avg_word_length"
        if mean_length > self.max_avg_word_length:
            return False, "gopher_above_avg_word_length"
        if text.count("#") / len(words) > self.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if (text.count("...") + text.count("\u2026")) / len(words) > self.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis"
        lines = text.splitlines() or [text]
        if sum(line.lstrip().startswith(("\u2022", "-")) for line in lines) / len(lines) > self.max_bullet_lines_ratio:
            return False, "gopher_too_many_bullets"
        if sum(line.rstrip().endswith(("...", "\u2026")) for line in lines) / len(lines) > self.max_ellipsis_lines_ratio:
            return False, "gopher_too_many_end_ellipsis"
        if sum(any(c.isalpha() for c in w) for w in words) / len(words) < self.min_alpha_words_ratio:
            return False, "gopher_below_alpha_ratio"
        if len(GOPHER_STOP_WORDS.intersection(w.lower() for w in words)) < self.min_stop_words:
            return False, "gopher_too_few_stop_words"
        return True

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        return keep_passing(self.filter, docs, log)


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(repeated elements, characters in the repeats) after each element's first occurrence."""
    seen: set[str] = set()
    elements = chars = 0
    for item in items:
        if item in seen:
            elements += 1
            chars += len(item)
        else:
            seen.add(item)
    return elements, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    counts = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count


def _duplicated_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by n-grams seen before, skipping over a repeat (Gopher's definition)."""
    seen: set[str] = set()
    repeated = i = 0
    while i < len(words) - n + 1:
        gram = "".join(words[i:i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


class GopherRepetition:
    name = "gopher_repetition"

    def __init__(self, dup_line_frac: float = 0.3, dup_para_frac: float = 0.3, dup_line_char_frac: float = 0.2,
                 dup_para_char_frac: float = 0.2,
                 top_ngrams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16)),
                 dup_ngrams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))):
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_ngrams, self.dup_ngrams = top_ngrams, dup_ngrams

    def filter(self, doc: Document) -> Verdict:
        text = doc.text
        if not text:
            return False, "empty"
        paragraphs = re.split(r"\n{2,}", text.strip())
        repeats, chars = _duplicates(paragraphs)
        if repeats / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if chars / len(text) > self.dup_para_char_frac:
            return False, "dup_para_char_frac"
        lines = re.split(r"\n+", text)
        repeats, chars = _duplicates(lines)
        if repeats / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if chars / len(text) > self.dup_line_char_frac:
            return False, "dup_line_char_frac"
        words = words_of(text)
        for n, frac in self.top_ngrams:
            if _top_ngram_chars(words, n) / len(text) > frac:
                return False, f"top_{n}_gram"
        for n, frac in self.dup_ngrams:
            if _duplicated_ngram_chars(words, n) / len(text) > frac:
                return False, f"duplicated_{n}_n_grams"
        return True

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        return keep_passing(self.filter, docs, log)


_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_SENTENCE_END = re.compile(r"[.!?]+(?:[\"')\]]*)(?=\s|$)")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Lines:
    """C4's rules: remove bad lines (counted per reason), drop the document if too few sentences remain."""
    name = "c4"

    def __init__(self, unit: str = "line", min_words_per_line: int = 3, max_word_length: int = 1000,
                 min_sentences: int = 5, require_terminal_punct: bool = True, drop_lorem_ipsum: bool = True,
                 drop_curly_bracket: bool = True, drop_javascript_lines: bool = True, drop_policy_lines: bool = True):
        self.unit = unit
        self.min_words_per_line, self.max_word_length, self.min_sentences = min_words_per_line, max_word_length, min_sentences
        self.require_terminal_punct, self.drop_lorem_ipsum = require_terminal_punct, drop_lorem_ipsum
        self.drop_curly_bracket, self.drop_javascript_lines, self.drop_policy_lines = drop_curly_bracket, drop_javascript_lines, drop_policy_lines

    def _units(self, text: str) -> list[str]:
        return text.splitlines() if self.unit == "line" else re.split(r"\n{2,}", text)

    def clean(self, doc: Document, log: StepLog | None = None) -> Verdict:
        """Removes bad lines from `doc.text` in place; False for a document-level rule."""
        kept, sentences = [], 0
        for unit in self._units(doc.text):
            flat = " ".join(unit.split())  # a hard-wrapped paragraph judged as one line
            words = flat.split()
            reason = None
            if any(len(w) > self.max_word_length for w in words):
                reason = "too_long_word"
            else:
                flat = _CITATION.sub("", flat).strip()
                if self.require_terminal_punct and (not flat.endswith(END_PUNCTUATION) or flat.endswith("...")):
                    reason = "no_terminal_punct"
                elif len(words) < self.min_words_per_line:
                    reason = "too_few_words"
            lower = flat.lower()
            if reason is None and self.drop_lorem_ipsum and "lorem ipsum" in lower:
                return False, "c4_lorem_ipsum"
            if reason is None and self.drop_javascript_lines and "javascript" in lower:
                reason = "javascript"
            if reason is None and self.drop_curly_bracket and "{" in flat:
                return False, "c4_curly_bracket"
            if reason is None and self.drop_policy_lines and any(p in lower for p in POLICY_SUBSTRINGS):
                reason = "policy"
            if reason is not None:
                if log is not None:
                    log.count(f"line_removed_{reason}")
                continue
            sentences += max(1, len(_SENTENCE_END.findall(flat)))
            kept.append(unit.strip())
        if sentences < self.min_sentences:
            return False, "c4_too_few_sentences"
        doc.text = ("\n" if self.unit == "line" else "\n\n").join(kept)
        return True

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        return keep_passing(lambda d: self.clean(d, log), docs, log)
