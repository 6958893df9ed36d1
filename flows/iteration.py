"""`alignline iterate`: one RLHF version, end to end (Llama 2 §3.2-3.4).

collect pairs from the latest policy -> annotators (or `--bot`) label them ->
harvest -> retrain both reward models -> rejection sampling (-> PPO, GAtt,
context distillation as configured) -> evaluate the new candidate against the
champion. Each step is a Prefect subflow; a step ledger per iteration
(`<home>/iterations/iteration-N.json`) records the steps that finished, so a
rerun after a crash continues at the step that failed. The steps themselves are
idempotent (content-addressed datasets, task import by content key, an
annotation ledger), so a step that died halfway and runs again duplicates
nothing and loses nothing.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from prefect import flow, get_run_logger

from alignline.annotation import connect, iteration_progress
from alignline.config import RunConfig
from alignline.flows.annotate import run_bot
from alignline.flows.collect import run_collect
from alignline.flows.context import RunContext
from alignline.flows.evaluate import run_evaluate
from alignline.flows.harvest import run_harvest
from alignline.flows.reward import run_reward
from alignline.flows.rlhf import run_rlhf
from alignline.storage import DataDir, ModelRef
from alignline.storage.ledger import StepLedger

STEPS = ("collect", "annotate", "wait", "harvest", "reward", "rlhf", "evaluate")


def iteration_ledger(data: DataDir, iteration: int) -> StepLedger:
    return StepLedger(data.iteration_ledger(iteration), STEPS, iteration=iteration)


def next_iteration(data: DataDir) -> int:
    """The first iteration whose ledger is not complete (an unfinished one is resumed)."""
    n = 1
    while data.iteration_ledger(n).exists() and iteration_ledger(data, n).complete:
        n += 1
    return n


def wait_for_annotations(ctx: RunContext, iteration: int, timeout_s: float, poll_s: float,
                         say: Callable[[str], None]) -> dict[str, Any]:
    """Poll Label Studio until every task of this iteration has an annotation, or the deadline passes."""
    ac = ctx.cfg.annotation
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    deadline = time.monotonic() + timeout_s
    while True:
        annotated, total = iteration_progress(client, (ac.helpfulness_project, ac.safety_project), iteration)
        say(f"iteration {iteration}: {annotated}/{total} tasks annotated")
        if annotated == total or time.monotonic() > deadline:
            return {"tasks": total, "annotated": annotated, "timed_out": annotated < total}
        time.sleep(poll_s)


@flow(name="iteration", log_prints=True)
def iteration_flow(cfg: RunConfig, iteration: int, bot: bool = False) -> dict[str, Any]:
    logger = get_run_logger()
    ctx = RunContext(cfg)
    ledger = iteration_ledger(ctx.data, iteration)
    ac = cfg.annotation
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "collect": lambda: run_collect(cfg, iteration=iteration, batch=iteration),
        "annotate": lambda: run_bot(cfg) if bot else {"annotators": "people (Label Studio)"},
        "wait": lambda: wait_for_annotations(ctx, iteration, ac.wait_timeout_s, ac.poll_interval_s, logger.info),
        "harvest": lambda: run_harvest(cfg),
        "reward": lambda: run_reward(cfg),
        "rlhf": lambda: run_rlhf(cfg, iteration=iteration),
        "evaluate": lambda: run_evaluate(cfg, policy=ModelRef.parse(ledger.result("rlhf")["model"]).version),
    }
    for step in STEPS:
        if ledger.done(step):
            logger.info("iteration %d: %s already done (ledger %s)", iteration, step, ledger.path)
            continue
        logger.info("iteration %d: %s", iteration, step)
        result = steps[step]()
        if step == "wait" and result["timed_out"]:
            raise TimeoutError(f"iteration {iteration}: {result['annotated']}/{result['tasks']} tasks annotated before "
                               f"the deadline ({ac.wait_timeout_s:.0f}s); rerun `alignline iterate` to keep waiting")
        ledger.record(step, result)
    evaluation = ledger.result("evaluate")
    return {"iteration": iteration, "candidate": evaluation["policy"], "baseline": evaluation["baseline"],
            "win_rate": evaluation["win_rate"], "gates": evaluation["gates"],
            "model_card": evaluation["model_card_mlflow"], "ledger": str(ledger.path)}


def run_iterate(cfg: RunConfig, iteration: int | None = None, bot: bool = False) -> dict[str, Any]:
    """One iteration at a time per data dir: a second `iterate` exits naming the one that runs (LockHeld)."""
    data = DataDir(cfg.home)
    with data.lock("iterate"):
        return iteration_flow(cfg, iteration or next_iteration(data), bot)
