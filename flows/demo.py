"""`alignline demo`: the whole line on the built-in data, with a wall-time table and where to look.

servers -> corpus -> tokenizer + base model -> SFT (V0) -> evaluate and promote V0
-> RLHF iterations V1, V2 with the scripted annotator, each evaluated and
promoted through the gates. Each stage is its own Prefect flow run; a demo
ledger skips stages that already finished, so a rerun (or a rerun after a
crash) continues where it stopped.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.storage import DataDir, ModelRef
from alignline.storage.ledger import StepLedger

console = Console()
ITERATIONS = (1, 2)
REVIEWER = "alignline-demo"


def _promote_if_gates_pass(cfg: RunConfig, version: str, reason: str, override: bool = False) -> dict[str, Any]:
    from alignline.flows.promote import PromotionRefused, run_promote

    try:
        return run_promote(cfg, "policy", version, reviewer=REVIEWER, reason=reason, override=override)
    except PromotionRefused as e:  # the demo respects the gates; a reviewer may still override
        console.log(f"[yellow]not promoted: {e}")
        return {"promoted": None, "refused": str(e)}


def _stages(cfg: RunConfig) -> list[tuple[str, Callable[[dict], dict[str, Any]]]]:
    from alignline.flows.corpus import run_corpus
    from alignline.flows.evaluate import run_evaluate
    from alignline.flows.iteration import run_iterate
    from alignline.flows.pretrain import run_pretrain
    from alignline.flows.sft import run_sft

    def version_of(ref: str) -> str:
        return ModelRef.parse(ref).version

    stages: list[tuple[str, Callable[[dict], dict[str, Any]]]] = [
        ("corpus", lambda done: run_corpus(cfg)),
        ("pretrain", lambda done: run_pretrain(cfg)),
        ("sft", lambda done: run_sft(cfg)),
        ("evaluate V0", lambda done: run_evaluate(cfg, policy="candidate")),
        # V0 has no champion or parent policy to be compared with: the demo's reviewer starts the line with a
        # recorded override (the gates judge every later version against the champion of the day).
        ("promote V0", lambda done: _promote_if_gates_pass(cfg, version_of(done["evaluate V0"]["policy"]),
                                                           "V0: the SFT policy starts the line (nothing to compare "
                                                           "it with yet)", override=True)),
    ]
    for n in ITERATIONS:
        stages.append((f"iterate V{n}", lambda done, n=n: run_iterate(cfg, iteration=n, bot=True)))
        stages.append((f"promote V{n}", lambda done, n=n: _promote_if_gates_pass(
            cfg, version_of(done[f"iterate V{n}"]["candidate"]), f"V{n}: passed the gates against the champion")))
    return stages


def run_demo(cfg: RunConfig) -> int:
    from alignline.infra import prefect_server, require_up, up

    timings: list[tuple[str, float, str]] = []
    started = time.monotonic()
    console.rule("[bold]alignline demo: servers")
    up(cfg, say=lambda msg: console.log(msg))
    timings.append(("servers up", time.monotonic() - started, "ran"))
    require_up(cfg)
    with prefect_server(cfg):  # every stage's flow runs land on the server engineers watch
        _run_stages(cfg, timings)
    return 0


def _run_stages(cfg: RunConfig, timings: list[tuple[str, float, str]]) -> None:
    stages = _stages(cfg)
    ledger = StepLedger(DataDir(cfg.home).iteration_ledger("demo"), [name for name, _ in stages], iteration="demo")
    for name, stage in stages:
        if ledger.done(name):  # a rerun reports the seconds the stage took when it ran
            timings.append((name, float(ledger.data["steps"][name].get("stage_seconds", 0.0)), "done earlier"))
            continue
        console.rule(f"[bold]alignline demo: {name}")
        t0 = time.monotonic()
        result = stage(ledger.data["steps"])
        seconds = time.monotonic() - t0
        ledger.record(name, {**result, "stage_seconds": seconds})
        timings.append((name, seconds, "ran"))
        console.log(f"{name} done in {seconds:.0f}s")
    _summary(cfg, timings, ledger.data["steps"])
    summary_file = cfg.home / "demo-summary.json"
    summary_file.write_text(json.dumps({"timings_s": {n: s for n, s, _ in timings}, "results": ledger.data["steps"]},
                                       indent=2, default=str))
    _log_to_mlflow(cfg, timings, summary_file)
    console.print(f"summary written to {summary_file} and logged to MLflow (experiment 'demo')")


def _log_to_mlflow(cfg: RunConfig, timings: list[tuple[str, float, str]], summary_file) -> None:
    """The stage wall times as one MLflow run, so demo runs can be compared over time."""
    import re

    from alignline.services.tracking import log_artifact, log_metrics, tracked_run

    uri = RunContext(cfg).mlflow_uri
    with tracked_run(uri, "demo", f"demo {cfg.preset}") as run_id:
        log_metrics(uri, run_id, {f"seconds.{re.sub(r'[^a-z0-9]+', '_', name.lower())}": secs
                                  for name, secs, how in timings if how == "ran"})
        log_artifact(uri, run_id, summary_file)


def _win_rate(report: dict[str, Any], group: str) -> str:
    """'0.58 [0.41, 0.74] n=32': the win rate with its 95% Wilson interval and the prompts behind it."""
    w = report.get(group) or {}
    if w.get("win_rate") is None:
        return "-"
    if "win_rate_low" not in w:
        return f"{w['win_rate']:.2f}"
    return f"{w['win_rate']:.2f} [{w['win_rate_low']:.2f}, {w['win_rate_high']:.2f}] n={w.get('n', 0)}"


def _version_rows(cfg: RunConfig, results: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per version the demo made (V0 = SFT, Vn = iteration n): its evaluation against the champion of the
    day and whether the gates let it through, so a reviewer sees why the champion is what it is."""
    from alignline.services.registry import RegistryError

    registry = RunContext(cfg).registry
    rows = []
    for stage, result in results.items():
        kind, _, label = stage.partition(" ")
        if kind not in ("evaluate", "iterate"):
            continue
        ref = result.get("candidate") or result.get("policy")
        try:
            report = registry.load_report("policy", ModelRef.parse(ref).version) or {}
        except RegistryError:
            report = {}
        decision = results.get(f"promote {label}", {})
        verdict = "promoted" if decision.get("promoted") else "refused" if decision.get("refused") else "-"
        rows.append((f"{label} = {ref}", report.get("baseline", "-"), _win_rate(report, "rm_win"),
                     _win_rate(report, "oracle_win"), f"{report.get('mean_oracle', float('nan')):.3f}",
                     f"{report.get('safety_violation_rate', float('nan')):.2f}", verdict))
    return rows


def _summary(cfg: RunConfig, timings: list[tuple[str, float, str]], results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="demo stages (wall time)")
    for col in ("stage", "seconds", ""):
        table.add_column(col)
    for name, seconds, how in timings:
        table.add_row(name, f"{seconds:.0f}", how)
    table.add_row("total", f"{sum(s for _, s, _ in timings):.0f}", "")
    console.print(table)
    versions = Table(title="versions, each evaluated against the champion of the day on held-out evaluation prompts (win rates "
                           "count ties half, with 95% Wilson intervals; oracle: mean oracle score; unsafe: safety "
                           "violation rate)")
    for col in ("version", "vs", "RM win", "oracle win", "oracle", "unsafe", "gates"):
        versions.add_column(col, no_wrap=True)
    for row in _version_rows(cfg, results):
        versions.add_row(*row)
    console.print(versions)
    s = cfg.servers
    where = Table(title="where to look", show_header=False)
    where.add_row("MLflow registry (policy, rm-*, base)", f"{s.url(s.mlflow_port)}/#/models/policy")
    where.add_row("Prefect (flow runs)", f"{s.url(s.prefect_port)}/runs")
    where.add_row("Label Studio (annotators)", f"{s.url(s.label_studio_port)}/projects")
    where.add_row("Ray dashboard", s.url(s.ray_dashboard_port))
    where.add_row("data dir", str(cfg.home))
    for name, result in results.items():
        for key in ("report", "model_card", "model_card_mlflow", "url"):
            if isinstance(result, dict) and key in result:
                where.add_row(f"{name}: {key}", str(result[key]))
    console.print(where)
