"""Corpus cleaning (Llama 2 §2.1, A.6): sources, steps with drop reasons, dedup, contamination, report, validation.

Steps never import Prefect or Ray; `flows/corpus.py` wires them into tasks.
"""
from .contamination import ContaminationReport, contamination, word_tokens
from .dedup import (BandRunner, ExactDedup, NearDedup, NearDedupResult, apply_near_dedup, exact_duplicates,
                    near_duplicates, run_bands_in_process)
from .documents import (Document, Dropped, StepLog, StepStats, documents_from_table, documents_to_table,
                        dropped_from_table, dropped_to_table, keep_passing, run_steps, stats_from_dict)
from .language import LanguageFilter, identify_language
from .normalize import Normalize, normalize_text
from .pii import ScrubPII, scrub_pii
from .pipeline import clean_shard, cleaning_steps, merge_shards, shard_bounds
from .quality import C4Lines, GopherQuality, GopherRepetition
from .report import write_report
from .sources import Reject, read_sources, rejects_to_table, source_fingerprint
from .validation import ValidationFailed, ValidationResult, validate_corpus

__all__ = [
    "Document", "Dropped", "Reject", "StepLog", "StepStats", "run_steps", "keep_passing",
    "read_sources", "source_fingerprint", "rejects_to_table",
    "Normalize", "normalize_text", "LanguageFilter", "identify_language", "GopherQuality", "GopherRepetition", "C4Lines",
    "ScrubPII", "scrub_pii", "ExactDedup", "NearDedup", "NearDedupResult", "BandRunner", "run_bands_in_process",
    "exact_duplicates", "near_duplicates", "apply_near_dedup", "cleaning_steps", "clean_shard", "merge_shards", "shard_bounds", "contamination", "ContaminationReport", "word_tokens", "write_report",
    "validate_corpus", "ValidationResult", "ValidationFailed",
    "documents_to_table", "documents_from_table", "dropped_to_table", "dropped_from_table", "stats_from_dict",
]
