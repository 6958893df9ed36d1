"""No generated secret leaks: not in any file of the data dir outside secrets/, not in Ray's session logs, not in a
Prefect run log, not in an MLflow param or tag, not in a server's argv; every secret file is 0600.

Collected last (tests/ sorts it after the packages), so a full session scans what every other test left behind."""
from __future__ import annotations

import json
import stat

import psutil
import pytest
import requests

from alignline.infra import auth
from alignline.storage import DataDir
from tests.conftest import prefect_api_auth

pytestmark = pytest.mark.integration

SECRET_KEYS = ("password", "token", "auth_string", "flask_secret_key")
MAX_FILE_BYTES = 64 * 1024 * 1024  # model weights above this are not where a log line would land


def _secrets(cfg) -> dict[str, str]:
    """'file:key' -> value, for every generated secret of the data dir (Ray's token file holds just the token)."""
    found = {}
    for path in DataDir(cfg.home).secrets.iterdir():
        if path.name.startswith("."):
            continue
        if path.suffix == ".json":
            found.update({f"{path.name}:{k}": v for k, v in json.loads(path.read_text()).items()
                          if k in SECRET_KEYS and len(v) >= 12})
        else:
            found[path.name] = path.read_text().strip()
    return found


def _leaks(text: bytes | str, secrets: dict[str, str]) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode()
    return [name for name, value in secrets.items() if value.encode() in data]


def _files(cfg):
    data = DataDir(cfg.home)
    # Not scanned: secrets/ itself, the virtualenvs, and Label Studio's own database, where its API token is stored
    # in clear by design (Django REST framework tokens; the data dir is 0700 for that reason).
    skip = (data.secrets, cfg.home / "venvs", data.server("label-studio") / "data")
    for root in (cfg.home, data.ray_temp):
        for path in root.rglob("*"):
            if any(path.is_relative_to(s) for s in skip) or path.is_symlink() or not path.is_file():
                continue
            if path.stat().st_size <= MAX_FILE_BYTES:
                yield path


def test_no_secret_in_files_logs_runs_params_tags_or_argv(servers, capsys):
    if not auth.enabled(servers):
        pytest.skip("servers.auth is off for this session")
    secrets = _secrets(servers)
    assert len(secrets) >= 5  # admin, flask key, pipeline, Prefect, Ray (+ scripted reviewers)
    leaks: dict[str, list[str]] = {}

    # file modes
    for path in DataDir(servers.home).secrets.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(servers.home.stat().st_mode) == 0o700

    # every file of the data dir (logs, databases, reports, ledgers, work) and Ray's session logs
    files = 0
    for path in _files(servers):
        files += 1
        if hits := _leaks(path.read_bytes(), secrets):
            leaks[str(path)] = hits

    # Prefect: every flow- and task-run log line the server holds
    api = f"{servers.servers.url(servers.servers.prefect_port)}/api"
    lines, offset = 0, 0
    while True:
        page = requests.post(f"{api}/logs/filter", json={"limit": 200, "offset": offset}, timeout=60,
                             auth=prefect_api_auth(servers))
        assert page.status_code == 200, page.text
        batch = page.json()
        lines += len(batch)
        for log in batch:
            if hits := _leaks(log["message"], secrets):
                leaks[f"prefect log {log['id']}"] = hits
        if len(batch) < 200:
            break
        offset += 200

    # MLflow: every run's params and tags, every registered model's and version's tags
    from mlflow import MlflowClient

    client = MlflowClient(servers.servers.url(servers.servers.mlflow_port))
    values = 0
    for exp in client.search_experiments(max_results=1000):
        for run in client.search_runs([exp.experiment_id], max_results=5000):
            items = {**run.data.params, **run.data.tags}
            values += len(items)
            if hits := _leaks(json.dumps(items), secrets):
                leaks[f"mlflow run {run.info.run_id}"] = hits
    for model in client.search_registered_models(max_results=1000):
        items = [model.tags] + [v.tags for v in client.search_model_versions(f"name='{model.name}'")]
        values += sum(len(i) for i in items)
        if hits := _leaks(json.dumps(items), secrets):
            leaks[f"mlflow model {model.name}"] = hits

    # argv of every process on the machine (the servers' included)
    procs = 0
    for proc in psutil.process_iter(["cmdline"]):
        procs += 1
        if hits := _leaks(" ".join(proc.info["cmdline"] or []), secrets):
            leaks[f"argv of pid {proc.pid}"] = hits

    with capsys.disabled():
        print(f"\n[secret scan] {len(secrets)} secrets over {files} files, {lines} Prefect log lines, {values} MLflow "
              f"params/tags, {procs} process command lines: {sum(len(v) for v in leaks.values())} found")
    assert leaks == {}
