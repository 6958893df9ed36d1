"""The corpus audit report: Markdown with matplotlib PNGs (Llama 2 §4.1 and Table 9 layout).

Counts documents and tokens, length distributions, the language mix seen by
language ID, pronoun and identity-term shares (Table 9; whole words, with
context rules for ambiguous ones such as "man page"), a lexicon toxicity proxy,
the top reasons documents were dropped, both error kinds of near dedup
(wrongly removed, missed), duplicate cluster sizes and benchmark contamination
buckets.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .documents import Document, Dropped, StepStats  # noqa: E402

# Llama 2 Table 9a: documents containing each pronoun group.
PRONOUNS = {
    "She (she, her, hers, herself)": {"she", "her", "hers", "herself"},
    "He (he, him, his, himself)": {"he", "him", "his", "himself"},
    "Unspecified (they, them, their, ...)": {"they", "them", "their", "theirs", "themselves", "theirself", "themself"},
    "1st-person (I, me, my, we, us, our, ...)": {"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"},
    "2nd-person (you, your, ...)": {"you", "your", "yours", "yourself", "yourselves"},
}
# Llama 2 Table 9b axes; percentages are of the documents that mention the axis at all.
IDENTITY_TERMS = {
    "Gender and Sex": ["female", "male", "feminine", "masculine", "transgender", "gender", "woman", "women", "man", "men",
                       "girl", "boy", "nonbinary", "sex"],
    "Sexual Orientation": ["gay", "lesbian", "queer", "bi", "bisexual", "heterosexual", "homosexual", "straight", "asexual", "lgbt"],
    "Nationality": ["american", "indian", "chinese", "korean", "mexican", "british", "german", "french", "japanese",
                    "russian", "canadian", "italian", "spanish", "dutch", "swedish", "australian"],
    "Race and Ethnicity": ["european", "african", "asian", "indigenous", "latin", "latino", "hispanic", "white", "black",
                           "arab", "caucasian", "native"],
    "Religion": ["christian", "religious", "spiritual", "catholic", "jewish", "muslim", "hindu", "buddhist", "atheist",
                 "protestant", "islam", "christianity", "judaism"],
}
# Toxicity proxy lexicon (the paper scores with a ToxiGen-tuned HateBERT, Llama 2 §4.1): insults and threats.
TOXIC_TERMS = frozenset("idiot idiots stupid moron morons dumb retard retarded loser losers scum trash pathetic disgusting "
                        "hate hateful kill killing murder die bastard bitch crap damn shit fuck fucking asshole "
                        "worthless ugly freak".split())
_WORD = re.compile(r"[a-z]+")  # whole words: "human" and "manual" are not "man"

# Words the lists above share with other senses. A document counts a term only if one occurrence
# matches its rule (the Table 9 counts are about people, not man pages or loop variables).
_L, _R = r"(?<![A-Za-z])", r"(?![A-Za-z])"
_PEOPLE = (r"(?:people|persons?|m[ae]n|wom[ae]n|communit(?:y|ies)|famil(?:y|ies)|children|kids|boys?|girls?|"
           r"americans?|students|workers|voters|folks|individuals|populations?|couples?)")
MENTION_RULES: dict[str, re.Pattern] = {
    # the manual, not a person: "man page(s)", "man-db", "man(1)", "man 1 ls", "the man command"
    "man": re.compile(_L + r"man(?![A-Za-z]|[ \t-]*(?:pages?|pager|db|section|command|entry|entries)" + _R
                      + r"|\(\d|[ \t]+\d(?![A-Za-z0-9]))", re.I),
    "i": re.compile(_L + "I" + _R),                 # the pronoun, not the `i` of code samples
    "us": re.compile(_L + "(?:us|Us|uS)" + _R),     # the pronoun, not "US" the country
}
# Colours, code, geometry and encodings ("white space", "native code", "straight line", "bi-directional",
# "Latin-1"): these count only right before a word for people ("Black women", "Native Americans").
for _term in ("white", "black", "native", "straight", "bi", "latin"):
    MENTION_RULES[_term] = re.compile(_L + _term + r"[ \t-]+" + _PEOPLE + _R, re.I)


def document_terms(text: str) -> set[str]:
    """Lowercase whole words of `text` that count as mentions (MENTION_RULES applied to ambiguous ones)."""
    terms = set(_WORD.findall(text.lower()))
    for term in terms & MENTION_RULES.keys():
        if not MENTION_RULES[term].search(text):
            terms.discard(term)
    return terms


def demographics(texts: Sequence[str], top: int = 5) -> dict[str, Any]:
    """Table 9 figures: % of docs with each pronoun group; per axis, % of docs mentioning it and its top terms."""
    n = max(len(texts), 1)
    pronoun_docs = Counter()
    axis_docs = Counter()
    term_docs = {axis: Counter() for axis in IDENTITY_TERMS}
    for text in texts:
        terms = document_terms(text)
        for group, words in PRONOUNS.items():
            pronoun_docs[group] += bool(terms & words)
        for axis, words in IDENTITY_TERMS.items():
            found = terms.intersection(words)
            if found:
                axis_docs[axis] += 1
                term_docs[axis].update(found)
    return {
        "pronouns": {g: 100 * pronoun_docs[g] / n for g in PRONOUNS},
        "axes": {axis: {"docs_pct": 100 * axis_docs[axis] / n,
                        "top": [(t, 100 * c / max(axis_docs[axis], 1)) for t, c in term_docs[axis].most_common(top)]}
                 for axis in IDENTITY_TERMS},
    }


def is_toxic(text: str, min_terms: int) -> bool:
    """The lexicon proxy's verdict on one text: at least `min_terms` distinct toxicity terms."""
    return len(document_terms(text) & TOXIC_TERMS) >= min_terms


def toxicity_share(texts: Sequence[str], min_terms: int) -> float:
    if not texts:
        return 0.0
    return sum(is_toxic(t, min_terms) for t in texts) / len(texts)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}" if whole else "0.00"


def near_dedup_audit(docs: Sequence[Document], dropped: Sequence[Dropped], stats: Sequence[StepStats],
                     threshold: float | None) -> dict[str, Any]:
    """Both error kinds of near dedup, and cluster sizes, from what the run published.

    wrongly_removed: near-duplicate drops whose logged partner is not in the kept corpus (or, given
    `threshold`, whose Jaccard with it is below it); missed/sampled: the step's own audit counters.
    """
    cluster_of = {d.id: d.metadata.get("cluster_id", "") for d in docs}
    sizes = Counter(c for c in cluster_of.values() if c)
    removed = wrong = 0
    for d in dropped:
        if d.reason != "near_duplicate":
            continue
        removed += 1
        partner, _, jaccard = d.detail.rpartition(" jaccard=")
        if partner not in cluster_of or (threshold is not None and float(jaccard) < threshold):
            wrong += 1
        elif cluster_of[partner]:
            sizes[cluster_of[partner]] += 1
    near = [s for s in stats if s.step == "near_dedup"]
    return {"removed": removed, "wrongly_removed": wrong, "cluster_sizes": list(sizes.values()),
            "sampled": sum(s.counters.get("audit_kept_sampled", 0) for s in near),
            "missed": sum(s.counters.get("audit_missed", 0) for s in near)}


def _bar(path: Path, labels: list[str], values: list[float], title: str, xlabel: str) -> str:
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(labels) + 1)))
    ax.barh(labels[::-1], values[::-1])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _hist(path: Path, values: np.ndarray, title: str, xlabel: str, log: bool = True) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    values = np.asarray(values, dtype=float)
    if values.size:
        bins = np.logspace(0, np.log10(max(values.max(), 10)), 40) if log else 30
        ax.hist(np.maximum(values, 1), bins=bins)
        if log:
            ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("documents")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def write_report(folder: str | Path, docs: Sequence[Document], stats: Sequence[StepStats], dropped: Sequence[Dropped],
                 reject_counts: dict[str, int], languages: dict[str, int], contamination: dict[str, dict[str, int]] | None = None,
                 *, contamination_scores: dict[str, list[dict]] | None = None, top_terms: int = 5, toxicity_min_terms: int = 2, near_threshold: float | None = None,
                 title: str = "Corpus report",
                 extra: dict[str, Any] | None = None) -> Path:
    """Write `report.md` and its PNGs into `folder`; returns the Markdown file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = [d.text for d in docs]
    chars = np.array([len(t) for t in texts])
    tokens = np.array([len(t.split()) for t in texts])
    reasons = Counter(f"{d.step}: {d.reason}" for d in dropped)
    near = near_dedup_audit(docs, dropped, stats, near_threshold)
    demo = demographics(texts, top_terms)
    lines = [f"# {title}", ""]
    for key, value in (extra or {}).items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Counts", "", "| | value |", "|---|---|",
              f"| documents kept | {len(docs):,} |", f"| tokens (whitespace words) | {int(tokens.sum()):,} |",
              f"| characters | {int(chars.sum()):,} |", f"| documents dropped | {len(dropped):,} |",
              f"| malformed records rejected | {sum(reject_counts.values()):,} |", ""]
    lines += ["## Steps", "", "| step | in | kept | dropped | seconds | edits |", "|---|---|---|---|---|---|"]
    for s in stats:
        edits = ", ".join(f"{k}={v}" for k, v in sorted(s.counters.items()))
        lines.append(f"| {s.step} | {s.docs_in:,} | {s.kept:,} | {sum(s.dropped.values()):,} | {s.seconds:.2f} | {edits} |")
    lines += ["", "## Lengths", "", f"![characters]({_hist(folder / 'chars.png', chars, 'Document length', 'characters')})",
              f"![tokens]({_hist(folder / 'tokens.png', tokens, 'Document length', 'whitespace tokens')})", ""]
    lang_items = sorted(languages.items(), key=lambda kv: -kv[1])
    total_lang = max(sum(languages.values()), 1)
    lines += ["## Language mix (before the language filter; stopword-ratio language ID)", "", "| language | documents | % |", "|---|---|---|"]
    lines += [f"| {k} | {v:,} | {100 * v / total_lang:.2f} |" for k, v in lang_items]
    if lang_items:
        lines += ["", f"![languages]({_bar(folder / 'languages.png', [k for k, _ in lang_items], [v for _, v in lang_items], 'Language mix', 'documents')})"]
    lines += ["", "## Demographic representation (Llama 2 Table 9 layout)", "", "### (a) Pronouns", "",
              "| gender pronouns | % documents |", "|---|---|"]
    lines += [f"| {g} | {p:.2f} |" for g, p in demo["pronouns"].items()]
    lines += ["", "### (b) Identities", "", "| axis | % documents mentioning | top terms (% of those documents) |", "|---|---|---|"]
    for axis, row in demo["axes"].items():
        lines.append(f"| {axis} | {row['docs_pct']:.2f} | " + ", ".join(f"{t} ({p:.1f})" for t, p in row["top"]) + " |")
    lines += ["", "## Toxicity proxy", "",
              f"{100 * toxicity_share(texts, toxicity_min_terms):.3f}% of documents contain at least {toxicity_min_terms} distinct "
              "terms of a small insult/threat lexicon (a proxy for the paper's HateBERT classifier).", ""]
    top = reasons.most_common(15)
    lines += ["## Top drop reasons", "", "| step: reason | documents |", "|---|---|"]
    lines += [f"| {r} | {c:,} |" for r, c in top]
    if top:
        lines += ["", f"![dropped]({_bar(folder / 'dropped.png', [r for r, _ in top], [c for _, c in top], 'Dropped documents', 'documents')})"]
    if reject_counts:
        lines += ["", "### Rejected records", "", "| reason | records |", "|---|---|"]
        lines += [f"| {r} | {c:,} |" for r, c in sorted(reject_counts.items())]
    size_counts = Counter(near["cluster_sizes"])
    lines += ["", "## Near-duplicate removal", "",
              "A document is removed only when a kept document is its verified near-duplicate. Wrongly removed: "
              "removed with no kept partner at the threshold (checked here on the published corpus). Missed: kept "
              "documents that still have a kept near-duplicate, measured on a sample compared with every kept "
              "document on the full MinHash signature, then exactly.", "", "| | documents |", "|---|---|",
              f"| removed as near duplicates | {near['removed']:,} |",
              f"| wrongly removed | {near['wrongly_removed']:,} ({_pct(near['wrongly_removed'], near['removed'])}% of removals) |",
              f"| missed (sampled kept documents with a kept near duplicate) | {near['missed']:,} of {near['sampled']:,} "
              f"({_pct(near['missed'], near['sampled'])}%) |", "",
              f"{len(near['cluster_sizes']):,} clusters with a kept member (connected components of verified pairs).", "",
              "| cluster size | clusters |", "|---|---|"]
    lines += [f"| {s} | {c:,} |" for s, c in sorted(size_counts.items())[:20]]
    if near["cluster_sizes"]:
        lines += ["", f"![clusters]({_hist(folder / 'clusters.png', np.array(near['cluster_sizes']), 'Duplicate cluster sizes', 'documents per cluster', log=False)})"]
    if contamination:
        lines += ["", "## Benchmark contamination (Llama 2 A.6)", "",
                  "| eval set | samples | clean (<20%) | not clean | not dirty | dirty (>=80%) |", "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {s['samples']} | {s['clean']} | {s['not_clean']} | {s['not_dirty']} | {s['dirty']} |"
                  for name, s in contamination.items()]
    if contamination_scores:
        lines += ["", "### Scores per bucket (Llama 2 Table 51 layout)", "",
                  "Mean score of each bucket against the set's mean: Zn = (X - mu_n) / sigma_n, sigma_n the standard "
                  "deviation of the mean of n samples drawn at random from the set.", "",
                  "| eval set | subset | avg contam. % | n | X | mu_n | Zn |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {r['bucket']} | {r['avg_contamination_pct']:.1f} | {r['n']} | {r['mean_score']:.3f} | "
                  f"{r['mu_n']:.3f} | {r['z_n']:.2f} |" for name, rows in contamination_scores.items() for r in rows]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
