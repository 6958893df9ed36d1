"""Great Expectations, the way every published dataset here is checked before it is published.

A suite runs on a pandas frame in an ephemeral context; the full GE report is
written as JSON beside the data, and a failure names each failed expectation.
Callers (corpus, comparisons) only build their suite and frame.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class ValidationFailed(RuntimeError):
    """An expectation failed; `report` is the path of the GE report."""

    def __init__(self, message: str, report: Path):
        super().__init__(f"{message} (report: {report})")
        self.report = report


@dataclass
class ValidationResult:
    success: bool
    failed: list[str]      # "expectation_type(column): unexpected_count ..."
    report: Path


def run_suite(name: str, build_suite: Callable[[], Any], frame: Any, report_path: str | Path,
              examples: bool = False) -> ValidationResult:
    """Validate `frame` (pandas) against the suite `build_suite()` makes (GE needs its context first)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in flow logs
    batch = context.data_sources.add_pandas(name).add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=context.suites.add(build_suite())))
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    failed = []
    for r in result.results:
        if r.success:
            continue
        kwargs = r.expectation_config.kwargs
        line = f"{r.expectation_config.type}({kwargs.get('column') or kwargs.get('column_list')}): " \
               f"{r.result.get('unexpected_count')} unexpected"
        if examples:
            line += f", e.g. {str(r.result.get('partial_unexpected_list', [])[:2])[:200]}"
        failed.append(line)
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(result.to_json_dict(), indent=2, default=str))
    return ValidationResult(bool(result.success), failed, report_path)
