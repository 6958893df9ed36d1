"""The cleaning recipe as a list of steps built from `CorpusConfig` (Llama 2 §2.1).

Order: normalize first (every later rule sees the same text), cheap language ID
next, then the quality rules, then PII (placeholders must not affect quality
scores). Dedup runs after these steps (flows/corpus.py) so it compares cleaned text.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .documents import Step
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

