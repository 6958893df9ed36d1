"""Credentials on the real servers (servers.auth): who may move `champion` and write `eval.*`, and that Prefect and
Ray refuse anonymous callers. Every refusal is a real HTTP call to the session's servers; the allowed calls beside
them show the refusals are about the caller, not a broken request."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid

import psutil
import pytest
import requests

from alignline.infra import auth
from alignline.infra.mlflow_rules import required_role
from alignline.storage import DataDir

integration = pytest.mark.integration


@pytest.fixture(scope="module")
def cfg(servers):
    if not auth.enabled(servers):
        pytest.skip("servers.auth is off for this session (ALIGNLINE_TEST_AUTH=0)")
    return servers


def _secret(cfg, name):
    return json.loads((DataDir(cfg.home).secrets / f"{name}.json").read_text())


def _mlflow(cfg):
    return cfg.servers.url(cfg.servers.mlflow_port)


class Caller:
    """Raw MLflow REST calls as one account (None: anonymous); returns the HTTP status."""

    def __init__(self, cfg, user: tuple[str, str] | None):
        self.url, self.user = _mlflow(cfg), user

    def __call__(self, method: str, path: str, **body) -> int:
        kwargs = {"params": body} if method == "GET" else {"json": body}
        return requests.request(method, f"{self.url}/api/2.0/mlflow/{path}", auth=self.user, timeout=120,
                                **kwargs).status_code


@pytest.fixture(scope="module")
def model(cfg, tmp_path_factory):
    """A registered model with one version, registered by this process as the pipeline (which also set
    `candidate`)."""
    from alignline.services.registry import Lineage, Registry
    from alignline.services.tracking import tracked_run

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == auth.PIPELINE_USER
    folder = tmp_path_factory.mktemp("auth-model")
    (folder / "config.json").write_text("{}")
    registry, name = Registry(_mlflow(cfg)), f"auth-{uuid.uuid4().hex[:6]}"
    with tracked_run(registry.tracking_uri, "auth-tests", "register") as run_id:
        info = registry.register_dir(name, folder, Lineage(method="sft"), run_id)
    assert info.aliases == ("candidate",)
    return name, info.version


def test_role_rules_name_the_guarded_writes():
    param = lambda values: values.__getitem__  # noqa: E731
    assert required_role("/api/2.0/mlflow/registered-models/alias", "POST", param({"alias": "champion"})) == auth.REVIEWERS_ROLE
    assert required_role("/ajax-api/2.0/mlflow/registered-models/alias", "DELETE", param({"alias": "champion"})) == auth.REVIEWERS_ROLE
    assert required_role("/api/2.0/mlflow/registered-models/alias", "POST", param({"alias": "candidate"})) is None
    assert required_role("/api/2.0/mlflow/model-versions/set-tag", "POST", param({"key": "eval.report_sha256"})) == auth.PIPELINE_ROLE
    assert required_role("/api/2.0/mlflow/model-versions/set-tag", "POST", param({"key": "promotion.reviewer"})) == auth.REVIEWERS_ROLE
    assert required_role("/api/2.0/mlflow/registered-models/set-tag", "POST", param({"key": "gates.policy_sha256"})) == auth.REVIEWERS_ROLE
    assert required_role("/api/2.0/mlflow/model-versions/set-tag", "POST", param({"key": "lineage.method"})) is None
    assert required_role("/api/2.0/mlflow/model-versions/create", "POST",
                         param({"tags": [{"key": "eval.report_uri", "value": "x"}]})) == ""


@integration
def test_secrets_are_0600_in_a_0700_data_dir_and_never_in_argv(cfg):
    data = DataDir(cfg.home)
    assert stat.S_IMODE(cfg.home.stat().st_mode) == 0o700 and stat.S_IMODE(data.secrets.stat().st_mode) == 0o700
    files = sorted(data.secrets.iterdir())
    names = {f.name for f in files}
    assert {"mlflow-admin.json", "mlflow-pipeline.json", "prefect.json", auth.RAY_TOKEN_FILE} <= names
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files if not f.name.startswith("."))
    assert "password" not in auth.mlflow_auth_config_path(cfg).read_text()
    values = [auth.ray_token_path(cfg).read_text().strip()]
    values += [v for f in files if f.suffix == ".json" for k, v in json.loads(f.read_text()).items()
               if k in ("password", "token", "auth_string", "flask_secret_key")]
    argv = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [v for v in values for a in argv if v in a]


@integration
def test_unauthorised_registry_writes_are_refused(cfg, model, capsys):
    """The M-of-M figure: every attempt below must be refused (401 unauthenticated, 403 forbidden)."""
    name, version = model
    admin = _secret(cfg, "mlflow-admin")
    pipeline = Caller(cfg, (auth.PIPELINE_USER, _secret(cfg, "mlflow-pipeline")["password"]))
    admin_call = Caller(cfg, (admin["username"], admin["password"]))
    reader_user = (f"reader-{uuid.uuid4().hex[:4]}", uuid.uuid4().hex)
    assert admin_call("POST", "users/create", username=reader_user[0], password=reader_user[1]) == 200
    reader, anonymous = Caller(cfg, reader_user), Caller(cfg, None)
    wrong = Caller(cfg, (auth.PIPELINE_USER, "not-the-password"))
    ada = Caller(cfg, auth.stored_reviewer(cfg, "ada"))
    champion = dict(name=name, alias="champion", version=version)
    eval_tag = dict(name=name, version=version, key="eval.report_sha256", value="0" * 64)
    attempts = {
        "anonymous reads the registry": anonymous("GET", "registered-models/get", name=name),
        "anonymous moves champion": anonymous("POST", "registered-models/alias", **champion),
        "anonymous writes eval.*": anonymous("POST", "model-versions/set-tag", **eval_tag),
        "anonymous creates a run": anonymous("POST", "runs/create", experiment_id="0"),
        "wrong password moves champion": wrong("POST", "registered-models/alias", **champion),
        "pipeline moves champion": pipeline("POST", "registered-models/alias", **champion),
        "pipeline writes promotion.*": pipeline("POST", "model-versions/set-tag", name=name, version=version,
                                                key="promotion.reviewer", value="ada"),
        "pipeline writes gates.*": pipeline("POST", "registered-models/set-tag", name=name,
                                            key="gates.policy_sha256", value="0"),
        "pipeline registers a version with eval.* tags": pipeline(
            "POST", "model-versions/create", name=name, source="file:///tmp/x",
            tags=[{"key": "eval.report_sha256", "value": "0"}]),
        "read-only account moves champion": reader("POST", "registered-models/alias", **champion),
        "read-only account writes eval.*": reader("POST", "model-versions/set-tag", **eval_tag),
        "read-only account moves candidate": reader("POST", "registered-models/alias", name=name, alias="candidate",
                                                    version=version),
        "read-only account creates a run": reader("POST", "runs/create", experiment_id="0"),
        "reviewer writes eval.*": ada("POST", "model-versions/set-tag", **eval_tag),
        "admin moves champion": admin_call("POST", "registered-models/alias", **champion),
    }
    refused = {what: code for what, code in attempts.items() if code in (401, 403)}
    with capsys.disabled():
        print(f"\n[auth] unauthorised attempts refused {len(refused)} of {len(attempts)}")
    assert refused == attempts, {k: v for k, v in attempts.items() if k not in refused}
    # The refusals were about the caller: the right accounts do the same writes.
    assert pipeline("POST", "registered-models/alias", name=name, alias="candidate", version=version) == 200
    assert pipeline("POST", "model-versions/set-tag", **eval_tag) == 200
    assert ada("POST", "registered-models/alias", **champion) == 200
    assert pipeline("DELETE", "registered-models/alias", name=name, alias="champion") == 403  # nor can it undo it
    got = requests.get(f"{_mlflow(cfg)}/api/2.0/mlflow/registered-models/alias", auth=reader.user, timeout=120,
                       params={"name": name, "alias": "champion"})
    assert got.status_code == 200 and got.json()["model_version"]["version"] == version  # reading stays open


@integration
def test_promote_logs_in_as_the_reviewer(cfg, model):
    from alignline.flows.promote import PromotionRefused, run_promote
    from alignline.flows.reviewers import as_reviewer

    name, version = model
    with pytest.raises(auth.AuthError, match="wrong name or password"):
        with as_reviewer(cfg, "ada", password="not-adas-password"):
            pass
    with pytest.raises(auth.AuthError, match="is not a reviewer"):  # a real account, but not a reviewer
        with as_reviewer(cfg, auth.PIPELINE_USER, password=_secret(cfg, "mlflow-pipeline")["password"]):
            pass
    with pytest.raises(PromotionRefused, match="needs a password"):
        run_promote(cfg, name, version, reviewer="nobody-here", reason="x")
    with as_reviewer(cfg, "grace") as account:
        assert account == "grace" and os.environ["MLFLOW_TRACKING_USERNAME"] == "grace"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == auth.PIPELINE_USER  # the pipeline again after the block


@integration
def test_reviewers_command_adds_lists_and_removes(cfg, capsys):
    from alignline.flows.cli import main
    from tests.conftest import TEST_SERVER_OVERRIDES

    sets = [f"--set={o}" for o in TEST_SERVER_OVERRIDES]
    name = f"rev{uuid.uuid4().hex[:5]}"
    assert main(["reviewers", "add", name, "--generate", "--home", str(cfg.home), *sets]) == 0
    out = capsys.readouterr().out
    secret = auth.stored_reviewer(cfg, name)
    assert secret and secret[1] not in out  # the path of the password file is printed, never the password
    assert main(["reviewers", "list", "--home", str(cfg.home), *sets]) == 0 and name in capsys.readouterr().out
    assert main(["reviewers", "add", auth.PIPELINE_USER, "--generate", "--home", str(cfg.home), *sets]) == 1
    assert main(["reviewers", "remove", name, "--home", str(cfg.home), *sets]) == 0
    resp = requests.get(f"{_mlflow(cfg)}/api/2.0/mlflow/registered-models/search", auth=secret, timeout=120)
    assert resp.status_code == 401 and auth.stored_reviewer(cfg, name) is None


@integration
def test_prefect_refuses_anonymous_calls(cfg):
    api = f"{cfg.servers.url(cfg.servers.prefect_port)}/api"
    user, password = auth.prefect_auth_string(cfg).split(":", 1)
    assert requests.get(f"{api}/health", timeout=10).status_code == 200  # probes stay open
    assert requests.post(f"{api}/flow_runs/filter", json={"limit": 1}, timeout=10).status_code == 401
    assert requests.post(f"{api}/flow_runs/filter", json={"limit": 1}, timeout=10,
                         auth=(user, "wrong")).status_code == 401
    assert requests.post(f"{api}/flow_runs/filter", json={"limit": 1}, timeout=10,
                         auth=(user, password)).status_code == 200


@integration
def test_ray_refuses_anonymous_calls(cfg):
    dashboard = cfg.servers.url(cfg.servers.ray_dashboard_port)
    token = auth.ray_token_path(cfg).read_text().strip()
    assert requests.get(f"{dashboard}/api/gcs_healthz", timeout=10).status_code == 200
    assert requests.get(f"{dashboard}/api/jobs/", timeout=10).status_code == 401
    job = {"entrypoint": "echo anonymous code"}
    assert requests.post(f"{dashboard}/api/jobs/", json=job, timeout=10).status_code == 401  # the Jobs API
    assert requests.get(f"{dashboard}/api/jobs/", timeout=10,
                        headers={"Authorization": "Bearer wrong-token"}).status_code in (401, 403)
    assert requests.get(f"{dashboard}/api/jobs/", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # A driver without the token cannot attach (and so cannot run code on the cluster).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "MLFLOW_TRACKING", "PREFECT_API"))}
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HOME": str(cfg.home / "anon")})
    probe = ("import ray\nray.init(address='%s:%d', logging_level='ERROR')\nprint('ATTACHED', ray.get(ray.remote("
             "lambda: 7).remote()))" % (cfg.servers.host, cfg.servers.ray_port))
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as e:  # still knocking after 90 s: not attached either
        assert b"ATTACHED" not in (e.stdout or b"")
        return
    assert "ATTACHED" not in out.stdout and out.returncode != 0


def test_secrets_are_generated_once_0600_and_the_ini_holds_no_password(tmp_path):
    from alignline.config import load_config

    cfg = load_config(overrides=["servers.auth=true"], home=tmp_path / "home")
    auth.ensure_secrets(cfg)
    first = {p.name: p.read_bytes() for p in DataDir(cfg.home).secrets.iterdir()}
    auth.ensure_secrets(cfg)  # a second `up` keeps them (MLflow and Label Studio stored the first ones)
    assert first == {p.name: p.read_bytes() for p in DataDir(cfg.home).secrets.iterdir()}
    assert set(first) == {"mlflow-admin.json", "mlflow-pipeline.json", "prefect.json", auth.RAY_TOKEN_FILE}
    assert all(stat.S_IMODE((DataDir(cfg.home).secrets / n).stat().st_mode) == 0o600 for n in first)
    assert stat.S_IMODE(cfg.home.stat().st_mode) == 0o700
    ini = auth.mlflow_auth_config_path(cfg).read_text()
    assert "default_permission = READ" in ini and "alignline.infra.mlflow_rules:authenticate" in ini
    assert _secret(cfg, "mlflow-admin")["password"] not in ini and "admin_password" not in ini
    env = auth.client_env(cfg)
    assert env["MLFLOW_TRACKING_USERNAME"] == auth.PIPELINE_USER and env["RAY_AUTH_MODE"] == "token"
    assert auth.ray_token_path(cfg).read_text() not in json.dumps(env)  # Ray reads its token from the file
    # a team's MLflow server (servers.mlflow_uri) never receives the pipeline's password
    team = load_config(overrides=["servers.auth=true", "servers.mlflow_uri=http://mlflow.team:5000"], home=cfg.home)
    assert "MLFLOW_TRACKING_PASSWORD" not in auth.client_env(team) and not auth.mlflow_auth(team)
    off = load_config(overrides=["servers.auth=false"], home=cfg.home)
    assert auth.client_env(off) == {} and auth.mlflow_server_args(off) == []
