"""Normalization: the text every later step, hash and shingle sees."""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from .documents import Document, StepLog

# C0/C1 controls except tab and newline (tab becomes a space below); DEL; zero-width and BOM.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_TRAILING = re.compile(r" +\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_text(text: str, form: str = "NFC") -> str:
    """Unicode `form`, no control characters, single spaces, at most one blank line in a row."""
    text = unicodedata.normalize(form, text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


class Normalize:
    name = "normalize"

    def __init__(self, form: str = "NFC"):
        self.form = form

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        kept = []
        for doc in docs:
            text = normalize_text(doc.text, self.form)
            if text != doc.text:
                log.count("changed")
            if not text:
                log.drop(doc, "empty_after_normalization")
                continue
            doc.text = text
            kept.append(doc)
        return kept
