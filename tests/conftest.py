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
]

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
    yield cfg
    down(cfg, say=lambda msg: print(f"[servers] {msg}"))


@contextlib.contextmanager
def real_prefect(cfg: RunConfig):
    """Point Prefect at the real server of `cfg` for the duration of the block."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from alignline.infra import prefect_env

    with temporary_settings({PREFECT_API_URL: prefect_env(cfg)["PREFECT_API_URL"]}):
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
