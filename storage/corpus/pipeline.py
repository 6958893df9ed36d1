"""The cleaning recipe as a list of steps built from `CorpusConfig` (Llama 2 §2.1).

Order: normalize first (every later rule sees the same text), cheap language ID
next, then the quality rules, then PII (placeholders must not affect quality
scores). Dedup runs after these steps (flows/corpus.py) so it compares cleaned text.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from .documents import (Step, StepStats, documents_from_table, documents_to_table, dropped_to_table, run_steps,
                        stats_from_dict)
from .language import LanguageFilter
from .normalize import Normalize
from .pii import ScrubPII
from .quality import C4Lines, GopherQuality, GopherRepetition

if TYPE_CHECKING:
    from alignline.config.corpus import CorpusConfig


def cleaning_steps(cfg: "CorpusConfig") -> list[Step]:
    """Normalization, language, Gopher quality and repetition, C4 lines, PII."""
    return [
        Normalize(cfg.unicode_form),
        LanguageFilter(cfg.language, cfg.language_min_score),
        GopherQuality(cfg.gopher_min_doc_words, cfg.gopher_max_doc_words, cfg.gopher_min_avg_word_length,
                      cfg.gopher_max_avg_word_length, cfg.gopher_max_symbol_word_ratio, cfg.gopher_max_bullet_lines_ratio,
                      cfg.gopher_max_ellipsis_lines_ratio, cfg.gopher_min_alpha_words_ratio, cfg.gopher_min_stop_words),
        GopherRepetition(cfg.dup_line_frac, cfg.dup_para_frac, cfg.dup_line_char_frac, cfg.dup_para_char_frac,
                         tuple(zip(cfg.top_ngram_sizes, cfg.top_ngram_fracs)), tuple(zip(cfg.dup_ngram_sizes, cfg.dup_ngram_fracs))),
        C4Lines(cfg.c4_unit, cfg.c4_min_words_per_line, cfg.c4_max_word_length, cfg.c4_min_sentences,
                cfg.c4_require_terminal_punct, cfg.c4_drop_lorem_ipsum, cfg.c4_drop_curly_bracket,
                cfg.c4_drop_javascript_lines, cfg.c4_drop_policy_lines),
        ScrubPII(cfg.pii_email_placeholder, cfg.pii_ip_placeholder, cfg.pii_phone_placeholder),
    ]



def clean_shard(table: pa.Table, cfg: "CorpusConfig") -> tuple[pa.Table, list[dict], pa.Table]:
    """The cleaning steps on one shard of documents: (kept documents, each step's stats as dicts, drops).

    A pure function of its inputs, so a shard is one Ray task on a cluster or one call in process,
    with the same result; `merge_shards` puts the shards back together.
    """
    kept, stats, dropped = run_steps(cleaning_steps(cfg), documents_from_table(table))
    return documents_to_table(kept), [s.as_dict() for s in stats], dropped_to_table(dropped)


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """[lo, hi) row ranges of `shards` contiguous, near-equal shards (none empty)."""
    edges = np.linspace(0, n, min(shards, max(n, 1)) + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def merge_shards(results: Sequence[tuple[pa.Table, list[dict], pa.Table]]) -> tuple[pa.Table, list[StepStats], pa.Table]:
    """Shard results (in shard order) -> what one pass over all documents gives: documents in corpus order,
    stats summed per step (seconds: summed over shards, the work done), drops ordered by step then corpus
    order, as `run_steps` logs them."""
    documents = pa.concat_tables([r[0] for r in results]) if results else documents_to_table([])
    steps: list[StepStats] = []
    for _, shard_stats, _ in results:
        for k, row in enumerate(shard_stats):
            s = stats_from_dict(row)
            if k == len(steps):
                steps.append(StepStats(s.step))
            total = steps[k]
            total.docs_in += s.docs_in
            total.kept += s.kept
            total.dropped.update(s.dropped)
            total.counters.update(s.counters)
            total.seconds += s.seconds
    dropped = pa.concat_tables([r[2] for r in results]) if results else dropped_to_table([])
    order = {s.step: k for k, s in enumerate(steps)}
    rank = np.array([order[step] for step in dropped.column("step").to_pylist()], dtype=np.int64)
    return documents, steps, dropped.take(np.argsort(rank, kind="stable"))
