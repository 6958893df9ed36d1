"""The corpus's Great Expectations suite: what a published corpus version must satisfy.

Non-empty text, unique ids and text hashes, lengths within bounds, and no
e-mail, IPv4 or phone pattern left after PII scrubbing. `validate_corpus`
returns the result and writes the full GE report; the flow refuses to publish
when it fails.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .pii import EMAIL, IPV4, PHONE


class ValidationFailed(RuntimeError):
    """A published-corpus expectation failed; `report` is the path of the GE report."""

    def __init__(self, message: str, report: Path):
        super().__init__(f"{message} (report: {report})")
        self.report = report


@dataclass
class ValidationResult:
    success: bool
    failed: list[str]      # "expectation_type(column): unexpected_count"
    report: Path


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
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("corpus").add_dataframe_asset("documents").add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(corpus_suite(min_chars, max_chars))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="corpus", data=batch, suite=suite))
    frame = table.select(["id", "text", "text_hash"]).to_pandas()
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    failed = [f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column')}): "
              f"{r.result.get('unexpected_count')} unexpected, e.g. {str(r.result.get('partial_unexpected_list', [])[:2])[:200]}"
              for r in result.results if not r.success]
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(result.to_json_dict(), indent=2, default=str))
    return ValidationResult(bool(result.success), failed, report_path)
