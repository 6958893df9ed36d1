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

import contextlib
from typing import Any, Callable

from prefect import flow, get_run_logger, task

from alignline.annotation import connect, iteration_progress
from alignline.config import RunConfig
from alignline.flows.annotate import run_bot
from alignline.flows.collect import run_collect
from alignline.flows.artifacts import publish_iteration
from alignline.flows.context import RunContext, label_studio_token
from alignline.flows.evaluate import run_evaluate
from alignline.flows.harvest import run_harvest
from alignline.flows.reward import run_reward
from alignline.flows.retries import SERVER_RETRIES
from alignline.flows.rlhf import run_rlhf
from alignline.flows.waits import annotation_wait_key, annotations_complete, hand_off, resumer
from alignline.storage import DataDir, ModelRef
from alignline.storage.faults import fault_point
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


@task(**SERVER_RETRIES)
def annotation_progress(ls_url: str, home: str, projects: tuple[str, ...], iteration: int) -> dict[str, int]:
    annotated, total = iteration_progress(connect(ls_url, label_studio_token(home)), projects, iteration)
    return {"tasks": total, "annotated": annotated}


def await_annotations(ctx: RunContext, iteration: int) -> dict[str, Any]:
    """Every task of this iteration annotated: now, or after the run waited in the Prefect server (suspended or
    paused, resumed by the resumer when Label Studio reports the batch complete; see flows/waits.py)."""
    ac = ctx.cfg.annotation
    args = (ctx.label_studio_url, str(ctx.cfg.home), (ac.helpfulness_project, ac.safety_project), iteration)
    progress = annotation_progress(*args)
    if progress["annotated"] < progress["tasks"]:
        get_run_logger().info("iteration %d: %d/%d tasks annotated", iteration, progress["annotated"], progress["tasks"])
        hand_off(annotation_wait_key(iteration), ac.wait_timeout_s, ac.poll_interval_s, f"iteration {iteration}")
        progress = annotation_progress(*args)  # resumed: complete, or an engineer chose to go on with what is there
    return {**progress, "timed_out": False}


@flow(name="iteration", log_prints=True)
def iteration_flow(cfg: RunConfig, iteration: int, bot: bool = False) -> dict[str, Any]:
    logger = get_run_logger()
    ctx = RunContext(cfg)
    ledger = iteration_ledger(ctx.data, iteration)
    ac = cfg.annotation
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "collect": lambda: run_collect(cfg, iteration=iteration, batch=iteration),
        "annotate": lambda: run_bot(cfg) if bot else {"annotators": "people (Label Studio)"},
        "wait": lambda: await_annotations(ctx, iteration),
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
        fault_point("iterate.step_done")  # a kill here: the step reruns, and its datasets/models are found again
        ledger.record(step, result)
    evaluation = ledger.result("evaluate")
    publish_iteration(iteration, {s: ledger.result(s) for s in STEPS}, ctx.mlflow_uri)
    return {"iteration": iteration, "candidate": evaluation["policy"], "baseline": evaluation["baseline"],
            "win_rate": evaluation["win_rate"], "gates": evaluation["gates"],
            "model_card": evaluation["model_card_mlflow"], "ledger": str(ledger.path)}


def run_iterate(cfg: RunConfig, iteration: int | None = None, bot: bool = False) -> dict[str, Any]:
    """One iteration at a time per data dir: a second `iterate` exits naming the one that runs (LockHeld)."""
    data = DataDir(cfg.home)
    waiting = resumer(annotations_complete(cfg), cfg.annotation.poll_interval_s) if not bot else contextlib.nullcontext()
    with data.lock("iterate"), waiting:  # this process resumes its own run when `serve` is not running
        fault_point("iterate.locked")
        return iteration_flow(cfg, iteration or next_iteration(data), bot)
