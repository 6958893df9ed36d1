"""`alignline demo`: the whole line on the built-in data, with a wall-time table and where to look.

servers -> corpus -> tokenizer + base model -> SFT (V0) -> evaluate and promote V0
-> RLHF iterations V1, V2 with the scripted annotator, each evaluated and
promoted through the gates -> a human evaluation of V2 against V0 and one
red-team round against the champion (scripted, SIMULATED raters and
red-teamers). Each stage is its own Prefect flow run; a demo
ledger skips stages that already finished, so a rerun (or a rerun after a
crash) continues where it stopped.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.storage import DataDir, ModelRef
from alignline.storage.ledger import StepLedger

# Wide enough for the versions table when the output is a file or a CI log (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 160)
ITERATIONS = (1, 2)
REVIEWER = "alignline-demo"

# `alignline demo --model smollm2-135m`: the line on a real chat model ("chat start"), sized for 2 CPU cores.
# Applied under the user's own --set/--config values (theirs win). SFT and the RMs start from the converted
# checkpoint (no pretraining); LoRA keeps policy training affordable; the RMs train their head on cached trunk
# states; answers are short; every RLHF stage runs with small counts.
CHAT_DEMO_OVERRIDES: dict[str, tuple[str, ...]] = {
    "smollm2-135m": (
        "model.lora_rank=16", "model.lora_alpha=32",
        "sft.epochs=1", "sft.stdlib_examples=120", "sft.seq_len=256", "sft.batch_size=8", "sft.use_ray=false",
        "sft.learning_rate=2e-4",
        "annotation.prompts_per_batch=24", "annotation.max_new_tokens=64",
        "reward.trainable='head'", "reward.max_length=256", "reward.use_ray=false",
        "reward.builtin_batch0=true",
        "rlhf.max_new_tokens=64", "rlhf.max_prompts=24", "rlhf.rs_samples=4", "rlhf.rollout_batch_size=8",
        "rlhf.finetune_epochs=4",
        "rlhf.ppo_iterations=3", "rlhf.ppo_batch_size=8", "rlhf.ppo_minibatch_size=4", "rlhf.use_ray=false",
        "rlhf.gatt_dialogues=8", "rlhf.gatt_eval_dialogues=8", "rlhf.context_distillation_prompts=8",
        "evaluation.eval_prompts=32",
    ),
}


def _promote_if_gates_pass(cfg: RunConfig, version: str, reason: str, override: bool = False) -> dict[str, Any]:
    from alignline.flows.promote import PromotionRefused, run_promote
    from alignline.flows.reviewers import ensure_scripted_reviewer

    ensure_scripted_reviewer(cfg, REVIEWER)  # servers.auth: the demo's reviewer is a real MLflow reviewer account
    try:
        return run_promote(cfg, "policy", version, reviewer=REVIEWER, reason=reason, override=override)
    except PromotionRefused as e:  # the demo respects the gates; a reviewer may still override
        console.log(f"[yellow]not promoted: {e}")
        return {"promoted": None, "refused": str(e)}


def _stages(cfg: RunConfig, model: str | None = None) -> list[tuple[str, Callable[[dict], dict[str, Any]]]]:
    from alignline.flows.corpus import run_corpus
    from alignline.flows.evaluate import run_evaluate
    from alignline.flows.human_eval import run_human_eval
    from alignline.flows.iteration import run_iterate
    from alignline.flows.pretrain import run_pretrain
    from alignline.flows.redteam import run_redteam
    from alignline.flows.sft import run_sft

    def version_of(ref: str) -> str:
        return ModelRef.parse(ref).version

    stages: list[tuple[str, Callable[[dict], dict[str, Any]]]] = [("corpus", lambda done: run_corpus(cfg))]
    if model is None:  # the tiny line draws its own base model: tokenizer and pretraining on the corpus
        stages.append(("pretrain", lambda done: run_pretrain(cfg)))
    stages += [
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
    # The other two kinds of human work, done by scripted (SIMULATED) people: a side-by-side human evaluation of the
    # last version against V0 (Llama 2 §3.4.2), and one red-team round against the champion (§4.3).
    last = f"iterate V{ITERATIONS[-1]}"
    stages.append(("human-eval", lambda done: run_human_eval(cfg, version_of(done[last]["candidate"]),
                                                             version_of(done["evaluate V0"]["policy"]), bot=True)))
    stages.append(("red-team round", lambda done: run_redteam(cfg, "round", bot=True)))
    return stages


def with_every_stage(cfg: RunConfig) -> RunConfig:
    """The demo shows the whole recipe in each iteration: rejection sampling, then PPO (KL to the SFT model),
    Ghost Attention and safety context distillation."""
    import dataclasses

    rlhf = dataclasses.replace(cfg.rlhf, ppo_enabled=True, gatt_enabled=True, context_distillation_enabled=True)
    return dataclasses.replace(cfg, rlhf=rlhf)


def chat_model_config(cfg: RunConfig, model: str, folder: str, user_overrides: tuple[str, ...] = (),
                      file: str | None = None) -> RunConfig:
    """The run config of the chat-model demo: its sizing under the user's own settings, starting from `folder`."""
    from alignline.config import ConfigError, load_config

    if model not in CHAT_DEMO_OVERRIDES:
        raise ConfigError(f"demo --model {model!r} is not allowed; allowed: {', '.join(map(repr, CHAT_DEMO_OVERRIDES))}")
    return load_config(cfg.preset, file, [*CHAT_DEMO_OVERRIDES[model], f"model.checkpoint='{folder}'", *user_overrides],
                       cfg.home)


def line_config(cfg: RunConfig, model: str) -> Path:
    """Where the chat-model demo writes its resolved config: `alignline iterate --config <it> --iteration 3` (or
    sweep, evaluate, ...) carries the line on with the demo's settings."""
    return cfg.home / f"demo-{model}.toml"


def run_demo(cfg: RunConfig, model: str | None = None, user_overrides: tuple[str, ...] = (),
             config_file: str | None = None) -> int:
    """The whole line on the built-in data. `model` (e.g. smollm2-135m): start from that packaged chat model,
    converted once at set-up, instead of the tiny model drawn from the machine's text."""
    from alignline.infra import prefect_server, require_up, up

    timings: list[tuple[str, float, str]] = []
    started = time.monotonic()
    if model is not None:
        from alignline.flows.checkpoint import run_convert

        console.rule(f"[bold]alignline demo: converting {model}")
        converted = run_convert(cfg, model)
        cfg = chat_model_config(cfg, model, converted["folder"], user_overrides, config_file)
        timings.append((f"convert {model}", time.monotonic() - started, "ran" if converted["converted"] else "done earlier"))
    cfg = with_every_stage(cfg)
    if model is not None:  # the line's own config, so an engineer carries it on with the same settings
        from alignline.config.dump import dump_toml

        line_config(cfg, model).write_text(dump_toml(cfg))
    t0 = time.monotonic()
    console.rule("[bold]alignline demo: servers")
    up(cfg, say=lambda msg: console.log(msg))
    timings.append(("servers up", time.monotonic() - t0, "ran"))
    require_up(cfg)
    with prefect_server(cfg):  # every stage's flow runs land on the server engineers watch
        _run_stages(cfg, timings, model)
    return 0


def _run_stages(cfg: RunConfig, timings: list[tuple[str, float, str]], model: str | None = None) -> None:
    stages = _stages(cfg, model)
    # One ledger per line: the tiny line and a chat-model line never resume each other's stages.
    name = "demo" if model is None else f"demo-{model}"
    ledger = StepLedger(DataDir(cfg.home).iteration_ledger(name), [n for n, _ in stages], iteration=name)
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
    summary_file = cfg.home / ("demo-summary.json" if model is None else f"demo-{model}-summary.json")
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


def _human_work(results: dict[str, dict[str, Any]]) -> None:
    """The human-evaluation table (with Gwet's AC2) and the red-team matrix, when the demo ran them."""
    from alignline.services.evaluation.human_eval import summary_lines as human_eval_lines
    from alignline.services.evaluation.redteam import summary_lines as redteam_lines

    human = (results.get("human-eval") or {}).get("results")
    if isinstance(human, dict):
        console.print("\n".join(human_eval_lines(human)), markup=False, soft_wrap=True)
    red = (results.get("red-team round") or {}).get("report")
    if isinstance(red, dict) and red.get("prompts"):
        console.print("\n".join(redteam_lines(red)), markup=False, soft_wrap=True)


def _improvement_lines(cfg: RunConfig, results: dict[str, dict[str, Any]]) -> list[str]:
    """Did the loop improve what it should? The last version minus V0 on the same held-out prompts (reference-based
    score, paired, 95% interval), safety violations of both, and per iteration how well the RMs ranked the
    policy's own samples against the reference judge (Spearman, within prompt)."""
    from alignline.services.evaluation.policy_eval import paired_difference
    from alignline.services.registry import RegistryError

    registry = RunContext(cfg).registry
    refs = [(stage.partition(" ")[2], r.get("candidate") or r.get("policy")) for stage, r in results.items()
            if stage.partition(" ")[0] in ("evaluate", "iterate")]
    reports = {}
    for label, ref in refs:
        try:
            reports[label] = registry.load_report("policy", ModelRef.parse(ref).version) or {}
        except RegistryError:
            reports[label] = {}
    lines = []
    if len(refs) >= 2 and all((reports[label].get("per_prompt") or {}).get("oracle") for label, _ in (refs[0], refs[-1])):
        (first, first_ref), (last, last_ref) = refs[0], refs[-1]
        scores = {label: dict(zip(reports[label]["per_prompt"]["prompt_ids"], reports[label]["per_prompt"]["oracle"]))
                  for label in (first, last)}
        diff = paired_difference(scores[last], scores[first])
        if diff is not None:
            verdict = "above zero: improved" if diff["low"] > 0 else "contains zero: not shown to improve"
            lines.append(f"{last} - {first} ({last_ref} vs {first_ref}), reference-based score on {diff['n']:.0f} held-out "
                         f"prompts: {diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] (95% interval {verdict})")
        lines.append(f"safety violations: {first} {reports[first].get('safety_violation_rate', float('nan')):.2f} -> "
                     f"{last} {reports[last].get('safety_violation_rate', float('nan')):.2f}")
    data = DataDir(cfg.home)
    for n in ITERATIONS:
        path = data.iteration_ledger(n)
        if not path.exists():
            continue
        steps = json.loads(path.read_text()).get("steps", {})
        rs = (steps.get("rlhf") or {}).get("stages", {}).get("rejection_sampling", {})
        agreement = rs.get("rm_oracle_agreement") or {}
        if agreement.get("spearman_within_prompt") is not None:
            lines.append(f"iteration {n}: RM vs reference ranking of the policy's own samples (Spearman within prompt, "
                         f"{agreement['prompts_ranked']:.0f} prompts): {agreement['spearman_within_prompt']:+.2f}; "
                         f"pooled {agreement['spearman_pooled'] if agreement['spearman_pooled'] is None else round(agreement['spearman_pooled'], 2)}")
    return lines


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
    for line in _improvement_lines(cfg, results):
        console.print(line)
    _human_work(results)
    s = cfg.servers
    where = Table(title="where to look", show_header=False)
    where.add_row("MLflow registry (policy, rm-*, base)", f"{s.url(s.mlflow_port)}/#/models/policy")
    where.add_row("Prefect (flow runs)", f"{s.url(s.prefect_port)}/runs")
    where.add_row("Label Studio (annotators)", f"{s.url(s.label_studio_port)}/projects")
    where.add_row("Ray dashboard", s.url(s.ray_dashboard_port))
    where.add_row("data dir", str(cfg.home))
    if cfg.model.checkpoint:  # the chat-model line: its config, for the commands that carry it on
        for model in CHAT_DEMO_OVERRIDES:
            if line_config(cfg, model).exists():
                where.add_row("carry the line on", f"alignline iterate --home {cfg.home} --config "
                              f"{line_config(cfg, model)} --iteration {ITERATIONS[-1] + 1} --bot")
    for name, result in results.items():
        for key in ("report", "model_card", "model_card_mlflow", "url"):
            if isinstance(result, dict) and isinstance(result.get(key), str):  # paths and URLs, not whole reports
                where.add_row(f"{name}: {key}", result[key])
    console.print(where)
