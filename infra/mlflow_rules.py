"""The platform's rules inside the MLflow server: who may move `champion` and write `eval.*` / `promotion.*` tags.

MLflow 3.17's basic auth grants by resource: EDIT on a registered model allows both creating versions and setting
any alias on it, so "the pipeline registers and sets `candidate`, only reviewers move `champion`" cannot be said
with its permissions alone. This module is the server's `authorization_function` (basic_auth.ini): it runs
MLflow's own basic-auth check first (a wrong or missing password is refused exactly as before), then, for the few
registry writes the platform's trust rests on, requires the account to hold the right role in MLflow's own user
store (assigned by `alignline reviewers add` and at bootstrap):

| request (REST and ajax paths)                         | only accounts in role          |
|-------------------------------------------------------|--------------------------------|
| set / delete alias `champion`                         | alignline-reviewers            |
| set / delete a model-version tag `promotion.*`        | alignline-reviewers            |
| set / delete a registered-model tag `gates.*`         | alignline-reviewers            |
| set / delete a model-version tag `eval.*`             | alignline-pipeline             |
| create a model version carrying `eval.*`/`promotion.*`| refused for everyone           |

Admins are not exempt (MLflow skips its validators for admins; this check runs before that). Everything else is
MLflow's permission model: default READ, the roles' grants. Runs in the MLflow server process only.
"""
from __future__ import annotations

import json

# Mirrored in alignline.infra.auth (which imports this module's names) and checked by tests/infra/test_auth.py.
REVIEWERS_ROLE = "alignline-reviewers"
PIPELINE_ROLE = "alignline-pipeline"
CHAMPION_ALIAS = "champion"  # services.registry.CHAMPION (infra cannot import services)
EVAL_PREFIX = "eval."
PROMOTION_PREFIX = "promotion."
GATES_PREFIX = "gates."

_ALIAS = "/mlflow/registered-models/alias"
_MV_SET_TAG, _MV_DELETE_TAG = "/mlflow/model-versions/set-tag", "/mlflow/model-versions/delete-tag"
_RM_SET_TAG, _RM_DELETE_TAG = "/mlflow/registered-models/set-tag", "/mlflow/registered-models/delete-tag"
_MV_CREATE = "/mlflow/model-versions/create"


def _roles(username: str) -> set[str]:
    from mlflow.server.auth import store

    return {role.name for role in store.list_user_roles(store.get_user(username).id)}


def required_role(path: str, method: str, param) -> str | None:
    """The role a request needs beyond MLflow's own permissions, None when it needs none; "" refuses everyone.

    `param(name)` reads a request parameter (query or JSON body, as MLflow's validators do)."""
    if path.endswith(_ALIAS) and method in ("POST", "DELETE"):
        return REVIEWERS_ROLE if param("alias") == CHAMPION_ALIAS else None
    if path.endswith((_MV_SET_TAG, _MV_DELETE_TAG)) and method in ("POST", "DELETE"):
        key = str(param("key"))
        if key.startswith(EVAL_PREFIX):
            return PIPELINE_ROLE
        return REVIEWERS_ROLE if key.startswith(PROMOTION_PREFIX) else None
    if path.endswith((_RM_SET_TAG, _RM_DELETE_TAG)) and method in ("POST", "DELETE"):
        return REVIEWERS_ROLE if str(param("key")).startswith(GATES_PREFIX) else None
    if path.endswith(_MV_CREATE) and method == "POST":
        try:
            tags = param("tags") or []
        except Exception:  # no tags given
            return None
        keys = [str(t.get("key", "")) for t in tags if isinstance(t, dict)]
        return "" if any(k.startswith((EVAL_PREFIX, PROMOTION_PREFIX)) for k in keys) else None
    return None


def _forbidden(message: str):
    from flask import Response

    body = json.dumps({"error_code": "PERMISSION_DENIED", "message": message})
    return Response(body, status=403, mimetype="application/json")


def authenticate():
    """MLflow basic auth, then the platform's role rules (an `authorization_function` for basic_auth.ini)."""
    from flask import request
    from mlflow.server.auth import _get_request_param, authenticate_request_basic_auth

    authorization = authenticate_request_basic_auth()
    if not hasattr(authorization, "username"):  # a 401 Response: wrong or missing credentials
        return authorization
    try:
        needed = required_role(request.path, request.method, _get_request_param)
    except Exception:  # the request names no alias/key: MLflow's handler answers it with a 400
        return authorization
    if needed is None:
        return authorization
    if needed == "":
        return _forbidden("model versions are created without eval.* or promotion.* tags; those are written by "
                          "the evaluation and by a reviewer's promotion")
    if needed not in _roles(authorization.username):
        return _forbidden(f"account {authorization.username!r} is not in role {needed!r}: this change is reserved "
                          f"to it by the platform (see alignline.infra.mlflow_rules)")
    return authorization
