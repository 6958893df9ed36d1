"""Language identification by stopword ratio, with no model to download.

Method: for each known language, the share of a document's words that are among
its most frequent function words; the best language wins if its share reaches
`min_score`, else the document is 'unknown' (code, tables, lists of names).
Function words make up 40-50% of running prose in these languages and the
lists barely overlap, so a few hundred words decide reliably; the paper's own
tool (fastText, Llama 2 §4.1 / Table 10) is a learned model we do not ship.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from .documents import Document, StepLog, Verdict, keep_passing

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the of and to in is that it for as with was on be by this are or not from at which an have "
                    "you but his they we their has been if can will all would there when its more were what".split()),
    "de": frozenset("der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an "
                    "werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum".split()),
    "fr": frozenset("de la le et les des en un du une que est pour qui dans par plus pas au sur ne se ce il sont "
                    "avec ou son aux mais nous comme été leur elle cette ses sa être".split()),
    "es": frozenset("de la que el en y los del se las por un para con no una su al lo como más pero sus le ya o "
                    "fue este ha sí porque esta entre cuando muy sin sobre también".split()),
    "it": frozenset("di che il la e per un in non una sono del della mi si ma lo ha le con da gli al anche come "
                    "io questo più dei nel alla se nella delle suo questa".split()),
    "nl": frozenset("de en van het een in is dat op te zijn met voor niet aan er om ook als bij maar door dan "
                    "wordt nog uit worden naar deze heeft hij tot".split()),
    "pt": frozenset("de a o que e do da em um para com não uma os no se na por mais as dos como mas ao ele das "
                    "seu sua ou quando muito nos já eu também só pelo pela".split()),
}
_WORD = re.compile(r"[^\W\d_]+")


def identify_language(text: str, min_score: float, min_hits: int = 3) -> tuple[str, float]:
    """(language code or 'unknown', stopword share of the best language).

    Fewer than `min_hits` stopwords is too little evidence (a code line "x = f(y)" has
    Spanish's 'y'), so such texts are 'unknown' whatever their share.
    """
    words = _WORD.findall(text.lower())
    if not words:
        return "unknown", 0.0
    counts = Counter(words)  # one pass in C; each language then sums over its few stopwords
    best, best_score = "unknown", 0.0
    for lang, stop in STOPWORDS.items():
        score = sum(counts[w] for w in stop.intersection(counts)) / len(words)
        if score > best_score:
            best, best_score = lang, score
    known = best_score >= min_score and best_score * len(words) >= min_hits
    return (best if known else "unknown"), best_score


class LanguageFilter:
    name = "language"

    def __init__(self, language: str = "en", min_score: float = 0.08):
        self.language = language
        self.min_score = min_score

    def filter(self, doc: Document) -> Verdict:
        lang, score = identify_language(doc.text, self.min_score)
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = round(score, 4)
        return True if lang == self.language else (False, f"language_{lang}")

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        return keep_passing(self.filter, docs, log)
