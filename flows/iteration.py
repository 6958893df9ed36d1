"""`alignline iterate`: one RLHF version, end to end (Llama 2 §3.2-3.4).

collect pairs from the latest policy -> annotators (or `--bot`) label them ->
harvest -> retrain both reward models -> rejection sampling (-> PPO, GAtt,
context distillation as configured) -> evaluate the new candidate against the
champion. Each step is a Prefect subflow; a ledger per iteration records the
steps that finished, so a rerun after a crash continues at the step that
failed. The steps themselves are idempotent (content-addressed datasets, task
import by content key, an annotation ledger), so a step that died halfway and
runs again duplicates nothing and loses nothing.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger

from alignline.config import RunConfig
from alignline.flows.context import RunContext

STEPS = ("collect", "annotate", "wait", "harvest", "reward", "rlhf", "evaluate")


class Ledger:
    """`<home>/iterations/iteration-N.json`: finished steps and what they returned (written atomically)."""

    def __init__(self, home: Path, iteration: int | str, steps: tuple[str, ...] = STEPS):
        self.path = home / "iterations" / f"iteration-{iteration}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.steps = steps
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"iteration": iteration, "steps": {}}

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def result(self, step: str) -> dict[str, Any]:
        return self.data["steps"][step]

    def record(self, step: str, result: dict[str, Any]) -> None:
        self.data["steps"][step] = result
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.data, fh, indent=2, default=str)
        os.replace(tmp, self.path)

    @property
    def complete(self) -> bool:
        return all(self.done(s) for s in self.steps)


def next_iteration(home: Path) -> int:
    """The first iteration whose ledger is not complete (an unfinished one is resumed)."""
    n = 1
    while (home / "iterations" / f"iteration-{n}.json").exists() and Ledger(home, n).complete:
        n += 1
    return n


def wait_for_annotations(ctx: RunContext, iteration: int, timeout_s: float, poll_s: float,
                         say: Callable[[str], None]) -> dict[str, Any]:
    """Poll Label Studio until every task of this iteration has an annotation, or the deadline passes."""
    from alignline.annotation import connect, iter_tasks
    from alignline.annotation.projects import find_project

    cfg = ctx.cfg.annotation
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    deadline = time.monotonic() + timeout_s
    while True:
        pending = total = 0
        for title in (cfg.helpfulness_project, cfg.safety_project):
            project = find_project(client, title)
            if project is None:
                continue
            for task in iter_tasks(client, project):
                if (task.data or {}).get("iteration") != iteration:
                    continue
                total += 1
                pending += not (getattr(task, "total_annotations", 0) or 0)
        say(f"iteration {iteration}: {total - pending}/{total} tasks annotated")
        if pending == 0 or time.monotonic() > deadline:
            return {"tasks": total, "annotated": total - pending, "timed_out": pending > 0}
        time.sleep(poll_s)


@flow(name="iteration", log_prints=True)
def iteration_flow(cfg: RunConfig, iteration: int, bot: bool = False) -> dict[str, Any]:
    from alignline.flows.annotate import run_bot
    from alignline.flows.collect import run_collect
    from alignline.flows.evaluate import run_evaluate
    from alignline.flows.harvest import run_harvest
    from alignline.flows.reward import run_reward
    from alignline.flows.rlhf import run_rlhf

    logger = get_run_logger()
    ctx = RunContext(cfg)
    ledger = Ledger(cfg.home, iteration)
    a = cfg.annotation
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "collect": lambda: run_collect(cfg, iteration=iteration, batch=iteration),
        "annotate": lambda: run_bot(cfg) if bot else {"annotators": "people (Label Studio)"},
        "wait": lambda: wait_for_annotations(ctx, iteration, a.wait_timeout_s, a.poll_interval_s, logger.info),
        "harvest": lambda: run_harvest(cfg),
        "reward": lambda: run_reward(cfg),
        "rlhf": lambda: run_rlhf(cfg, iteration=iteration),
        "evaluate": lambda: run_evaluate(cfg, policy=_policy_version(ledger.result("rlhf"))),
    }
    for step in STEPS:
        if ledger.done(step):
            logger.info("iteration %d: %s already done (ledger %s)", iteration, step, ledger.path)
            continue
        logger.info("iteration %d: %s", iteration, step)
        result = steps[step]()
        if step == "wait" and result["timed_out"]:
            raise TimeoutError(f"iteration {iteration}: {result['annotated']}/{result['tasks']} tasks annotated before "
                               f"the deadline ({a.wait_timeout_s:.0f}s); rerun `alignline iterate` to keep waiting")
        ledger.record(step, result)
    evaluation = ledger.result("evaluate")
    return {"iteration": iteration, "candidate": evaluation["policy"], "baseline": evaluation["baseline"],
            "win_rate": evaluation["win_rate"], "gates": evaluation["gates"],
            "model_card": evaluation["model_card_mlflow"], "ledger": str(ledger.path)}


def _policy_version(rlhf_result: dict[str, Any]) -> str:
    ref = rlhf_result.get("policy") or rlhf_result.get("candidate") or ""
    return ref.split("/", 1)[1] if "/" in ref else "candidate"


def run_iterate(cfg: RunConfig, iteration: int | None = None, bot: bool = False) -> dict[str, Any]:
    return iteration_flow(cfg, iteration or next_iteration(cfg.home), bot)
