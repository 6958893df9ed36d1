"""The comparisons' Great Expectations suite (data quality beyond the contract): what a published preference dataset must satisfy.

One label per task per annotator, a margin level from the paper's four, chosen
differs from rejected, no empty answers, unique annotation ids. The harvest
refuses to publish when it fails and keeps the full GE report.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from alignline.storage.validation import ValidationFailed, ValidationResult, run_suite  # noqa: F401 (re-exported)

from alignline.storage.schemas import MARGIN_LEVELS, SAFETY_CATEGORIES


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


def check_comparisons(table: pa.Table, report_path: str | Path) -> ValidationResult:
    """The data-quality suite on a COMPARISON_SCHEMA table (the contract itself is checked by
    `storage.schemas.validate_comparisons` when the table is built); writes the GE report."""
    frame = table.select(["comparison_id", "source", "task_id", "annotator", "margin_level", "safety_category",
                          "chosen", "rejected"]).to_pandas()
    frame["chosen_differs"] = frame["chosen"] != frame["rejected"]  # GE has no "pair not equal" expectation
    return run_suite("comparisons", comparisons_suite, frame, report_path)
