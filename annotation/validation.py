"""The comparisons' Great Expectations suite: what a published preference dataset must satisfy.

One label per task per annotator, a margin level from the paper's four, chosen
differs from rejected, no empty answers, unique annotation ids. The harvest
refuses to publish when it fails and keeps the full GE report.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .labeling import MARGIN_LEVELS, SAFETY_CATEGORIES


class ValidationFailed(RuntimeError):
    """A comparisons expectation failed; `report` is the path of the GE report."""

    def __init__(self, message: str, report: Path):
        super().__init__(f"{message} (report: {report})")
        self.report = report


@dataclass
class ValidationResult:
    success: bool
    failed: list[str]
    report: Path


def comparisons_suite():
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="comparisons")
    for expectation in [
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["source", "task_id", "annotator"]),
        gx.expectations.ExpectColumnValuesToBeUnique(column="comparison_id"),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="margin_level"),
        gx.expectations.ExpectColumnValuesToBeInSet(column="margin_level", value_set=list(MARGIN_LEVELS)),
        gx.expectations.ExpectColumnValuesToBeInSet(column="chosen_differs", value_set=[True]),
        gx.expectations.ExpectColumnValueLengthsToBeBetween(column="chosen", min_value=1),
        gx.expectations.ExpectColumnValueLengthsToBeBetween(column="rejected", min_value=1),
        gx.expectations.ExpectColumnValuesToBeInSet(column="safety_category", value_set=list(SAFETY_CATEGORIES),
                                                    mostly=1.0),
    ]:
        suite.add_expectation(expectation)
    return suite


def validate_comparisons(table: pa.Table, report_path: str | Path) -> ValidationResult:
    """Run the suite on a COMPARISON_SCHEMA table in an ephemeral GE context; writes the report."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("comparisons").add_dataframe_asset("rows") \
        .add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(comparisons_suite())
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="comparisons", data=batch, suite=suite))
    frame = table.select(["comparison_id", "source", "task_id", "annotator", "margin_level", "safety_category",
                          "chosen", "rejected"]).to_pandas()
    frame["chosen_differs"] = frame["chosen"] != frame["rejected"]  # GE has no "pair not equal" expectation
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    failed = [f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column') or r.expectation_config.kwargs.get('column_list')}): "
              f"{r.result.get('unexpected_count')} unexpected"
              for r in result.results if not r.success]
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(result.to_json_dict(), indent=2, default=str))
    return ValidationResult(bool(result.success), failed, report_path)
