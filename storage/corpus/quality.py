"""Quality filters: Gopher quality and repetition rules, C4 line rules.

Llama 2 §2.1 only says "more robust data cleaning"; these are the published,
widely reproduced heuristics (Gopher, Rae et al. 2021 §A.1.1 and Table A1; C4,
Raffel et al. 2020 §2.2) with datatrove's thresholds, all passed in from
`CorpusConfig` so every number is a named field.
"""
from __future__ import annotations

import bisect
import itertools
import re
from typing import Sequence

import numpy as np

from .documents import Document, StepLog, Verdict, keep_passing

_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u2026\u2014\u2013\u00ab\u00bb\u201c\u201d\u2018\u2019\u2022"
_LETTER = re.compile(r"[^\W\d_]")  # a letter (str.isalpha up to rare numeric forms such as '\u00b2')
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
        non_symbol = [w for w in words if w.strip(_PUNCT)]  # words that are not all punctuation
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
        if sum(1 for w in words if _LETTER.search(w)) / len(words) < self.min_alpha_words_ratio:
            return False, "gopher_below_alpha_ratio"
        if len(GOPHER_STOP_WORDS.intersection(text.lower().split())) < self.min_stop_words:
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


_GRAM_MULT = np.uint64(0x100000001B3)  # odd: n-gram hash g_n = g_(n-1) * M + word hash (mod 2^64)


class _Words:
    """A document's words as 64-bit hashes plus character counts, so n-gram rules compare integers
    instead of joining strings (the join was 60% of the step's time). Python's str hash is salted
    per process, which changes no verdict: only equality within one document is used."""

    def __init__(self, words: list[str]):
        self.hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
        self.chars = [0, *itertools.accumulate(map(len, words))]   # chars[i]: characters of the first i words
        self._grams = {1: self.hashes}

    def grams(self, n: int) -> np.ndarray:
        """(len - n + 1,) hash of each word n-gram, built from the (n-1)-grams (cached)."""
        if n not in self._grams:
            shorter = self.grams(n - 1)
            with np.errstate(over="ignore"):
                self._grams[n] = shorter[:-1] * _GRAM_MULT + self.hashes[n - 1:]
        return self._grams[n]

    def gram_chars(self, start: int, n: int) -> int:
        """Characters of the n-gram starting at `start`, words joined without separators."""
        return self.chars[start + n] - self.chars[start]


def _occurrences(grams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions ordered by (n-gram, position), True where a new n-gram starts): one plain sort of
    keys holding the position in the low bits (17 for documents up to 131k words) and the hash's top
    bits above (47-bit names collide with probability ~1e-9 within a document), cheaper than a
    stable argsort."""
    bits = np.uint64(max(17, int(grams.size).bit_length()))
    keys = (grams >> bits << bits) | np.arange(grams.size, dtype=np.uint64)
    keys.sort()
    names = keys >> bits
    new = np.empty(keys.size, dtype=bool)
    new[:1] = True
    np.not_equal(names[1:], names[:-1], out=new[1:])
    return (keys & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64), new


def _top_ngram_chars(words: _Words, n: int) -> int:
    """Characters (words joined by spaces) times count of the most frequent n-gram; ties go to the
    one seen first, as Counter.most_common does."""
    if len(words.hashes) < n:
        return 0
    positions, new = _occurrences(words.grams(n))
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, positions.size))
    top = counts.max()
    start = int(positions[starts[counts == top]].min())   # the first position of each group is its earliest
    return (words.gram_chars(start, n) + n - 1) * int(top)


def _duplicated_ngram_chars(words: _Words, n: int) -> int:
    """Characters covered by n-grams seen before, skipping over a repeat (Gopher's definition:
    scan left to right; an n-gram seen at an earlier *visited* position counts and the scan jumps
    n words, so the n-1 positions it jumps over are never visited nor seen).

    Only positions whose n-gram occurred earlier can count, so the scan walks those alone (few in
    most documents): a repeat at r is visited unless a counted repeat h < r has r - h < n, and it
    counts if one of its earlier occurrences p was visited.
    """
    if len(words.hashes) < n:
        return 0
    positions, new = _occurrences(words.grams(n))
    later = np.flatnonzero(~new)                         # indices of non-first occurrences
    if not later.size:
        return 0
    group_start = np.maximum.accumulate(np.where(new, np.arange(new.size), 0))
    later = later[np.argsort(positions[later])]
    counted: list[int] = []
    next_visit = repeated = 0
    order = positions.tolist()
    for k in later.tolist():
        r = order[k]
        if r < next_visit:
            continue
        for p in order[group_start[k]:k]:
            h = bisect.bisect_left(counted, p)
            if h == 0 or p - counted[h - 1] >= n:        # p was visited, so its gram was seen
                repeated += words.gram_chars(r, n)
                counted.append(r)
                next_visit = r + n
                break
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
        words = _Words(words_of(text))
        for n, frac in self.top_ngrams:
            if _top_ngram_chars(words, n) / len(text) > frac:
                return False, f"top_{n}_gram"
        no_repeats_from = None  # no repeated m-gram means no repeated n-gram for any n >= m
        for n, frac in self.dup_ngrams:
            if no_repeats_from is not None and n >= no_repeats_from:
                continue
            chars = _duplicated_ngram_chars(words, n)
            if chars == 0:  # the first repeat is always counted, so 0 means none
                no_repeats_from = n if no_repeats_from is None else min(n, no_repeats_from)
            if chars / len(text) > frac:
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
