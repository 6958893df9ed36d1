"""`alignline reviewers add NAME | list | remove NAME`: the MLflow accounts that alone move `champion`.

With `servers.auth` on, a reviewer is an MLflow basic-auth account in the role `alignline-reviewers`; the MLflow
server itself (alignline.infra.mlflow_rules) refuses a `champion` move, a `promotion.*` or a `gates.*` tag from any
other account, the pipeline's and the admin's included. `promote` and `gates set` log in as the reviewer they name
(password typed, or $ALIGNLINE_REVIEWER_PASSWORD), so the recorded reviewer is the account that acted.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from alignline.config import RunConfig
from alignline.infra import auth
from alignline.services import tracking


def use_identity(cfg: RunConfig) -> bool:
    """This process acts as the pipeline on the data dir's servers; the registry may promote on behalf of a scripted
    reviewer whose generated password is in secrets/. False with `servers.auth` off (or before the first `up`)."""
    if not auth.use_client_identity(cfg):
        return False
    if auth.mlflow_auth(cfg):
        tracking.set_reviewer_login(lambda name: auth.stored_reviewer(cfg, name))
    return True


@contextlib.contextmanager
def as_reviewer(cfg: RunConfig, name: str, password: str | None = None) -> Iterator[str]:
    """The block's MLflow calls authenticate as reviewer `name`, once MLflow accepted the login and the account is a
    reviewer (auth.AuthError otherwise). With `servers.auth` off: the name is only recorded."""
    if not auth.mlflow_auth(cfg):
        yield name
        return
    username, secret = auth.reviewer_credentials(cfg, name, password)
    auth.verify_reviewer(cfg, username, secret)
    with tracking.acting_as(username, secret):
        yield username


def ensure_scripted_reviewer(cfg: RunConfig, name: str) -> None:
    """A reviewer account with a generated password in secrets/ (the demo's and the tests' scripted reviewers)."""
    if auth.mlflow_auth(cfg) and auth.stored_reviewer(cfg, name) is None:
        auth.add_reviewer(cfg, name, generate=True)


def run_reviewers(cfg: RunConfig, action: str, name: str | None = None, password: str | None = None,
                  generate: bool = False) -> dict[str, Any]:
    if not auth.mlflow_auth(cfg):
        raise auth.AuthError("reviewer accounts need `servers.auth = true` and this data dir's own MLflow server "
                             "(basic auth); otherwise the reviewer named in `promote --reviewer` is recorded, not "
                             "authenticated")
    if action == "list":
        names = auth.list_reviewers(cfg)
        return {"reviewers": ", ".join(names) or "-", "count": len(names)}
    if not name:
        raise auth.AuthError(f"reviewers {action} needs a NAME")
    if action == "add":
        return auth.add_reviewer(cfg, name, password=password, generate=generate)
    if action == "remove":
        return auth.remove_reviewer(cfg, name)
    raise auth.AuthError(f"unknown action {action!r}: add, list or remove")
