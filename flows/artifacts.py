"""Reports as Prefect artifacts: what a stage produced, visible on its flow run in the Prefect UI.

Each stage's report of record stays where it is (MLflow runs and registry, the
catalog, the data dir); the artifact is the engineer's view of it on the run:
a Markdown summary, a table, and links to MLflow (a run, a model version) or
the report file. Keys are stable per report kind (`corpus-report`,
`reward-report`, ...), so the UI's Artifacts page shows each kind's history.
A Prefect API that refuses an artifact costs a warning, never the stage.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Iterable
from uuid import UUID

from prefect import artifacts
from prefect.logging import get_logger

logger = get_logger("alignline.artifacts")


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-") or "report"


def mlflow_base(tracking_uri: str) -> str | None:
    """The MLflow UI address for an HTTP tracking URI; None for a file/sqlite store (no UI to link)."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def mlflow_run_url(tracking_uri: str, run_id: str) -> str | None:
    base = mlflow_base(tracking_uri)
    return f"{base}/#/runs/{run_id}" if base and run_id else None


def mlflow_model_url(tracking_uri: str, ref: str) -> str | None:
    """'policy/5' -> the model version page."""
    base = mlflow_base(tracking_uri)
    if not base or "/" not in ref:
        return None
    name, version = ref.rsplit("/", 1)
    return f"{base}/#/models/{name}/versions/{version}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "-" if value is None else str(value)


def _safely(make, *args, **kwargs) -> UUID | None:
    try:
        return make(*args, **kwargs)
    except Exception as e:  # the API refused or is gone: the stage's own outputs are already stored
        logger.warning("could not publish Prefect artifact %s: %s", kwargs.get("key"), e)
        return None


def markdown(key: str, lines: Iterable[str], description: str) -> UUID | None:
    return _safely(artifacts.create_markdown_artifact, markdown="\n".join(lines), key=artifact_key(key),
                   description=description)


def table(key: str, rows: list[dict[str, Any]], description: str) -> UUID | None:
    if not rows:
        return None
    plain = [{k: _fmt(v) for k, v in row.items()} for row in rows]
    return _safely(artifacts.create_table_artifact, table=plain, key=artifact_key(key), description=description)


def link(key: str, url: str | None, text: str, description: str) -> UUID | None:
    if not url:
        return None
    return _safely(artifacts.create_link_artifact, link=url, link_text=text, key=artifact_key(key),
                   description=description)


def view(publish):
    """A publisher never fails its stage: a report it cannot render costs a warning (the stage's outputs are stored)."""
    @functools.wraps(publish)
    def safe(*args, **kwargs) -> None:
        try:
            publish(*args, **kwargs)
        except Exception as e:
            logger.warning("could not publish %s artifacts: %r", publish.__name__, e)
    return safe


def _counts_rows(counts: dict[str, int], what: str) -> list[dict[str, Any]]:
    return [{what: k, "documents": v} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]


# -- one publisher per report ---------------------------------------------------------------------


@view
def publish_corpus(result: dict[str, Any]) -> None:
    """Corpus flow: the published version, drop and reject reasons, contamination, and the report file."""
    lines = [f"# Corpus {result['corpus']}", "",
             f"- documents kept: **{result['documents']}**",
             f"- dropped: {sum(result.get('dropped_by_reason', {}).values())} "
             f"(`{result.get('corpus-dropped', '-')}`), rejected on read: "
             f"{sum(result.get('rejects_by_reason', {}).values())} (`{result.get('corpus-rejects', '-')}`)",
             f"- validation: `{result.get('validation', '-')}`"]
    if result.get("contamination"):
        lines.append(f"- contamination: {_fmt(result['contamination'])}")
    lines.append(f"- full report: `{result.get('report', '-')}`")
    markdown("corpus-report", lines, f"corpus {result['corpus']}")
    table("corpus-drops", _counts_rows(result.get("dropped_by_reason", {}), "drop reason"),
          f"why documents left corpus {result['corpus']}")
    report = result.get("report")
    if report:
        link("corpus-report-file", Path(report).resolve().as_uri(), Path(report).name,
             "the corpus report (on the machine that ran the flow)")


@view
def publish_reward(result: dict[str, Any], mlflow_uri: str) -> None:
    """Reward flow: held-out accuracy by rating level per model, linked to the MLflow runs and versions."""
    rows = [{"metric": k, "value": v} for k, v in sorted(result.get("metrics", {}).items())]
    table("reward-report", rows, f"reward models {', '.join(result.get('models', {}).values())}: held-out metrics")
    lines = ["# Reward models", ""]
    for rm, ref in result.get("models", {}).items():
        run = mlflow_run_url(mlflow_uri, result.get("run_ids", {}).get(rm, ""))
        model = mlflow_model_url(mlflow_uri, ref)
        lines.append(f"- **{rm}** `{ref}`" + (f": [version]({model})" if model else "") + (f", [run]({run})" if run else ""))
    for rm, why in result.get("skipped", {}).items():
        lines.append(f"- {rm}: skipped ({why})")
    lines += ["", f"- data: {', '.join(result.get('data', []))}", f"- held-out pairs: {result.get('heldout_pairs', '-')}",
              f"- drift alert: {result.get('drift_alert', False)}"]
    markdown("reward-summary", lines, "reward models and where they are in MLflow")


@view
def publish_evaluation(result: dict[str, Any], mlflow_uri: str) -> None:
    """Evaluate flow: win rates with intervals, safety, gates; the model card in MLflow."""
    rows = [{"measure": k, "value": result.get(k)} for k in
            ("win_rate", "win_rate_95ci", "n", "oracle_win_rate", "mean_oracle", "safety_violation_rate",
             "false_refusal_rate")]
    table("evaluation-report", rows, f"{result['policy']} vs {result['baseline']} (judges: {result.get('judges')})")
    model = mlflow_model_url(mlflow_uri, result["policy"])
    card = result.get("model_card_mlflow", "")
    run_id = card.split("/")[1] if card.startswith("runs:/") else ""
    run = mlflow_run_url(mlflow_uri, run_id)
    lines = [f"# Evaluation of {result['policy']} against {result['baseline']}", "",
             f"- win rate {_fmt(result.get('win_rate'))} (95% CI {_fmt(result.get('win_rate_95ci'))}, n={result.get('n')})",
             f"- gates: {result.get('gates', '-')}", f"- evaluation set `{result.get('eval_set', '-')}`",
             f"- promote with `alignline promote {result['policy'].replace('/', ' ')} --reviewer NAME --reason TEXT` "
             "or the `alignline-promote/promote` deployment"]
    if model:
        lines.append(f"- [model version in MLflow]({model})")
    if run:
        lines.append(f"- [evaluation run and model card]({run})")
    markdown("evaluation-summary", lines, f"evaluation of {result['policy']}")
    link("model-card", run, f"model card of {result['policy']}", "the model card in MLflow (evaluation run artifacts)")


@view
def publish_harvest(result: dict[str, Any]) -> None:
    """Harvest flow: per kind, new and total comparisons and what was quarantined."""
    rows = [{"kind": kind, "dataset": r.get("dataset"), "new annotations": r.get("new_annotations", 0),
             "new comparisons": r.get("new_comparisons", 0), "total": r.get("total_comparisons", 0),
             "quarantined": sum(v for v in (r.get("counts") or {}).values() if isinstance(v, int)),
             "note": r.get("note", "")}
            for kind, r in result.items()]
    table("harvest-report", rows, "annotations harvested into comparison datasets")


@view
def publish_iteration(iteration: int, steps: dict[str, dict[str, Any]], mlflow_uri: str) -> None:
    """Iteration flow: one row per step with its main outputs; the candidate's MLflow page."""
    rows = [{"step": step, "result": _fmt({k: v for k, v in (res or {}).items() if not isinstance(v, dict)})[:400]}
            for step, res in steps.items()]
    table(f"iteration-{iteration}", rows, f"RLHF iteration {iteration}: steps and outputs")
    evaluation = steps.get("evaluate") or {}
    if evaluation.get("policy"):
        link(f"iteration-{iteration}-candidate", mlflow_model_url(mlflow_uri, evaluation["policy"]),
             f"candidate {evaluation['policy']}", "the iteration's candidate in the MLflow registry")

