"""`alignline serve`: every stage as a Prefect deployment, so engineers start, watch and resume runs from the UI.

One long-lived process (a Prefect runner, as `prefect.serve` runs; no work pool) registers a deployment per
stage and runs what is started from the UI, the API or a schedule, on this data
dir's servers. `alignline up` starts it as a fifth managed process
(`servers.prefect_serve`, health on `servers.prefect_serve_port`); it can also run
in a terminal of its own. Each deployment's parameters are typed, so the UI shows
a form: the preset, `--set`-style overrides, and the stage's own inputs
(iteration, dataset refs). A run starts from the config `serve` was started with
(written to `servers/serve/run-config.toml`); choosing another preset keeps only
its `[servers]` section. Beside the runner, the resumer resumes iteration runs
suspended while annotators work (flows/waits.py).

    alignline serve                                  # or: alignline up (starts it too)
    prefect deployment run alignline-iterate/iterate -p bot=true --watch
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal, get_args

from prefect import Flow, flow, get_run_logger
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.logging import get_logger

from alignline.config import PRESET_NAMES, RunConfig, load_config
from alignline.config.dump import dump_toml
from alignline.storage import DataDir

Preset = Literal["tiny", "small", "llama2-7b", "llama2-13b", "llama2-70b"]
assert get_args(Preset) == PRESET_NAMES, "Preset must list alignline.config.PRESET_NAMES"

HOME_ENV = "ALIGNLINE_HOME"
TAGS = ["alignline"]


# -- the config a UI-started run uses ---------------------------------------------------------------

def config_files(home: Path) -> tuple[Path, Path]:
    """(the full resolved config, its [servers] section alone) that `serve` writes for its runs."""
    folder = DataDir(home).server("serve")
    return folder / "run-config.toml", folder / "servers-config.toml"


def write_config_files(cfg: RunConfig) -> tuple[Path, Path]:
    full, servers_only = config_files(cfg.home)
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(dump_toml(cfg))
    servers_only.write_text(dump_toml(cfg, ["servers"], with_preset=False))
    return full, servers_only


def console_config(preset: str | None, overrides: list[str] | None) -> RunConfig:
    """The run config of a UI-started run: `serve`'s config, then the form's preset and overrides."""
    home = Path(os.environ[HOME_ENV])
    full, servers_only = config_files(home)
    base = load_config(file=full, home=home)
    if preset is None or preset == base.preset:
        return load_config(file=full, overrides=overrides or (), home=home)
    return load_config(preset=preset, file=servers_only, overrides=overrides or (), home=home)


def _ready(preset: str | None, overrides: list[str] | None, needs: tuple[str, ...] = ()) -> RunConfig:
    """The run's config, once the servers the stage uses (`needs`; empty: all of them) answer."""
    from alignline.flows.reviewers import use_identity
    from alignline.infra import ServersDown, require_up, status

    cfg = console_config(preset, overrides)
    use_identity(cfg)  # servers.auth: the run calls the servers as the pipeline, as the CLI does
    if not needs:
        require_up(cfg)
    elif down := [s.name for s in status(cfg) if s.name in needs and not s.healthy]:
        raise ServersDown(f"this stage needs {', '.join(down)} of {cfg.home}: run `alignline up` first")
    get_run_logger().info("config: preset %s, data dir %s, overrides %s", cfg.preset, cfg.home, overrides or "none")
    return cfg


# -- one console flow per stage: typed parameters (the UI form), wiring only -------------------------

@flow(name="alignline-corpus")
def corpus(preset: Preset | None = None, overrides: list[str] | None = None, sources: list[str] | None = None,
           eval_sets: list[str] | None = None) -> dict[str, Any]:
    """Clean, deduplicate, audit and publish a corpus version.

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`, e.g. `corpus.max_documents=5000`
        sources: `local` or paths of JSONL, Parquet or text folders (empty: corpus.sources)
        eval_sets: evaluation sets checked for contamination (empty: corpus.eval_sets)
    """
    from alignline.flows.corpus import run_corpus

    return run_corpus(_ready(preset, overrides), sources or None, eval_sets or None)


@flow(name="alignline-pretrain")
def pretrain(preset: Preset | None = None, overrides: list[str] | None = None,
             corpus_version: str = "latest") -> dict[str, Any]:
    """Tokenizer and base model on a corpus version, registered as `base`.

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`
        corpus_version: corpus dataset version
    """
    from alignline.flows.pretrain import run_pretrain

    return run_pretrain(_ready(preset, overrides), corpus_version=corpus_version)


@flow(name="alignline-sft")
def sft(preset: Preset | None = None, overrides: list[str] | None = None, data: str | None = None) -> dict[str, Any]:
    """Supervised fine-tuning of the base model, registered as `policy` alias candidate.

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`, e.g. `sft.epochs=3`
        data: demonstrations as DATASET[@VERSION] (e.g. `sft-import@1`) or a JSONL path (empty: built-in set)
    """
    from alignline.flows.sft import run_sft

    return run_sft(_ready(preset, overrides), data=data)


def week_batch(now: dt.date | None = None) -> int:
    """The ISO week as YYYYWW: a weekly schedule's batch number (a rerun in the same week imports nothing new)."""
    year, week, _ = (now or dt.date.today()).isocalendar()
    return year * 100 + week


@flow(name="alignline-collect")
def collect(preset: Preset | None = None, overrides: list[str] | None = None, iteration: int | None = None,
            batch: int | None = None, prompts: str | None = None) -> dict[str, Any]:
    """Sample response pairs from the latest policy into Label Studio (Llama 2 §3.2.1: weekly batches).

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`
        iteration: RLHF version the batch feeds (empty: the next unfinished iteration)
        batch: batch number (empty: this ISO week, YYYYWW)
        prompts: prompt dataset DATASET[@VERSION] (empty: built-in prompts)
    """
    from alignline.flows.collect import run_collect
    from alignline.flows.iteration import next_iteration

    cfg = _ready(preset, overrides)
    return run_collect(cfg, iteration=iteration or next_iteration(DataDir(cfg.home)), batch=batch or week_batch(),
                       prompts=prompts)


@flow(name="alignline-harvest")
def harvest(preset: Preset | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """New annotations into validated comparison datasets (exactly once; unusable ones quarantined with reasons).

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`
    """
    from alignline.flows.harvest import run_harvest

    return run_harvest(_ready(preset, overrides, needs=("label-studio",)))


@flow(name="alignline-reward")
def reward(preset: Preset | None = None, overrides: list[str] | None = None, helpfulness: str | None = None,
           safety: str | None = None) -> dict[str, Any]:
    """Helpfulness and safety reward models, registered as candidates.

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`, e.g. `reward.margin=large`
        helpfulness: helpfulness comparisons DATASET[@VERSION] (empty: latest)
        safety: safety comparisons DATASET[@VERSION] (empty: latest)
    """
    from alignline.flows.reward import run_reward

    return run_reward(_ready(preset, overrides), helpfulness=helpfulness, safety=safety)


@flow(name="alignline-rlhf")
def rlhf(iteration: int, preset: Preset | None = None, overrides: list[str] | None = None,
         prompts: str | None = None) -> dict[str, Any]:
    """Rejection sampling (then PPO, GAtt, context distillation as configured), registered as `policy` candidate.

    Args:
        iteration: RLHF version number (V1, V2, ...)
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`, e.g. `rlhf.ppo_enabled=true`
        prompts: prompt dataset DATASET[@VERSION] (empty: built-in prompts)
    """
    from alignline.flows.rlhf import run_rlhf

    return run_rlhf(_ready(preset, overrides), iteration=iteration, prompts=prompts)


@flow(name="alignline-evaluate")
def evaluate(preset: Preset | None = None, overrides: list[str] | None = None, policy: str = "candidate",
             baseline: str | None = None, suites: list[str] | None = None) -> dict[str, Any]:
    """Evaluate a policy version against the champion on held-out prompts; report and model card to MLflow.

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`
        policy: policy version or alias
        baseline: version to compare with (empty: champion, else the parent)
        suites: extra suites as KIND=FILE, e.g. `truthfulqa=/data/TruthfulQA.csv`
    """
    from alignline.flows.evaluate import run_evaluate

    return run_evaluate(_ready(preset, overrides), policy=policy, baseline=baseline, suites=suites or [])


@flow(name="alignline-iterate")
def iterate(preset: Preset | None = None, overrides: list[str] | None = None, iteration: int | None = None,
            bot: bool = False) -> dict[str, Any]:
    """One RLHF version end to end: collect, annotate, harvest, reward models, RLHF, evaluate.

    While annotators work the run is Suspended (no process waits); it resumes itself when Label Studio reports the
    batch complete, and continues at the step after the wait.

    Args:
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`
        iteration: iteration number (empty: the next unfinished one)
        bot: the scripted annotator labels the batch (demo, tests)
    """
    from alignline.flows.iteration import iteration_flow, next_iteration

    cfg = _ready(preset, overrides)
    data = DataDir(cfg.home)
    with data.lock("iterate"):
        # The iteration's body runs in this flow run (not as a subflow): only a deployment's top-level run can be
        # suspended, and this one is resumed by `serve`'s resumer.
        return iteration_flow.fn(cfg, iteration or next_iteration(data), bot)


@flow(name="alignline-promote-request")
def promote_request(version: str, model: str = "policy", preset: Preset | None = None,
                    overrides: list[str] | None = None) -> dict[str, Any]:
    """Ask for a promotion: re-check the version's evidence and gates as `promote` would, and hand the reviewer the
    command. The champion alias moves only by a reviewer's own `alignline promote` (their credentials never pass
    through Prefect); a failed evidence check fails this run with the reason.

    Args:
        version: version number to promote
        model: registered model
        preset: named preset (empty: the one `serve` was started with)
        overrides: config fields as `section.field=value`
    """
    from alignline.flows.artifacts import markdown, mlflow_model_url, table
    from alignline.flows.context import RunContext
    from alignline.flows.promote import (check_baseline, check_gates, check_still_held_out, gate_policy_in_effect,
                                         stored_report)

    cfg = _ready(preset, overrides, needs=("mlflow",))
    ctx = RunContext(cfg)
    registry = ctx.registry
    info = registry.get(model, version)
    policy = gate_policy_in_effect(registry, model, cfg.evaluation)
    report = stored_report(registry, info)
    check_baseline(registry, info, report)
    check_still_held_out(registry, ctx.catalog, info, report)
    gates = check_gates(registry, info, report, policy)
    passes = all(g["passed"] for g in gates)
    command = (f"alignline promote {model} {info.version} --reviewer NAME --reason TEXT"
               + ("" if passes else " --override"))
    table(f"promotion-{model}-{info.version}", [{"gate": g["name"], "value": g["value"], "rule": g["rule"],
                                                 "passed": g["passed"]} for g in gates],
          f"gates of {info.ref} under gate policy {policy.describe()}")
    page = mlflow_model_url(ctx.mlflow_uri, info.ref)
    markdown(f"promotion-request-{model}-{info.version}", [
        f"# Promotion requested: {info.ref}", "",
        f"- gates: **{'all pass' if passes else 'some FAIL'}** (policy {policy.describe()})",
        f"- baseline: {report.get('baseline', '-')}",
        *( [f"- [version in MLflow]({page})"] if page else []),
        "", "A reviewer promotes with their own account:", "", f"    {command}"],
        f"promotion request for {info.ref}")
    return {"version": info.ref, "gates_pass": passes, "gates": gates, "reviewer_command": command}


CONSOLE: dict[str, Flow] = {"corpus": corpus, "pretrain": pretrain, "sft": sft, "collect": collect,
                            "harvest": harvest, "reward": reward, "rlhf": rlhf, "evaluate": evaluate,
                            "iterate": iterate, "promote-request": promote_request}


def deployments(cfg: RunConfig) -> list[RunnerDeployment]:
    """One deployment per stage, named after it (`alignline-<stage>/<stage>`); `collect` on its schedule if set."""
    out = []
    for name, console in CONSOLE.items():
        schedule = {"cron": cfg.servers.collect_schedule} if name == "collect" and cfg.servers.collect_schedule else {}
        out.append(console.to_deployment(name=name, tags=TAGS, description=console.description,
                                         entrypoint_type=EntrypointType.MODULE_PATH, **schedule))
    return out


def wait_for_prefect(cfg: RunConfig) -> None:
    """Under `up`, the Prefect server may still be starting: wait for any answer from its API."""
    import time

    import requests

    url = f"{cfg.servers.url(cfg.servers.prefect_port)}/api/health"
    deadline = time.monotonic() + cfg.servers.start_timeout_s
    while True:
        try:
            requests.get(url, timeout=3)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Prefect server at {url} within {cfg.servers.start_timeout_s:.0f}s; "
                                   "run `alignline up` first") from None
            time.sleep(1.0)


def run_serve(cfg: RunConfig) -> None:
    """What `alignline serve` calls: register the deployments and run what is started, until SIGTERM/Ctrl-C.

    `prefect.serve` without its settings lookups: the runner's health webserver is started here on
    `servers.prefect_serve_port` (Prefect's own reads its port from settings in a thread that does not see
    `temporary_settings`, and would fall back to 8080)."""
    import asyncio
    import threading

    import uvicorn
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner
    from prefect.runner.server import build_server
    from prefect.utilities.asyncutils import run_coro_as_sync

    from alignline.flows.waits import annotations_complete, resumer
    from alignline.infra import prefect_env, prefect_server

    write_config_files(cfg)
    # The flow-run subprocesses inherit this environment: the API (and its auth string), and where the config is.
    os.environ.update({**prefect_env(cfg), HOME_ENV: str(cfg.home)})
    wait_for_prefect(cfg)
    with prefect_server(cfg), resumer(annotations_complete(cfg), cfg.annotation.poll_interval_s):
        runner = Runner(name=f"alignline-serve-{cfg.servers.prefect_port}", limit=cfg.servers.prefect_serve_limit)
        for deployment in deployments(cfg):
            runner.add_deployment(deployment)
        health = run_coro_as_sync(build_server(runner))
        threading.Thread(target=uvicorn.run, name="alignline-serve-health", daemon=True,
                         kwargs={"app": health, "host": cfg.servers.host, "port": cfg.servers.prefect_serve_port,
                                 "log_level": "warning"}).start()
        names = ", ".join(f"alignline-{n}/{n}" for n in CONSOLE)
        get_logger("alignline.serve").info("serving %s; start them from %s/deployments", names,
                                           cfg.servers.url(cfg.servers.prefect_port))
        try:
            asyncio.run(runner.start())
        except (KeyboardInterrupt, TerminationSignal):
            pass
