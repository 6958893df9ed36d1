"""`alignline demo`: the whole line on the built-in data, with a wall-time table and where to look.

Each stage is its own Prefect flow run (visible in the Prefect UI); this
module only sequences them, times them and prints the summary.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from alignline.config import RunConfig

console = Console()


def _stages(cfg: RunConfig) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    from alignline.flows.corpus import run_corpus
    from alignline.flows.pretrain import run_pretrain
    from alignline.flows.sft import run_sft

    return [
        ("corpus", lambda: run_corpus(cfg)),
        ("pretrain", lambda: run_pretrain(cfg)),
        ("sft", lambda: run_sft(cfg)),
    ]


def run_demo(cfg: RunConfig) -> int:
    from alignline.flows.cli import require_servers
    from alignline.infra import up

    timings: list[tuple[str, float]] = []
    started = time.monotonic()
    console.rule("[bold]alignline demo: servers")
    up(cfg, say=lambda msg: console.log(msg))
    timings.append(("servers up", time.monotonic() - started))
    require_servers(cfg)  # also points Prefect at the server
    results: dict[str, dict[str, Any]] = {}
    for name, stage in _stages(cfg):
        console.rule(f"[bold]alignline demo: {name}")
        t0 = time.monotonic()
        results[name] = stage()
        timings.append((name, time.monotonic() - t0))
        console.log(f"{name} done in {timings[-1][1]:.0f}s")
    _summary(cfg, timings, results)
    summary_file = cfg.home / "demo-summary.json"
    summary_file.write_text(json.dumps({"timings_s": dict(timings), "results": results}, indent=2, default=str))
    console.print(f"summary written to {summary_file}")
    return 0


def _summary(cfg: RunConfig, timings: list[tuple[str, float]], results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="demo stages (wall time)")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, seconds in timings:
        table.add_row(name, f"{seconds:.0f}")
    table.add_row("total", f"{sum(s for _, s in timings):.0f}")
    console.print(table)
    s = cfg.servers
    where = Table(title="where to look", show_header=False)
    where.add_row("MLflow (runs, models, cards)", f"{s.url(s.mlflow_port)}/#/models")
    where.add_row("Prefect (flow runs)", f"{s.url(s.prefect_port)}/runs")
    where.add_row("Label Studio (annotators)", f"{s.url(s.label_studio_port)}/projects")
    where.add_row("Ray dashboard", s.url(s.ray_dashboard_port))
    where.add_row("data dir", str(cfg.home))
    for name, result in results.items():
        for key in ("report", "report_path", "registered", "model", "policy"):
            if key in result:
                where.add_row(f"{name} {key}", str(result[key]))
    console.print(where)
