"""`alignline annotate --bot`: scripted annotators judge every pending task through Label Studio's API.

CLI the lead wires in flows/cli.py:
    alignline annotate --bot [--project helpfulness|safety|TITLE] [--limit N]  -> run_bot(cfg, project, limit)
Each bot is its own Label Studio user (`annotation.bot_annotators` of them), signed
up once through the invite link; its credentials live in
`<home>/secrets/label-studio-bot-<n>.json` (mode 0600; e-mail annotator-bot-<n>-<hex>@alignline.local). The real path waits for people.
"""
from __future__ import annotations

import secrets

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from alignline.annotation import KINDS, Oracle, annotate_project, bot_works, connect, find_project, sign_up_bot
from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.infra import paths


def bot_token(ctx: RunContext, n: int) -> str:
    """The n-th bot's API token: from its secret when it still works, else a fresh sign-up."""
    name = f"label-studio-bot-{n}"
    try:
        cred = paths.read_secret(ctx.home, name)
        if bot_works(ctx.label_studio_url, cred["token"], cred["email"]):
            return cred["token"]
    except FileNotFoundError:
        pass
    # A fresh address each sign-up: an account whose secret was lost cannot be logged into again.
    email = f"annotator-bot-{n}-{secrets.token_hex(3)}@alignline.local"
    cred = sign_up_bot(ctx.label_studio_url, ctx.label_studio_token(), email)
    paths.write_secret(ctx.home, name, cred)
    return cred["token"]


def _projects(ctx: RunContext, project: str | None) -> list[tuple[str, int]]:
    cfg = ctx.cfg.annotation
    admin = connect(ctx.label_studio_url, ctx.label_studio_token())
    titles = {"helpfulness": cfg.helpfulness_project, "safety": cfg.safety_project}
    if project is not None and project not in titles:  # a project title: its kind from the labeling config
        titles = {("safety" if project == cfg.safety_project else "helpfulness"): project}
    elif project is not None:
        titles = {project: titles[project]}
    found = [(kind, find_project(admin, title)) for kind, title in titles.items() if kind in KINDS]
    return [(kind, pid) for kind, pid in found if pid is not None]


@task(cache_policy=NO_CACHE)
def annotate_as(ctx: RunContext, n: int, kind: str, project_id: int, limit: int) -> dict:
    client = connect(ctx.label_studio_url, bot_token(ctx, n))
    return annotate_project(client, project_id, kind, Oracle(ctx.cfg.annotation.bot_margin_thresholds), limit)


@flow(name="annotate-bot")
def bot_flow(cfg: RunConfig, project: str | None = None, limit: int = 0) -> dict:
    ctx = RunContext(cfg)
    return {f"{kind}/bot-{n}": annotate_as(ctx, n, kind, pid, limit)
            for kind, pid in _projects(ctx, project) for n in range(1, cfg.annotation.bot_annotators + 1)}


def run_bot(cfg: RunConfig, project: str | None = None, limit: int = 0) -> dict:
    """What `alignline annotate --bot` calls: per project and bot, how many tasks it submitted, by margin level."""
    return bot_flow(cfg, project=project, limit=limit)
