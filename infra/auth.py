"""Credentials on the servers of a data dir (`servers.auth`): who may do what, and how every client proves it.

| server  | mechanism (installed version)                          | secret (secrets/, 0600)          | clients send |
|---------|--------------------------------------------------------|----------------------------------|--------------|
| MLflow  | `--app-name basic-auth` (3.17), own SQLite user store, | mlflow-admin.json,               | MLFLOW_TRACKING_USERNAME / _PASSWORD (env) |
|         | default READ, roles + `mlflow_rules` for champion/eval | mlflow-pipeline.json             |              |
| Prefect | PREFECT_SERVER_API_AUTH_STRING (3.9, HTTP basic)       | prefect.json                     | PREFECT_API_AUTH_STRING |
| Ray     | RAY_AUTH_MODE=token (2.60: GCS, raylet, dashboard,     | ray-auth-token (the raw token)   | RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH |
|         | Jobs API and client server check the token)            |                                  |              |

Accounts on MLflow: `alignline-admin` (bootstrap, user management only), `alignline-pipeline` (role
alignline-pipeline: EDIT on every experiment and registered model; registers versions, sets `candidate`, writes
`eval.*`), reviewers (role alignline-reviewers: EDIT likewise; alone move `champion`, write `promotion.*` and
`gates.*`), everyone else READ. A reviewer's password is typed (or passed in ALIGNLINE_REVIEWER_PASSWORD) and
stored only as MLflow's hash; `reviewers add --generate` keeps a generated one in secrets/ for scripted reviewers.
Secrets travel in environment variables and files, never argv; nothing here logs them.
"""
from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

import requests

from alignline.config import RunConfig
from alignline.storage import DataDir

from . import paths
from .mlflow_rules import CHAMPION_ALIAS, PIPELINE_ROLE, REVIEWERS_ROLE

ADMIN_USER = "alignline-admin"
PIPELINE_USER = "alignline-pipeline"
WORKSPACE = "default"              # MLflow's workspace when workspaces are off (roles live in one)
REVIEWER_PASSWORD_ENV = "ALIGNLINE_REVIEWER_PASSWORD"
RAY_TOKEN_FILE = "ray-auth-token"
# What each role may touch through MLflow's own permission model; mlflow_rules narrows the registry writes.
ROLE_GRANTS = {PIPELINE_ROLE: (("experiment", "EDIT"), ("registered_model", "EDIT")),
               REVIEWERS_ROLE: (("experiment", "EDIT"), ("registered_model", "EDIT"))}
_RESERVED = {ADMIN_USER, PIPELINE_USER}

__all__ = ["AuthError", "ensure_secrets", "client_env", "use_client_identity", "bootstrap_mlflow", "add_reviewer",
           "list_reviewers", "remove_reviewer", "reviewer_credentials", "verify_reviewer", "CHAMPION_ALIAS"]


class AuthError(RuntimeError):
    """A refused login, an unknown reviewer, or a server that refused the bootstrap; the message names the fix."""


def enabled(cfg: RunConfig) -> bool:
    return bool(cfg.servers.auth)


def _own_mlflow(cfg: RunConfig) -> bool:
    """The pipeline's password goes only to this data dir's own MLflow server, never to `servers.mlflow_uri`."""
    return not cfg.servers.mlflow_uri


def mlflow_auth(cfg: RunConfig) -> bool:
    """Accounts apply: `servers.auth` on and MLflow is this data dir's own server (not `servers.mlflow_uri`: a
    team's server has its own accounts; a sqlite file has none)."""
    return enabled(cfg) and _own_mlflow(cfg)


def _secret(cfg: RunConfig, name: str, key: str) -> str | None:
    """One value of a generated secret; None before `up` made it (or in a data dir that borrows another's servers)."""
    try:
        return paths.read_secret(cfg.home, name)[key]
    except FileNotFoundError:
        return None


def _mlflow_url(cfg: RunConfig) -> str:
    return cfg.servers.url(cfg.servers.mlflow_port)


# -- secrets ---------------------------------------------------------------------------------------------

def _write_raw_secret(path: Path, text: str) -> None:
    """A secret file holding just `text` (Ray reads the bare token), created 0600 and renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ray_token_path(cfg: RunConfig) -> Path:
    return DataDir(cfg.home).secrets / RAY_TOKEN_FILE


def mlflow_auth_config_path(cfg: RunConfig) -> Path:
    return DataDir(cfg.home).server("mlflow") / "basic_auth.ini"


def ensure_secrets(cfg: RunConfig) -> None:
    """Generate whatever secret this data dir lacks (once; `up` calls it before starting any server)."""
    if not enabled(cfg):
        return
    home, folder = cfg.home, DataDir(cfg.home).secrets
    # A data dir made by hand (mkdir) is 0755: its secrets, databases and logs are ours alone. Only read/write bits
    # are taken away: a search-only ACL entry (PostgreSQL's account, infra/postgres.py) shows as 0710 and must stay,
    # or a running PostgreSQL loses its data directory.
    if os.stat(home).st_mode & 0o066:
        os.chmod(home, 0o700)
    if not (folder / "mlflow-admin.json").exists():
        paths.write_secret(home, "mlflow-admin", {"username": ADMIN_USER, "password": secrets.token_urlsafe(24),
                                                  "flask_secret_key": secrets.token_hex(32)})
    if not (folder / "mlflow-pipeline.json").exists():
        paths.write_secret(home, "mlflow-pipeline", {"username": PIPELINE_USER, "password": secrets.token_urlsafe(24)})
    if not (folder / "prefect.json").exists():
        paths.write_secret(home, "prefect", {"auth_string": f"alignline:{secrets.token_urlsafe(24)}"})
    if not ray_token_path(cfg).exists():
        _write_raw_secret(ray_token_path(cfg), secrets.token_hex(32))
    ini = mlflow_auth_config_path(cfg)
    store = DataDir(home).server("mlflow") / "basic_auth.db"
    # No password in the file: the admin password reaches the server as MLFLOW_AUTH_ADMIN_PASSWORD (env).
    _write_raw_secret(ini, "[mlflow]\ndefault_permission = READ\n"
                           f"database_uri = sqlite:///{store}\nadmin_username = {ADMIN_USER}\n"
                           "authorization_function = alignline.infra.mlflow_rules:authenticate\n"
                           "grant_default_workspace_access = false\n"
                           # One worker: a checked password is remembered a minute instead of re-hashed (PBKDF2)
                           # on every request; deleting a user drops it from this cache at once.
                           "auth_cache_ttl_seconds = 60\n")


# -- what each process gets ------------------------------------------------------------------------------

def mlflow_server_args(cfg: RunConfig) -> list[str]:
    return ["--app-name", "basic-auth"] if enabled(cfg) else []


def mlflow_server_env(cfg: RunConfig) -> dict[str, str]:
    if not enabled(cfg):
        return {}
    ensure_secrets(cfg)  # idempotent: `up` made them already, unless called on its own
    admin = paths.read_secret(cfg.home, "mlflow-admin")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config_path(cfg)),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin["password"], "MLFLOW_FLASK_SERVER_SECRET_KEY": admin["flask_secret_key"],
            "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true"}  # a route without a permission check is refused, not open


def prefect_server_env(cfg: RunConfig) -> dict[str, str]:
    if not enabled(cfg):
        return {}
    ensure_secrets(cfg)
    return {"PREFECT_SERVER_API_AUTH_STRING": paths.read_secret(cfg.home, "prefect")["auth_string"]}


def prefect_auth_string(cfg: RunConfig) -> str | None:
    return _secret(cfg, "prefect", "auth_string") if enabled(cfg) else None


def ray_env(cfg: RunConfig) -> dict[str, str]:
    """Ray's token auth for the head node and every driver (the token is read from its file, never put in env)."""
    if not enabled(cfg):
        return {}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray_token_path(cfg))}


def client_env(cfg: RunConfig) -> dict[str, str]:
    """What a pipeline process (CLI, flows, Ray workers via the head's environment) needs to be let in."""
    if not enabled(cfg):
        return {}
    env = dict(ray_env(cfg)) if ray_token_path(cfg).exists() else {}
    if (auth_string := prefect_auth_string(cfg)) is not None:
        env["PREFECT_API_AUTH_STRING"] = auth_string
    if _own_mlflow(cfg) and (password := _secret(cfg, "mlflow-pipeline", "password")) is not None:
        env.update({"MLFLOW_TRACKING_USERNAME": PIPELINE_USER, "MLFLOW_TRACKING_PASSWORD": password})
    return env


def use_client_identity(cfg: RunConfig, replace: bool = True) -> bool:
    """This process talks to the data dir's servers as the pipeline; False (nothing set) with `servers.auth` off,
    before the first `up` generated the secrets, or (`replace=False`) when the process has an MLflow identity
    already (one process, one identity: MLflow reads it from the environment)."""
    if not enabled(cfg) or not ray_token_path(cfg).exists():
        return False
    if not replace and os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return False
    ray_mode_changed = os.environ.get("RAY_AUTH_MODE") != "token"
    os.environ.update(client_env(cfg))
    os.environ.pop("PREFECT_API_KEY", None)  # it would win over the auth string
    ray = sys.modules.get("ray")
    if ray_mode_changed and ray is not None and not ray.is_initialized():
        # Ray caches its auth mode at import: refresh it, as Ray's own `_enable_token_auth` does.
        from ray._raylet import Config

        Config.initialize("")
    return True


# -- MLflow accounts -------------------------------------------------------------------------------------

def _admin(cfg: RunConfig) -> tuple[str, str]:
    cred = paths.read_secret(cfg.home, "mlflow-admin")
    return cred["username"], cred["password"]


def _call(cfg: RunConfig, method: str, path: str, auth: tuple[str, str], ok=(200,), **kwargs) -> requests.Response:
    resp = requests.request(method, f"{_mlflow_url(cfg)}{path}", auth=auth, timeout=120, **kwargs)
    if resp.status_code not in ok:
        raise AuthError(f"MLflow refused {method} {path} as {auth[0]!r}: HTTP {resp.status_code} "
                        f"{resp.text[:200]}")
    return resp


def _role_id(cfg: RunConfig, admin: tuple[str, str], name: str) -> int | None:
    roles = _call(cfg, "GET", "/api/3.0/mlflow/roles/list", admin, params={"workspace": WORKSPACE}).json()["roles"]
    return next((int(r["id"]) for r in roles if r["name"] == name), None)


def _user_exists(cfg: RunConfig, admin: tuple[str, str], name: str) -> bool:
    return _call(cfg, "GET", "/api/2.0/mlflow/users/get", admin, ok=(200, 404), params={"username": name}).ok


def bootstrap_mlflow(cfg: RunConfig) -> None:
    """Idempotent, as the admin: the two roles with their grants, the pipeline account in its role."""
    if not enabled(cfg):
        return
    admin = _admin(cfg)
    probe = requests.get(f"{_mlflow_url(cfg)}/api/3.0/mlflow/roles/list", params={"workspace": WORKSPACE},
                         auth=admin, timeout=120)
    if probe.status_code == 404:  # a server `up` found running, started before servers.auth was on
        raise AuthError(f"the MLflow server at {_mlflow_url(cfg)} runs without its basic-auth app (started while "
                        "servers.auth was off); restart it with auth: `alignline down && alignline up`")
    for role, grants in ROLE_GRANTS.items():
        if _role_id(cfg, admin, role) is None:
            rid = _call(cfg, "POST", "/api/3.0/mlflow/roles/create", admin,
                        json={"workspace": WORKSPACE, "name": role}).json()["role"]["id"]
            for resource_type, permission in grants:
                _call(cfg, "POST", "/api/3.0/mlflow/roles/permissions/add", admin,
                      json={"role_id": int(rid), "resource_type": resource_type, "resource_pattern": "*",
                            "permission": permission})
    pipeline = paths.read_secret(cfg.home, "mlflow-pipeline")
    if not _user_exists(cfg, admin, pipeline["username"]):
        _call(cfg, "POST", "/api/2.0/mlflow/users/create", admin,
              json={"username": pipeline["username"], "password": pipeline["password"]})
    _assign(cfg, admin, pipeline["username"], PIPELINE_ROLE)


def _assign(cfg: RunConfig, admin: tuple[str, str], username: str, role: str) -> None:
    roles = _call(cfg, "GET", "/api/3.0/mlflow/users/roles/list", admin, params={"username": username}).json()["roles"]
    if role not in {r["name"] for r in roles}:
        _call(cfg, "POST", "/api/3.0/mlflow/roles/assign", admin,
              json={"username": username, "role_id": _role_id(cfg, admin, role)})


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or name in _RESERVED or any(c in name for c in " :/\\\n\t") or len(name) > 64:
        raise AuthError(f"reviewer name {name!r} is not allowed: 1-64 characters, no spaces, ':' or '/', "
                        f"not {sorted(_RESERVED)}")
    return name


def add_reviewer(cfg: RunConfig, name: str, password: str | None = None, generate: bool = False) -> dict[str, str]:
    """An MLflow account in role alignline-reviewers. Its password is `password` (kept nowhere but MLflow's hash), or
    with `generate` a new one stored in secrets/reviewer-NAME.json (0600) for a scripted reviewer."""
    name = _check_name(name)
    if generate:
        password = secrets.token_urlsafe(24)
    if not password or len(password) < 12:
        raise AuthError("a reviewer's password needs at least 12 characters")
    admin = _admin(cfg)
    if _user_exists(cfg, admin, name):
        raise AuthError(f"MLflow account {name!r} exists already: `alignline reviewers remove {name}` first")
    _call(cfg, "POST", "/api/2.0/mlflow/users/create", admin, json={"username": name, "password": password})
    _assign(cfg, admin, name, REVIEWERS_ROLE)
    out = {"reviewer": name, "role": REVIEWERS_ROLE, "password": "typed (not stored)"}
    if generate:
        out["password"] = str(paths.write_secret(cfg.home, f"reviewer-{name}", {"username": name, "password": password}))
    return out


def list_reviewers(cfg: RunConfig) -> list[str]:
    admin = _admin(cfg)
    rid = _role_id(cfg, admin, REVIEWERS_ROLE)
    if rid is None:
        return []
    found = _call(cfg, "GET", "/api/3.0/mlflow/roles/users/list", admin, params={"role_id": str(rid)}).json()
    users = {int(u["id"]): u["username"] for u in _call(cfg, "GET", "/api/2.0/mlflow/users/list", admin).json()["users"]}
    return sorted(users.get(int(a["user_id"]), str(a["user_id"])) for a in found["assignments"])


def remove_reviewer(cfg: RunConfig, name: str) -> dict[str, str]:
    """Delete the reviewer's MLflow account (and a generated password file); past promotions keep their name."""
    name = _check_name(name)
    admin = _admin(cfg)
    if name not in list_reviewers(cfg):
        raise AuthError(f"{name!r} is not a reviewer (see `alignline reviewers list`)")
    _call(cfg, "DELETE", "/api/2.0/mlflow/users/delete", admin, json={"username": name})
    (DataDir(cfg.home).secrets / f"reviewer-{name}.json").unlink(missing_ok=True)
    return {"removed": name}


def stored_reviewer(cfg: RunConfig, name: str) -> tuple[str, str] | None:
    path = DataDir(cfg.home).secrets / f"reviewer-{name}.json"
    return (name, paths.read_secret(cfg.home, f"reviewer-{name}")["password"]) if path.exists() else None


def reviewer_credentials(cfg: RunConfig, name: str, password: str | None = None) -> tuple[str, str]:
    """(name, password): the one given, else $ALIGNLINE_REVIEWER_PASSWORD, else a generated one in secrets/."""
    password = password or os.environ.get(REVIEWER_PASSWORD_ENV) or None
    if password:
        return name, password
    stored = stored_reviewer(cfg, name)
    if stored is None:
        raise AuthError(f"reviewer {name!r} needs a password: type it when asked, or set {REVIEWER_PASSWORD_ENV}")
    return stored


def verify_reviewer(cfg: RunConfig, username: str, password: str) -> None:
    """The password opens `username`'s MLflow account and the account is a reviewer; AuthError otherwise."""
    resp = requests.get(f"{_mlflow_url(cfg)}/api/3.0/mlflow/users/roles/list", params={"username": username},
                        auth=(username, password), timeout=120)
    if resp.status_code == 401:
        raise AuthError(f"MLflow refused the login of {username!r}: wrong name or password")
    if resp.status_code != 200:
        raise AuthError(f"MLflow answered HTTP {resp.status_code} checking {username!r}'s roles")
    if REVIEWERS_ROLE not in {r["name"] for r in resp.json()["roles"]}:
        raise AuthError(f"{username!r} is not a reviewer: an admin adds one with `alignline reviewers add NAME`")
