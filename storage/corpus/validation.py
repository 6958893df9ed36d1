"""The corpus's Great Expectations suite: what a published corpus version must satisfy.

Non-empty text, unique ids and text hashes, lengths within bounds, and no
e-mail, IPv4 or phone pattern left after PII scrubbing. `validate_corpus`
returns the result and writes the full GE report; the flow refuses to publish
when it fails.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..validation import ValidationFailed, ValidationResult, run_suite  # noqa: F401 (ValidationFailed re-exported)
from .pii import EMAIL, IPV4, PHONE


def corpus_suite(min_chars: int, max_chars: int):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="corpus")
    for expectation in [
        gx.expectations.ExpectColumnValuesToNotBeNull(column="text"),
        gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=min_chars, max_value=max_chars),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="id"),
        gx.expectations.ExpectColumnValuesToBeUnique(column="id"),
        gx.expectations.ExpectColumnValuesToBeUnique(column="text_hash"),
        gx.expectations.ExpectColumnValuesToNotMatchRegex(column="text", regex=EMAIL.pattern),
        gx.expectations.ExpectColumnValuesToNotMatchRegex(column="text", regex=IPV4.pattern),
        gx.expectations.ExpectColumnValuesToNotMatchRegex(column="text", regex=PHONE.pattern),
    ]:
        suite.add_expectation(expectation)
    return suite


def validate_corpus(table: pa.Table, report_path: str | Path, min_chars: int = 20, max_chars: int = 1_000_000) -> ValidationResult:
    """Run the suite on `table` (columns id, text, text_hash) in an ephemeral GE context."""
    frame = table.select(["id", "text", "text_hash"]).to_pandas()
    return run_suite("corpus", lambda: corpus_suite(min_chars, max_chars), frame, report_path, examples=True)
