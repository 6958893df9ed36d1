"""`alignline annotate --bot`: scripted annotators judge every pending task through Label Studio's API.

CLI: `alignline annotate --bot [--project helpfulness|safety|TITLE] [--limit N]` -> run_bot(cfg, project, limit).
Each bot is its own Label Studio user (`annotation.bot_annotators` of them), signed
up once through the invite link; its credentials live in
`<home>/secrets/label-studio-bot-<n>.json` (mode 0600; e-mail annotator-bot-<n>-<hex>@alignline.local).
The bots judge with the evaluation's judges (`services.evaluation.judges`). The real path waits for people.
"""
from __future__ import annotations

import secrets
from pathlib import Path

from prefect import flow, task

from alignline.annotation import Oracle, annotate_project, bot_works, connect, find_project, sign_up
from alignline.config import RunConfig
from alignline.config.annotation import AnnotationConfig
from alignline.flows.context import RunContext, label_studio_token
from alignline.infra import paths
from alignline.services.evaluation.judges import closeness, is_destructive
from alignline.storage.schemas import KINDS


def bot_token(home: Path, ls_url: str, n: int) -> str:
    """The n-th bot's API token: from its secret when it still works, else a fresh sign-up."""
    name = f"label-studio-bot-{n}"
    try:
        cred = paths.read_secret(home, name)
        if bot_works(ls_url, cred["token"], cred["email"]):
            return cred["token"]
    except FileNotFoundError:
        pass
    # A fresh address each sign-up: an account whose secret was lost cannot be logged into again.
    email = f"annotator-bot-{n}-{secrets.token_hex(3)}@alignline.local"
    cred = sign_up(ls_url, label_studio_token(home), email)  # as a person signs up, through the invite link
    paths.write_secret(home, name, cred)
    return cred["token"]


def _projects(ls_url: str, home: Path, ac: AnnotationConfig, project: str | None) -> list[tuple[str, int]]:
    admin = connect(ls_url, label_studio_token(home))
    titles = {"helpfulness": ac.helpfulness_project, "safety": ac.safety_project}
    if project is not None and project not in titles:  # a project title: its kind from the labeling config
        titles = {("safety" if project == ac.safety_project else "helpfulness"): project}
    elif project is not None:
        titles = {project: titles[project]}
    found = [(kind, find_project(admin, title)) for kind, title in titles.items() if kind in KINDS]
    return [(kind, pid) for kind, pid in found if pid is not None]


@task
def annotate_as(home: str, ls_url: str, n: int, kind: str, project_id: int, thresholds: tuple[float, ...],
                limit: int) -> dict:
    client = connect(ls_url, bot_token(Path(home), ls_url, n))
    return annotate_project(client, project_id, kind, Oracle(closeness, is_destructive, thresholds), limit)


@flow(name="annotate-bot")
def bot_flow(cfg: RunConfig, project: str | None = None, limit: int = 0) -> dict:
    url, ac = RunContext(cfg).label_studio_url, cfg.annotation
    return {f"{kind}/bot-{n}": annotate_as(str(cfg.home), url, n, kind, pid, ac.bot_margin_thresholds, limit)
            for kind, pid in _projects(url, cfg.home, ac, project) for n in range(1, ac.bot_annotators + 1)}


def run_bot(cfg: RunConfig, project: str | None = None, limit: int = 0) -> dict:
    """What `alignline annotate --bot` calls: per project and bot, how many tasks it submitted, by margin level."""
    return bot_flow(cfg, project=project, limit=limit)


def run_annotators(cfg: RunConfig, action: str, email: str | None = None, name: str = "") -> dict:
    """`alignline annotators add EMAIL [--name N] | list | remove EMAIL`: people's Label Studio accounts.

    A new person's password goes to `<home>/secrets/annotator-<email>.json` (0600), never to the terminal or a log:
    the operator hands it over privately; the person can change it in Label Studio's account settings."""
    from alignline.annotation import add_annotator, members, remove_annotator

    url, home = RunContext(cfg).label_studio_url, cfg.home
    admin = label_studio_token(home)
    if action == "list":
        return {m["email"]: f"id {m['id']}, {m['name'] or '-'}" for m in members(url, admin)}
    if not email:
        raise ValueError(f"annotators {action} needs an e-mail address")
    if action == "add":
        cred = add_annotator(url, admin, email, name)
        secret = paths.write_secret(home, f"annotator-{email}", {"email": email, "password": cred["password"]})
        return {"annotator": email, "user_id": cred["id"], "sign_in": f"{url}/user/login/",
                "password_file": f"{secret} (0600: hand it over privately)"}
    if action == "remove":
        return {"removed": email, "user_id": remove_annotator(url, admin, email),
                "annotations": "kept, still attributed to them"}
    raise ValueError(f"annotators action {action!r} is not allowed; allowed: add, list, remove")
