"""Corpus cleaning settings (Llama 2 §2.1, appendix A.6).

The quality and repetition thresholds are the ones datatrove publishes as the
defaults of its `GopherQualityFilter`, `GopherRepetitionFilter` and
`C4QualityFilter` (which in turn come from Gopher, Rae et al. 2021, Table A1,
and C4, Raffel et al. 2020, §2.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import ConfigError, setting

_GOPHER_Q = "datatrove GopherQualityFilter default (Gopher, Rae et al. 2021, §A.1.1)"
_GOPHER_R = "datatrove GopherRepetitionFilter default (Gopher Table A1)"
_C4 = "datatrove C4QualityFilter default (C4, Raffel et al. 2020, §2.2)"


@dataclass(frozen=True)
class CorpusConfig:
    # --- sources and bad input -------------------------------------------------
    sources: tuple[str, ...] = setting(("local",), "Sources: 'local' (text found on this machine) or paths to JSONL, Parquet or text folders.")
    max_documents: int = setting(20000, "Documents read from all sources at most (0: no limit).", ge=0)
    max_record_bytes: int = setting(1_000_000, "Records larger than this are rejected as oversize.", ge=1)

    # --- normalization and language ---------------------------------------------
    unicode_form: Literal["NFC", "NFKC"] = setting("NFC", "Unicode normalization form applied before every other step.")
    language: str = setting("en", "Language kept by language identification.", source="Llama 2 Table 10: mostly English")
    language_min_score: float = setting(
        0.08, "Stopword-ratio language ID: the best language's stopword share of all words must reach this "
        "(English prose is about 0.4-0.5, source code and tables well under 0.05).", ge=0, le=1)

    # --- Gopher quality rules ----------------------------------------------------
    gopher_min_doc_words: int = setting(50, "Fewer non-symbol words than this: dropped.", source=_GOPHER_Q, ge=0)
    gopher_max_doc_words: int = setting(100_000, "More non-symbol words than this: dropped.", source=_GOPHER_Q, ge=1)
    gopher_min_avg_word_length: float = setting(3, "Mean word length below this: dropped.", source=_GOPHER_Q, ge=0)
    gopher_max_avg_word_length: float = setting(10, "Mean word length above this: dropped.", source=_GOPHER_Q, ge=0)
    gopher_max_symbol_word_ratio: float = setting(0.1, "'#' or ellipses per word above this: dropped.", source=_GOPHER_Q, ge=0)
    gopher_max_bullet_lines_ratio: float = setting(0.9, "Share of lines starting with a bullet above this: dropped.", source=_GOPHER_Q, ge=0, le=1)
    gopher_max_ellipsis_lines_ratio: float = setting(0.3, "Share of lines ending with an ellipsis above this: dropped.", source=_GOPHER_Q, ge=0, le=1)
    gopher_min_alpha_words_ratio: float = setting(0.8, "Share of words with a letter below this: dropped.", source=_GOPHER_Q, ge=0, le=1)
    gopher_min_stop_words: int = setting(2, "Distinct stop words ('the', 'be', 'to', 'of', 'and', 'that', 'have', 'with') fewer than this: dropped.", source=_GOPHER_Q, ge=0)

    # --- Gopher repetition rules -------------------------------------------------
    dup_line_frac: float = setting(0.3, "Share of duplicated lines above this: dropped.", source=_GOPHER_R, ge=0, le=1)
    dup_para_frac: float = setting(0.3, "Share of duplicated paragraphs above this: dropped.", source=_GOPHER_R, ge=0, le=1)
    dup_line_char_frac: float = setting(0.2, "Share of characters in duplicated lines above this: dropped.", source=_GOPHER_R, ge=0, le=1)
    dup_para_char_frac: float = setting(0.2, "Share of characters in duplicated paragraphs above this: dropped.", source=_GOPHER_R, ge=0, le=1)
    top_ngram_sizes: tuple[int, ...] = setting((2, 3, 4), "n of the 'most frequent n-gram' rules.", source=_GOPHER_R)
    top_ngram_fracs: tuple[float, ...] = setting((0.2, 0.18, 0.16), "Character share of the most frequent n-gram above which a document is dropped, one per top_ngram_sizes.", source=_GOPHER_R)
    dup_ngram_sizes: tuple[int, ...] = setting((5, 6, 7, 8, 9, 10), "n of the 'duplicated n-grams' rules.", source=_GOPHER_R)
    dup_ngram_fracs: tuple[float, ...] = setting((0.15, 0.14, 0.13, 0.12, 0.11, 0.10), "Character share of duplicated n-grams above which a document is dropped, one per dup_ngram_sizes.", source=_GOPHER_R)

    # --- C4 line rules -----------------------------------------------------------
    c4_unit: Literal["line", "paragraph"] = setting(
        "paragraph", "What C4's line rules judge. C4 (web pages) uses lines, which are paragraphs there; "
        "man pages, docstrings and READMEs are hard-wrapped at ~72 columns, so their paragraph is a "
        "blank-line separated block and judging wrapped lines would drop nearly all prose.")
    c4_min_words_per_line: int = setting(3, "Lines (units) with fewer words are removed.", source=_C4, ge=0)
    c4_max_word_length: int = setting(1000, "Lines with a longer word are removed.", source=_C4, ge=1)
    c4_min_sentences: int = setting(5, "Documents with fewer sentences left after the line rules: dropped.", source=_C4, ge=0)
    c4_require_terminal_punct: bool = setting(True, "Remove lines that do not end in . ? ! \" or ' (or end in an ellipsis).", source=_C4)
    c4_drop_lorem_ipsum: bool = setting(True, "Drop documents containing 'lorem ipsum'.", source=_C4)
    c4_drop_curly_bracket: bool = setting(True, "Drop documents containing '{' (code).", source=_C4)
    c4_drop_javascript_lines: bool = setting(True, "Remove lines mentioning 'javascript'.", source=_C4)
    c4_drop_policy_lines: bool = setting(True, "Remove lines with cookie / terms-of-use boilerplate.", source=_C4)

    # --- PII -----------------------------------------------------------------------
    pii_email_placeholder: str = setting("<EMAIL>", "Replaces e-mail addresses.", source="Llama 2 §2.1: remove personal information")
    pii_ip_placeholder: str = setting("<IP_ADDRESS>", "Replaces IPv4 / IPv6 addresses.", source="Llama 2 §2.1")
    pii_phone_placeholder: str = setting("<PHONE>", "Replaces phone numbers.", source="Llama 2 §2.1")

    # --- dedup -----------------------------------------------------------------------
    exact_dedup: bool = setting(True, "Drop documents whose normalized text (lowercase, whitespace collapsed) hashes alike; the first one is kept.", source="Llama 2 §2.1: deduplication")
    near_dedup: bool = setting(True, "Drop MinHash-LSH near-duplicates verified by exact Jaccard.", source="Llama 2 §2.1: deduplication")
    dedup_threshold: float = setting(0.8, "Jaccard similarity of word-shingle sets at which two documents are near-duplicates.", ge=0, le=1)
    minhash_ngram: int = setting(5, "Word n-gram length of MinHash shingles.", ge=1)
    minhash_bands: int = setting(
        20, "LSH bands b. With rows r, a pair of Jaccard s becomes a candidate with probability 1-(1-s^r)^b. "
        "20 x 6 (120 permutations) puts the S-curve's midpoint at (1/b)^(1/r) = 0.61, well below 0.8: "
        "P(candidate) = 0.998 at s=0.8, 0.27 at s=0.5, 0.015 at s=0.3. Recall at the threshold is then "
        "near 1 and precision comes from exact-Jaccard verification of the candidates. datasketch's "
        "optimiser picks 9 x 13 for 0.8, whose curve crosses 0.8 at only ~0.5 (it balances false "
        "positives and negatives of the sketch alone).", ge=1)
    minhash_rows: int = setting(6, "LSH rows per band r (permutations = bands x rows); see minhash_bands.", ge=1)
    minhash_seed: int = setting(1, "Seed of the MinHash permutations (same on every worker).", ge=0)
    minhash_prefilter: float = setting(
        0.6, "Candidates whose signature-estimated Jaccard is below this skip exact verification. The estimate's "
        "standard deviation at s=0.8 with 120 permutations is 0.037, so a true 0.8 pair falls under 0.6 with "
        "probability < 1e-7.", ge=0, le=1)
    max_bucket_pairs: int = setting(50, "LSH buckets with more members than this are not expanded into all pairs: each member is verified against the bucket's kept documents so far (boilerplate buckets stay near-linear and lose no true pair).", ge=2)
    dedup_band_tasks: int = setting(4, "Band partitions: each is one (Ray or in-process) task.", ge=1)
    dedup_use_ray: bool = setting(False, "Run band partitions as Ray tasks on the attached cluster (tiny preset: in process).")

    # --- distribution -------------------------------------------------------------------
    use_ray: bool = setting(False, "Run the per-document steps (normalize, language, Gopher, C4, PII; MinHash signatures) as one "
                            "Ray task per shard on the attached cluster; in process, shard by shard, otherwise. Shards are "
                            "concatenated in order, so the published corpus is the same either way.")
    shards: int = setting(4, "Shards the documents are split into for the per-document steps (one Ray task each with "
                          "use_ray). Corpus-level steps (exact and near dedup) stay global.", ge=1)
    ray_task_cpus: float = setting(1.0, "CPUs each shard's Ray task reserves (fractional works; on a 2-CPU head keep "
                                   "it <= 1 so two shards run at once).", gt=0)

    # --- contamination (Llama 2 A.6) --------------------------------------------------
    contamination_ngram: int = setting(10, "Token n-gram length that counts as a contaminated match.", source="Llama 2 A.6: matches longer than 10 tokens", ge=1)
    contamination_dirty: float = setting(0.8, "Share of contaminated tokens at or above which a sample is dirty.", source="Llama 2 A.6: 80%", ge=0, le=1)
    contamination_clean: float = setting(0.2, "Share below which a sample is clean.", source="Llama 2 A.6: 20%", ge=0, le=1)
    contamination_skip_budget: int = setting(4, "Tokens in which a matched span may differ from the training text (never in its "
                                             "first contamination_ngram tokens, never at its end).",
                                             source="Llama 2 A.6: skipgram budget of four tokens", ge=0)
    contamination_tokenizer: Literal["project", "words"] = setting(
        "project", "Tokens counted: 'project' uses the latest published `tokenizer` dataset when there is one (the paper "
        "counts Llama tokens), lowercase words otherwise; 'words' always uses words.", source="Llama 2 A.6")
    contamination_score_field: str = setting("score", "Metadata field of an eval sample holding its benchmark score; when every "
                                             "sample of a set has it, the report adds the per-bucket score table.",
                                             source="Llama 2 Table 51")
    eval_sets: tuple[str, ...] = setting((), "Evaluation set files (JSONL / Parquet / text, a `text` field) checked for contamination.")

    # --- audit, report and validation ---------------------------------------------------
    toxicity_min_terms: int = setting(2, "Toxicity proxy: a document with at least this many distinct flagged lexicon terms counts as toxic "
                                      "(the paper scores documents with a HateBERT classifier, Llama 2 §4.1; no model is downloaded here).", ge=1)
    report_top_terms: int = setting(5, "Identity terms listed per axis in the Table 9 layout.", source="Llama 2 Table 9: top 5", ge=1)
    validation_min_chars: int = setting(20, "Published documents shorter than this fail validation.", ge=1)
    validation_max_chars: int = setting(1_000_000, "Published documents longer than this fail validation.", ge=1)

    def validate(self) -> None:
        if len(self.top_ngram_sizes) != len(self.top_ngram_fracs):
            raise ConfigError(f"corpus.top_ngram_fracs = {self.top_ngram_fracs!r} is not allowed; allowed: one per top_ngram_sizes")
        if len(self.dup_ngram_sizes) != len(self.dup_ngram_fracs):
            raise ConfigError(f"corpus.dup_ngram_fracs = {self.dup_ngram_fracs!r} is not allowed; allowed: one per dup_ngram_sizes")
        if self.contamination_clean > self.contamination_dirty:
            raise ConfigError(f"corpus.contamination_clean = {self.contamination_clean!r} is not allowed; allowed: <= contamination_dirty")

    @property
    def num_permutations(self) -> int:
        return self.minhash_bands * self.minhash_rows


_FULL = {"max_documents": 0, "dedup_use_ray": True, "use_ray": True, "shards": 64}
PRESETS: dict[str, dict] = {"small": {"max_documents": 200000}, "llama2-7b": dict(_FULL), "llama2-13b": dict(_FULL),
                            "llama2-70b": dict(_FULL)}
