"""Session fixtures shared by every test package.

`servers` starts the real Label Studio, MLflow, Prefect and Ray of a test data
dir (its own ports, so a developer's `alignline up` keeps running beside it)
once per session and stops them at the end. The data dir is kept between runs
(Label Studio's virtualenv takes a minute to build); set ALIGNLINE_TEST_HOME to
move it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from alignline.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TEST_HOME = Path(os.environ.get("ALIGNLINE_TEST_HOME", REPO / ".alignline-test"))
# Ports well away from the defaults of a developer's own data dir. ALIGNLINE_TEST_PORT_OFFSET shifts
# them all, so two checkouts (or two developers) can run the integration tests at once on one machine.
_OFFSET = int(os.environ.get("ALIGNLINE_TEST_PORT_OFFSET", "0"))
TEST_SERVER_OVERRIDES = [
    f"servers.label_studio_port={28080 + _OFFSET}", f"servers.mlflow_port={25000 + _OFFSET}",
    f"servers.prefect_port={24200 + _OFFSET}", f"servers.ray_port={26379 + _OFFSET}",
    f"servers.ray_dashboard_port={28265 + _OFFSET}", f"servers.ray_client_port={21001 + _OFFSET}",
    f"servers.ray_min_worker_port={30000 + 10 * _OFFSET}", f"servers.ray_max_worker_port={30999 + 10 * _OFFSET}",
    "servers.start_timeout_s=300",
    # `serve` (the deployments) only where a test starts it: tests/flows/test_deployments.py.
    "servers.prefect_serve=false", f"servers.prefect_serve_port={24201 + _OFFSET}",
]
# ALIGNLINE_TEST_AUTH=0|1 runs the session's servers without / with credentials (servers.auth; default: the config's).
if os.environ.get("ALIGNLINE_TEST_AUTH") in ("0", "1"):
    TEST_SERVER_OVERRIDES.append(f"servers.auth={'true' if os.environ['ALIGNLINE_TEST_AUTH'] == '1' else 'false'}")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray reads this at import: with it, Ray keeps every server on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def make_test_config(*overrides: str) -> RunConfig:
    return load_config(overrides=[*TEST_SERVER_OVERRIDES, *overrides], home=TEST_HOME)


@pytest.fixture(scope="session")
def servers() -> RunConfig:
    """A RunConfig whose four servers are up and healthy for the whole session."""
    from alignline.infra import down, up

    cfg = make_test_config()
    up(cfg, say=lambda msg: print(f"[servers] {msg}"))
    _scripted_reviewers(cfg)
    yield cfg
    _detach_ray()  # before the head goes: a driver still attached exits the process when its GCS disappears
    down(cfg, say=lambda msg: print(f"[servers] {msg}"))


def _detach_ray() -> None:
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


# Reviewers the tests promote as (servers.auth): MLflow accounts whose generated passwords sit in secrets/.
SCRIPTED_REVIEWERS = ("ada", "grace")


def _scripted_reviewers(cfg: RunConfig) -> None:
    from alignline.flows.reviewers import ensure_scripted_reviewer, use_identity

    use_identity(cfg)  # this process: the pipeline's accounts; the registry may promote as a scripted reviewer
    for name in SCRIPTED_REVIEWERS:
        ensure_scripted_reviewer(cfg, name)


def prefect_api_auth(cfg: RunConfig) -> tuple[str, str] | None:
    """`requests` auth for a direct call to the Prefect API of `cfg` (its auth string is HTTP basic)."""
    from alignline.infra.auth import prefect_auth_string

    auth_string = prefect_auth_string(cfg)
    return tuple(auth_string.split(":", 1)) if auth_string else None


@contextlib.contextmanager
def real_prefect(cfg: RunConfig):
    """Point Prefect at the real server of `cfg` for the duration of the block."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from alignline.infra import prefect_env

    env = prefect_env(cfg)
    updates = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    if "PREFECT_API_AUTH_STRING" in env:  # servers.auth
        updates[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates):
        yield cfg


@pytest.fixture()
def prefect_server(servers):
    """The session's servers, with flows pointed at the real Prefect server for this test.

    Per test (not per session), so it nests correctly with a module's `prefect_test_harness`."""
    with real_prefect(servers):
        yield servers


@pytest.fixture(scope="session")
def ray_cluster(servers):
    """This process attached to the session's real Ray head node (as flows attach on a cluster).

    Tests needing Ray use this rather than a private `ray.init()`: one process can
    hold one Ray connection, and the smoke/flow tests attach to the head node.
    """
    import ray

    from alignline.flows.context import RunContext

    if ray.is_initialized():
        ray.shutdown()
    RunContext(servers).init_ray()
    yield servers


# Label Studio and MLflow on PostgreSQL (servers.database = "postgresql"): a data dir of their own beside
# TEST_HOME, on ports next to the session's; Prefect and Ray are not needed there.
POSTGRES_HOME = Path(f"{TEST_HOME}-postgresql")
POSTGRES_SERVERS = ("postgres", "label-studio", "mlflow")


def make_postgres_test_config(*overrides: str) -> RunConfig:
    return load_config(overrides=[*TEST_SERVER_OVERRIDES, "servers.database=postgresql",
                                  f"servers.label_studio_port={28130 + _OFFSET}", f"servers.mlflow_port={25050 + _OFFSET}",
                                  f"servers.postgres_port={25432 + _OFFSET}", *overrides], home=POSTGRES_HOME)


@pytest.fixture(scope="session")
def postgres_servers() -> RunConfig:
    """A RunConfig whose PostgreSQL, Label Studio and MLflow (both on that PostgreSQL) are up for the session;
    skipped, with the reason, where PostgreSQL is not installed."""
    from alignline.infra import down, up
    from alignline.infra.postgres import missing_reason

    cfg = make_postgres_test_config()
    reason = missing_reason(cfg)
    if reason:
        pytest.skip(reason)
    venvs = POSTGRES_HOME / "venvs"
    if not venvs.exists():  # share TEST_HOME's Label Studio virtualenv (a minute or two to build)
        POSTGRES_HOME.mkdir(parents=True, mode=0o700, exist_ok=True)
        (TEST_HOME / "venvs").mkdir(parents=True, exist_ok=True)
        venvs.symlink_to((TEST_HOME / "venvs").resolve())
    # servers.auth: the same generated MLflow accounts as TEST_HOME's (MLflow reads one identity per process).
    (POSTGRES_HOME / "secrets").mkdir(parents=True, mode=0o700, exist_ok=True)
    for name in ("mlflow-admin.json", "mlflow-pipeline.json", "prefect.json", "ray-auth-token"):
        source, target = TEST_HOME / "secrets" / name, POSTGRES_HOME / "secrets" / name
        if source.exists() and not target.exists():
            shutil.copy2(source, target)  # keeps 0600
    up(cfg, names=POSTGRES_SERVERS, say=lambda msg: print(f"[postgres servers] {msg}"))
    yield cfg
    down(cfg, names=POSTGRES_SERVERS, say=lambda msg: print(f"[postgres servers] {msg}"))
