"""The real servers of a data dir: up is idempotent, status is honest, down stops only ours."""
import socket
import subprocess
import sys
import time

import psutil
import pytest

from alignline.infra import ServerError, down, status, up
from alignline.infra import paths
from alignline.storage import DataDir
from alignline.annotation import connect
from tests.conftest import make_test_config

pytestmark = pytest.mark.integration


def test_all_four_healthy(servers):
    rows = {s.name: s for s in status(servers)}
    assert set(rows) == {"label-studio", "mlflow", "prefect", "ray"}
    assert all(s.healthy and s.pid for s in rows.values()), rows


def test_up_again_is_a_no_op(servers):
    said = []
    before = {s.name: s.pid for s in status(servers)}
    up(servers, say=said.append)
    assert {s.name: s.pid for s in status(servers)} == before
    assert sum("already running" in m for m in said) == 4


def test_every_listening_port_is_loopback(servers):
    pids = set()
    for s in status(servers):
        root = psutil.Process(s.pid)
        pids |= {root.pid, *(c.pid for c in root.children(recursive=True))}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "no listening sockets found for the servers"
    for c in listening:
        assert c.laddr.ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1"), (c.laddr, psutil.Process(c.pid).name())


def test_label_studio_token_authorises_sdk_calls(servers):
    cred = paths.read_secret(servers.home, "label-studio")
    client = connect(servers.servers.url(servers.servers.label_studio_port), cred["token"])
    assert client.users.whoami().email == cred["username"]
    secret = DataDir(servers.home).secrets / "label-studio.json"
    assert secret.stat().st_mode & 0o777 == 0o600
    with pytest.raises(Exception):
        connect(servers.servers.url(servers.servers.label_studio_port), "0" * 40).users.whoami()


def test_no_secret_in_any_log(servers):
    cred = paths.read_secret(servers.home, "label-studio")
    logs = list(servers.home.glob("servers/*/server.log")) + list(DataDir(servers.home).ray_temp.glob("session_latest/logs/*"))
    # every server's own log is among those read, and has something in it to search
    for name in ("label-studio", "mlflow", "prefect", "ray"):
        log = DataDir(servers.home).log_file(name)
        assert log in logs and log.stat().st_size > 0, log
    for log in logs:
        if log.is_file():
            text = log.read_text(errors="replace")
            assert cred["password"] not in text and cred["token"] not in text, log


def test_port_held_by_another_process_is_named(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        cfg = make_test_config(f"servers.mlflow_port={port}", "servers.label_studio_port=28081",
                          "servers.prefect_port=24203", "servers.ray_port=26400",
                          "servers.ray_dashboard_port=28266", "servers.ray_client_port=21002")
        cfg = type(cfg)(**{**cfg.__dict__, "home": tmp_path})
        # Label Studio would be installed first: give it an installed marker and skip it by checking mlflow first.
        from alignline.infra.servers import _start, servers as all_servers

        mlflow = next(s for s in all_servers(cfg) if s.name == "mlflow")
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is taken by pid"):
            _start(cfg, mlflow, say=lambda m: None)
    finally:
        sock.close()


def test_down_stops_only_what_up_started(servers):
    import ray

    from alignline.flows.context import RunContext

    # A driver attached to the head would be ended by Ray once its GCS is gone: detach first, and re-attach after,
    # for the tests later in the session that share the `ray_cluster` connection.
    attached = ray.is_initialized()
    if attached:
        ray.shutdown()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        down(servers, say=lambda m: None)
        assert not any(s.healthy or s.pid for s in status(servers))
        assert bystander.poll() is None
        down(servers, say=lambda m: None)  # idempotent
    finally:
        bystander.kill()
        up(servers, say=lambda m: None)  # the rest of the session needs them
        if attached:
            RunContext(servers).init_ray()
    assert all(s.healthy for s in status(servers))
