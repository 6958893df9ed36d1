"""Annotation under load: scripted annotators submit at once while harvests run, on SQLite and on PostgreSQL.

    python benchmarks/annotation_load.py [--annotators 20] [--minutes 3] [--harvest-every 5] [--tasks 3000]
        [--backends sqlite,postgresql] [--home-base /tmp/alignline-load] [--port-base 38000] [--venvs DIR]

For each backend, one run: a data dir `<home-base>/load-<backend>` whose Label Studio (and, for `postgresql`,
its PostgreSQL) `alignline up` starts with `servers.database = <backend>`; a fresh preference project with
`--tasks` tasks; `--annotators` real Label Studio accounts (signed up through the invite link, as people are)
that each submit through `POST /api/tasks/<id>/annotations/` (the labeling editor's call) as fast as the server
answers (`--think-s` adds a pause), each walking the task list from its own offset, so neighbours overlap on
some tasks; meanwhile one harvester publishes `comparisons-helpfulness` every `--harvest-every` seconds; after
`--minutes`, the annotators stop and one final harvest runs. Then every annotation id the server returned must
be in the published comparisons (or the quarantine, with a reason) exactly once: `lost` and `duplicated` must
be 0. A submission that got an error is counted (`submit_errors`). An annotation stored without an id coming
back (`unacknowledged_stored`: SQLite's "database is locked" 500 after the row was written, then the SDK's
automatic retry of the POST stores a second one) must be published too; the harvest keeps each annotator's first
label of a task and quarantines the repeat as a duplicate label, so `quarantine_reasons` shows it.

Printed per backend: annotators x minutes, annotations/s (server-acknowledged submissions over the load
window), submit latency p50/p95, harvest latency p50/p95/max, lost, duplicated; the last line compares the
two backends' annotations/s. Both backends run in one process, one after the other, on the same machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from alignline.annotation import (Judgement, connect, ensure_preference_project, harvest, import_tasks, result_for,
                                  sign_up)
from alignline.annotation.pairs import dialogue_html
from alignline.storage import Catalog, DataDir
from alignline.storage.schemas import MARGIN_LEVELS

KIND = "helpfulness"
DATASET = "comparisons-helpfulness"


def load_tasks(n: int, tag: str) -> list[dict]:
    """Task data as `pair_tasks` makes it (the labeling config reads `conversation`, harvest reads `dialogue`)."""
    rows = []
    for i in range(n):
        dialogue = [{"role": "user", "content": f"[{tag}] How do I rotate log file {i}?"}]
        rows.append({"kind": KIND, "prompt_id": f"{tag}-{i}", "is_safety": False, "dialogue": dialogue,
                     "conversation": dialogue_html(dialogue), "reference": "use logrotate",
                     "response_a": f"Use logrotate with a daily rule for file {i}.",
                     "response_b": f"Delete file {i} by hand every day.", "policy_a": "policy/1",
                     "policy_b": "policy/1", "iteration": 1, "batch": 1})
    return rows


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class LoadReport:
    backend: str
    annotators: int
    load_s: float
    submitted: set[int] = field(default_factory=set)          # ids the server acknowledged
    submit_errors: Counter = field(default_factory=Counter)   # error type -> count
    submit_latency_s: list[float] = field(default_factory=list)
    harvest_latency_s: list[float] = field(default_factory=list)  # periodic harvests during the load
    final_harvest_s: float = float("nan")
    harvest_errors: Counter = field(default_factory=Counter)
    comparisons: int = 0          # rows in the published dataset
    quarantined: int = 0
    quarantine_reasons: Counter = field(default_factory=Counter)
    lost: int = 0                 # acknowledged (or stored) ids in no published dataset
    duplicated: int = 0           # ids published more than once
    unacknowledged_stored: int = 0  # stored, but no acknowledged id: the SDK retried a POST after a 5xx

    @property
    def annotations_per_s(self) -> float:
        return len(self.submitted) / self.load_s if self.load_s > 0 else float("nan")

    def lines(self) -> list[str]:
        h = self.harvest_latency_s
        return [
            f"{self.backend:10s} load held: {self.annotators} annotators x {self.load_s / 60:.2f} min | "
            f"{len(self.submitted)} annotations, {self.annotations_per_s:.1f} annotations/s | "
            f"submit latency p50 {percentile(self.submit_latency_s, 50) * 1000:.0f} ms, "
            f"p95 {percentile(self.submit_latency_s, 95) * 1000:.0f} ms | submit errors "
            f"{sum(self.submit_errors.values())} {dict(self.submit_errors) or ''}",
            f"{'':10s} harvests: {len(h)} during the load, p50 {percentile(h, 50):.2f} s, p95 {percentile(h, 95):.2f} s, "
            f"max {max(h, default=float('nan')):.2f} s, final {self.final_harvest_s:.2f} s, errors "
            f"{sum(self.harvest_errors.values())} {dict(self.harvest_errors) or ''} | published {self.comparisons} "
            f"comparisons + {self.quarantined} quarantined {dict(self.quarantine_reasons) or ''} | lost {self.lost} | duplicated {self.duplicated} | "
            f"stored but unacknowledged {self.unacknowledged_stored}",
        ]


def sign_up_annotators(url: str, admin_token: str, n: int, tag: str) -> list[dict]:
    """n real accounts (invite link, browser sign-up), as `alignline annotators add` makes them."""
    return [sign_up(url, admin_token, f"load-{tag}-{i}@example.org") for i in range(n)]


def _annotate(url: str, token: str, project: int, task_ids: list[int], start: int, think_s: float,
              stop: threading.Event, report: LoadReport, lock: threading.Lock) -> None:
    client = connect(url, token)
    me = client.users.whoami().id
    for k in range(len(task_ids)):
        if stop.is_set():
            return
        task = task_ids[(start + k) % len(task_ids)]
        judgement = Judgement("a" if (task + me) % 3 else "b", MARGIN_LEVELS[(task + me) % len(MARGIN_LEVELS)])
        t0 = time.perf_counter()
        try:
            ann = client.annotations.create(id=task, project=project, result=result_for(judgement),
                                            lead_time=1.0, was_cancelled=False)
        except Exception as e:  # the SDK's ApiError, timeouts, connection resets: counted, the load goes on
            with lock:
                report.submit_errors[getattr(e, "status_code", None) or type(e).__name__] += 1
            continue
        with lock:
            report.submitted.add(int(ann.id))
            report.submit_latency_s.append(time.perf_counter() - t0)
        if think_s:
            stop.wait(think_s)


def run_load(url: str, admin_token: str, work: Path, backend: str, annotators: int, seconds: float,
             harvest_every_s: float, tasks: int, think_s: float = 0.0,
             say: Callable[[str], None] = print) -> LoadReport:
    """One load run against the Label Studio at `url` (see the module doc); the project is deleted at the end."""
    admin = connect(url, admin_token)
    tag = uuid.uuid4().hex[:6]
    project = ensure_preference_project(admin, KIND, f"load test {tag}", overlap_share=1.0)
    work = Path(work) / tag
    catalog, ledger, reports = Catalog(work / "lake"), work / "harvest-ledger.json", work / "reports"
    report = LoadReport(backend, annotators, seconds)
    try:
        import_tasks(admin, project, load_tasks(tasks, tag), batch_size=500)
        task_ids = sorted(t.id for t in admin.tasks.list(project=project, fields="task_only", page_size=1000))
        accounts = sign_up_annotators(url, admin_token, annotators, tag)
        import great_expectations  # noqa: F401  (the harvest's validator: a one-off import, not harvest latency)
        say(f"{backend}: {len(task_ids)} tasks, {len(accounts)} annotator accounts; loading for {seconds:.0f} s")

        def harvest_once() -> float:
            t0 = time.perf_counter()
            harvest(admin, project, KIND, catalog, DATASET, ledger, reports)
            return time.perf_counter() - t0

        stop, lock = threading.Event(), threading.Lock()

        def harvester() -> None:
            while not stop.wait(harvest_every_s):
                try:
                    report.harvest_latency_s.append(harvest_once())
                except Exception as e:  # the next tick retries; nothing is recorded as harvested on failure
                    report.harvest_errors[type(e).__name__] += 1

        workers = [threading.Thread(target=_annotate, args=(url, cred["token"], project, task_ids,
                                                            i * len(task_ids) // annotators, think_s, stop, report,
                                                            lock), daemon=True)
                   for i, cred in enumerate(accounts)]
        reaper = threading.Thread(target=harvester, daemon=True)
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        reaper.start()
        stop.wait(seconds)
        stop.set()
        for w in workers:
            w.join()
        report.load_s = time.perf_counter() - t0  # until the last in-flight submission was answered
        reaper.join()
        report.final_harvest_s = harvest_once()
        _check(admin, project, catalog, report)
    finally:
        admin.projects.delete(id=project)
    return report


def _check(admin, project: int, catalog: Catalog, report: LoadReport) -> None:
    """Every stored annotation id published exactly once (comparisons or quarantine)."""
    stored = {int(a["id"] if isinstance(a, dict) else a.id)
              for t in admin.tasks.list(project=project, fields="all", page_size=1000) for a in (t.annotations or [])}
    published: Counter = Counter()
    if catalog.find(DATASET) is not None:
        rows = catalog.read(DATASET).column("annotation_id").to_pylist()
        report.comparisons = len(rows)
        published.update(int(i) for i in rows)
    if catalog.find(f"{DATASET}-quarantine") is not None:
        table = catalog.read(f"{DATASET}-quarantine")
        ids = table.column("record_id").to_pylist()
        report.quarantined = len(ids)
        report.quarantine_reasons.update(table.column("reason").to_pylist())
        published.update(int(i) for i in ids if str(i).isdigit())
    expected = report.submitted | stored
    report.lost = len(expected - set(published))
    report.duplicated = sum(n - 1 for n in published.values() if n > 1)
    report.unacknowledged_stored = len(stored - report.submitted)


# -- the servers of one backend ------------------------------------------------------------------------------

@contextlib.contextmanager
def backend_servers(backend: str, home_base: Path, port_base: int, venvs: Path | None, keep_up: bool = False):
    """Label Studio (and PostgreSQL) of `<home_base>/load-<backend>`, started by `up`, stopped after unless kept."""
    from alignline.config import load_config
    from alignline.infra import down, up

    home = Path(home_base) / f"load-{backend}"
    offset = {"sqlite": 0, "postgresql": 10}[backend]
    cfg = load_config(home=home, overrides=[
        f"servers.database={backend}", f"servers.label_studio_port={port_base + offset}",
        f"servers.mlflow_port={port_base + offset + 1}", f"servers.prefect_port={port_base + offset + 2}",
        f"servers.ray_port={port_base + offset + 3}", f"servers.ray_dashboard_port={port_base + offset + 4}",
        f"servers.ray_client_port={port_base + offset + 5}", f"servers.postgres_port={port_base + offset + 6}",
        f"servers.ray_min_worker_port={port_base + 100}", f"servers.ray_max_worker_port={port_base + 300}",
        "servers.start_timeout_s=600"])
    if venvs is not None and not DataDir(home).venv("label-studio").exists():
        DataDir(home).root.mkdir(parents=True, mode=0o700, exist_ok=True)
        (DataDir(home).root / "venvs").symlink_to(Path(venvs).resolve())
    names = ["postgres", "label-studio"] if backend == "postgresql" else ["label-studio"]
    up(cfg, names=names, say=lambda m: print(f"[{backend}] {m}"))
    try:
        yield cfg
    finally:
        if not keep_up:
            down(cfg, names=names, say=lambda m: print(f"[{backend}] {m}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--harvest-every", type=float, default=5.0, help="seconds between harvests during the load")
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--think-s", type=float, default=0.0, help="pause after each submission (0: as fast as served)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--home-base", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "alignline-load"))
    ap.add_argument("--port-base", type=int, default=38000)
    ap.add_argument("--venvs", default=None, help="an existing data dir's venvs/ folder to reuse Label Studio's")
    ap.add_argument("--keep-up", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if not 1 <= args.annotators <= 200 or args.minutes <= 0 or args.harvest_every <= 0 or args.tasks < 1:
        ap.error("need 1 <= --annotators <= 200, --minutes > 0, --harvest-every > 0, --tasks >= 1")
    reports = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        with backend_servers(backend, Path(args.home_base), args.port_base,
                             Path(args.venvs) if args.venvs else None, args.keep_up) as cfg:
            from alignline.flows.context import label_studio_token

            url = cfg.servers.url(cfg.servers.label_studio_port)
            reports.append(run_load(url, label_studio_token(cfg.home), DataDir(cfg.home).work("load-bench"),
                                    backend, args.annotators, args.minutes * 60, args.harvest_every, args.tasks,
                                    args.think_s))
    print(f"annotation load, {os.cpu_count()} CPUs (shared machine: figures are noisy)")
    for r in reports:
        print("\n".join(r.lines()))
    if len(reports) == 2:
        a, b = reports
        print(f"{b.backend} vs {a.backend}: x{b.annotations_per_s / a.annotations_per_s:.2f} annotations/s, "
              f"harvest p50 x{percentile(b.harvest_latency_s, 50) / percentile(a.harvest_latency_s, 50):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps([{
            "backend": r.backend, "annotators": r.annotators, "minutes": r.load_s / 60, "submitted": len(r.submitted),
            "annotations_per_s": r.annotations_per_s, "submit_errors": dict(r.submit_errors),
            "submit_p50_s": percentile(r.submit_latency_s, 50), "submit_p95_s": percentile(r.submit_latency_s, 95),
            "harvests": len(r.harvest_latency_s), "harvest_p50_s": percentile(r.harvest_latency_s, 50),
            "harvest_p95_s": percentile(r.harvest_latency_s, 95), "final_harvest_s": r.final_harvest_s,
            "harvest_errors": dict(r.harvest_errors), "comparisons": r.comparisons, "quarantined": r.quarantined,
            "quarantine_reasons": dict(r.quarantine_reasons),
            "lost": r.lost, "duplicated": r.duplicated, "unacknowledged_stored": r.unacknowledged_stored}
            for r in reports], indent=2, default=str))
    return 0 if all(r.lost == 0 and r.duplicated == 0 for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
