"""The four real servers of a data dir and how they start, answer and stop.

`up` is idempotent: a server whose pid file points at a live, healthy process
is left alone; a port held by anything else stops `up` with a message naming
it. `down` signals only the process groups whose pids `up` recorded.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection

import psutil
import requests

from alignline.config import RunConfig

from alignline.storage import DataDir

from . import auth, paths, postgres


class ServerError(RuntimeError):
    """A server that could not start, or a port held by something else."""


# Settings every server process gets; never the caller's environment wholesale
# (Label Studio reads HOST, USERNAME, PASSWORD... unprefixed as a fallback).
_BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def _base_env(home: Path, name: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
    env["HOME"] = str(DataDir(home).server(name) / "home")
    env["PYTHONUNBUFFERED"] = "1"
    env["DO_NOT_TRACK"] = "1"
    return env


def _bin(name: str) -> str:
    """A console script of this environment (mlflow, prefect, ray)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


@dataclass
class Server:
    name: str
    port: int
    health_path: str
    command: Callable[[RunConfig], list[str]]
    env: Callable[[RunConfig], dict[str, str]]
    prepare: Callable[[RunConfig, Callable[[str], None]], None] = lambda cfg, say: None
    after_start: Callable[[RunConfig], None] = lambda cfg: None
    extra_ports: Callable[[RunConfig], list[int]] = lambda cfg: []
    ui_path: str = "/"
    health_ok: Callable[[requests.Response], bool] = field(default=lambda r: r.status_code == 200)
    probe: Callable[[RunConfig], bool] | None = None  # a health check that is not HTTP (PostgreSQL)
    stop_signal: int = signal.SIGTERM
    scheme: str = "http"

    def url(self, cfg: RunConfig, port: int | None = None) -> str:
        if self.scheme != "http":
            return f"{self.scheme}://{cfg.servers.host}:{port or self.port}"
        return cfg.servers.url(port or self.port)


# -- Label Studio --------------------------------------------------------------------------

def _ls_prepare(cfg: RunConfig, say: Callable[[str], None]) -> None:
    home = cfg.home
    venv = DataDir(home).venv("label-studio")
    marker = venv / f".installed-{cfg.servers.label_studio_version}"
    if not marker.exists():
        say(f"label-studio: creating its own virtualenv at {venv} (its pins clash with ours; ~1-2 min once)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                              f"label-studio=={cfg.servers.label_studio_version}"], capture_output=True, text=True)
        # pip.conf may name local indexes that do not exist on this machine: drop only those warnings
        told = [line for line in (pip.stdout + pip.stderr).splitlines()
                if line.strip() and not line.startswith("WARNING: Location ")]
        for line in told[-20:]:
            say(f"label-studio pip: {line}")
        if pip.returncode:
            raise RuntimeError(f"pip install label-studio=={cfg.servers.label_studio_version} failed "
                               f"(exit {pip.returncode}); its last lines are above")
        marker.touch()
    secret = DataDir(home).secrets / "label-studio.json"
    if not secret.exists():
        # Generated once per data dir; Label Studio writes the user and token only on first boot.
        paths.write_secret(home, "label-studio", {
            "username": "admin@alignline.local",
            "password": secrets.token_urlsafe(18),
            "token": secrets.token_hex(20),  # 40 chars: Label Studio's limit
        })
    if cfg.servers.database == "postgresql":
        postgres.wait_ready(cfg, say)  # it migrates its schema on first boot


def _ls_env(cfg: RunConfig) -> dict[str, str]:
    cred = paths.read_secret(cfg.home, "label-studio")
    env = _base_env(cfg.home, "label-studio")
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(DataDir(cfg.home).server("label-studio") / "data"),
        "LABEL_STUDIO_USERNAME": cred["username"],
        "LABEL_STUDIO_PASSWORD": cred["password"],
        "LABEL_STUDIO_USER_TOKEN": cred["token"],
        # 1.23 disables legacy tokens for a new organization; the platform and the
        # scripted annotator authenticate with the bootstrapped token.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_HOST": cfg.servers.url(cfg.servers.label_studio_port),
    })
    if cfg.servers.database == "postgresql":
        env.update(postgres.label_studio_env(cfg))
    return env


def _ls_command(cfg: RunConfig) -> list[str]:
    venv = DataDir(cfg.home).venv("label-studio")
    return [str(venv / "bin" / "label-studio"), "start", "--no-browser",
            "--internal-host", cfg.servers.host, "--port", str(cfg.servers.label_studio_port)]


def _ls_verify(cfg: RunConfig) -> None:
    """The bootstrapped token must authorise real SDK calls, not just exist."""
    from label_studio_sdk import LabelStudio

    token = paths.read_secret(cfg.home, "label-studio")["token"]
    client = LabelStudio(base_url=cfg.servers.url(cfg.servers.label_studio_port), api_key=token)
    try:
        client.users.whoami()
    except Exception as e:  # the SDK raises its own ApiError types
        raise ServerError(f"label-studio answered but its API token was refused ({type(e).__name__}); "
                          f"see {DataDir(cfg.home).log_file('label-studio')}") from None


# -- MLflow ------------------------------------------------------------------------------------

def _mlflow_command(cfg: RunConfig) -> list[str]:
    d = DataDir(cfg.home).server("mlflow")
    # The PostgreSQL URI carries no password (libpq reads PGPASSFILE), so it may sit in argv.
    store = postgres.mlflow_backend_uri(cfg) if cfg.servers.database == "postgresql" else f"sqlite:///{d / 'mlflow.db'}"
    return [_bin("mlflow"), "server", "--backend-store-uri", store,
            "--artifacts-destination", str(d / "artifacts"), "--host", cfg.servers.host,
            "--port", str(cfg.servers.mlflow_port), "--workers", "1", *auth.mlflow_server_args(cfg)]


def _mlflow_env(cfg: RunConfig) -> dict[str, str]:
    env = _base_env(cfg.home, "mlflow")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    if cfg.servers.database == "postgresql":
        env.update(postgres.client_env(cfg))
    env.update(auth.mlflow_server_env(cfg))  # basic auth: its config file, admin bootstrap password (env, never argv)
    return env


def _mlflow_prepare(cfg: RunConfig, say: Callable[[str], None]) -> None:
    if cfg.servers.database == "postgresql":
        postgres.wait_ready(cfg, say)


# -- Prefect -------------------------------------------------------------------------------------

def prefect_env(cfg: RunConfig) -> dict[str, str]:
    """Settings a process needs to use this data dir's Prefect server (with `servers.auth`, its auth string)."""
    env = {"PREFECT_HOME": str(DataDir(cfg.home).server("prefect")),
           "PREFECT_API_URL": f"{cfg.servers.url(cfg.servers.prefect_port)}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    if (auth_string := auth.prefect_auth_string(cfg)) is not None:
        env["PREFECT_API_AUTH_STRING"] = auth_string
    return env


@contextlib.contextmanager
def prefect_server(cfg: RunConfig):
    """Flow runs in this block go to this data dir's Prefect server (Prefect's `temporary_settings`, so it works
    whenever Prefect was imported; outside the block the previous settings apply again)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, PREFECT_HOME, temporary_settings

    env = prefect_env(cfg)
    updates = {PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_HOME: env["PREFECT_HOME"]}
    if "PREFECT_API_AUTH_STRING" in env:
        updates[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates):
        yield env["PREFECT_API_URL"]


class ServersDown(ServerError):
    """A command that needs the real servers ran before `alignline up`."""


def require_up(cfg: RunConfig) -> None:
    """Raise ServersDown naming the fix unless every server of this data dir is healthy."""
    down_now = [s.name for s in status(cfg) if not s.healthy and s.name != SERVE]  # the CLI runs flows itself
    if down_now:
        raise ServersDown(f"this command needs the servers of {cfg.home} ({', '.join(down_now)} down): "
                          "run `alignline up` first (`alignline status` shows which are down)")


def _prefect_command(cfg: RunConfig) -> list[str]:
    return [_bin("prefect"), "server", "start", "--host", cfg.servers.host, "--port", str(cfg.servers.prefect_port)]


def _prefect_env(cfg: RunConfig) -> dict[str, str]:
    env = _base_env(cfg.home, "prefect")
    env.update(prefect_env(cfg))
    env.pop("PREFECT_API_URL")  # the server itself needs no client URL
    env["PREFECT_UI_API_URL"] = f"{cfg.servers.url(cfg.servers.prefect_port)}/api"
    env.update(auth.prefect_server_env(cfg))  # every API call but /api/health needs the auth string
    return env


# -- Ray ---------------------------------------------------------------------------------------------

# Ray turns 127.0.0.1 into the machine's routable address unless its
# "cluster" mode is off; off, every Ray server binds loopback. Drivers that
# attach need the same setting so they look for the node on 127.0.0.1.
RAY_CLIENT_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def ray_client_env(address: str) -> dict[str, str]:
    """What a driver attaching to the Ray head at `address` (host:port) sets before `import ray`: a loopback head
    keeps cluster mode off (as above); a head on another machine needs it on, so this driver advertises an address
    the other nodes can reach (multi-node mode)."""
    env = dict(RAY_CLIENT_ENV)
    if address.rsplit(":", 1)[0].strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    return env


def _ray_ports(cfg: RunConfig) -> dict[str, int]:
    # Ray opens several fixed ports besides GCS; deriving them from ray_port keeps
    # two data dirs (two configs) from colliding.
    base = cfg.servers.ray_port
    return {"node-manager-port": base + 1, "object-manager-port": base + 2, "metrics-export-port": base + 3,
            "dashboard-agent-listen-port": base + 4, "dashboard-agent-grpc-port": base + 5,
            "runtime-env-agent-port": base + 6}


def _ray_command(cfg: RunConfig) -> list[str]:
    s = cfg.servers
    cmd = [_bin("ray"), "start", "--head", "--block", "--disable-usage-stats",
           "--node-ip-address", s.host, "--port", str(s.ray_port),
           "--dashboard-host", s.host, "--dashboard-port", str(s.ray_dashboard_port), "--include-dashboard", "true",
           "--ray-client-server-port", str(s.ray_client_port),
           "--min-worker-port", str(s.ray_min_worker_port), "--max-worker-port", str(s.ray_max_worker_port),
           "--num-cpus", str(s.ray_num_cpus), "--object-store-memory", str(s.ray_object_store_mb * 1024 * 1024),
           "--temp-dir", str(DataDir(cfg.home).ray_temp)]
    for flag, port in _ray_ports(cfg).items():
        cmd += [f"--{flag}", str(port)]
    return cmd


def _ray_env(cfg: RunConfig) -> dict[str, str]:
    env = _base_env(cfg.home, "ray")
    env.update(RAY_CLIENT_ENV)
    # Ray's own helper actors (e.g. Ray Train's placement-group cleaner) call
    # ray.init() without an address; with several clusters on one machine they
    # must find this one.
    env["RAY_ADDRESS"] = f"{cfg.servers.host}:{cfg.servers.ray_port}"
    # Workers must import alignline exactly as the driver does.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and "site-packages" not in p and Path(p).is_dir())
    # Token auth for the head; workers inherit the rest: the pipeline's MLflow account and the Prefect auth string.
    env.update(auth.client_env(cfg))
    return env


# -- serve: the flows as Prefect deployments (started from the Prefect UI) ------------------------------

SERVE = "serve"


def _serve_config(cfg: RunConfig) -> Path:
    return DataDir(cfg.home).server(SERVE) / "up-config.toml"


def _serve_prepare(cfg: RunConfig, say: Callable[[str], None]) -> None:
    """`serve` gets this very config (ports, preset, overrides) as a TOML file, not as arguments."""
    from alignline.config.dump import dump_toml

    (DataDir(cfg.home).server(SERVE) / "home").mkdir(parents=True, exist_ok=True)
    _serve_config(cfg).write_text(dump_toml(cfg))


def _serve_command(cfg: RunConfig) -> list[str]:
    return [sys.executable, "-m", "alignline.flows.cli", "serve", "--config", str(_serve_config(cfg)),
            "--home", str(cfg.home)]


def _serve_env(cfg: RunConfig) -> dict[str, str]:
    env = _base_env(cfg.home, SERVE)
    env.update(RAY_CLIENT_ENV)
    env.update(prefect_env(cfg))
    env.update(auth.client_env(cfg))  # the flow runs it starts act as the pipeline, like the CLI
    return env


def remote_ray_head(cfg: RunConfig) -> str | None:
    """servers.ray_address when it names another head than this data dir's own (host:ray_port): `up` then starts
    no local Ray head, and `status` reports the configured one."""
    s = cfg.servers
    return s.ray_address if s.ray_address and s.ray_address != f"{s.host}:{s.ray_port}" else None


def _reachable(address: str, timeout_s: float = 3.0) -> bool:
    """A TCP connection to host:port opens (a Ray GCS speaks gRPC, not HTTP)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def servers(cfg: RunConfig) -> list[Server]:
    """The servers `up` starts for this data dir (no Ray head when servers.ray_address names a remote one)."""
    s = cfg.servers
    # Started with the others (it waits for Prefect itself); `down` stops it first. Health: the runner's webserver.
    serve = [Server(SERVE, s.prefect_serve_port, "/health", _serve_command, _serve_env, _serve_prepare)] \
        if s.prefect_serve else []
    # PostgreSQL first: `up` starts servers in this order and `down` stops them in reverse.
    database = [Server(postgres.NAME, s.postgres_port, "/", postgres.command, postgres.env, postgres.prepare,
                       probe=postgres.probe, stop_signal=signal.SIGINT,  # SIGINT: fast shutdown, SIGTERM waits for clients
                       scheme="postgresql")] if s.database == "postgresql" else []
    return [
        *database,
        Server("label-studio", s.label_studio_port, "/health", _ls_command, _ls_env, _ls_prepare, _ls_verify),
        Server("mlflow", s.mlflow_port, "/health", _mlflow_command, _mlflow_env, _mlflow_prepare,
               after_start=auth.bootstrap_mlflow),  # roles and the pipeline account (idempotent)
        Server("prefect", s.prefect_port, "/api/health", _prefect_command, _prefect_env),
        *([] if remote_ray_head(cfg) else [
            Server("ray", s.ray_port, "/api/gcs_healthz", _ray_command, _ray_env,
                   extra_ports=lambda c: [c.servers.ray_dashboard_port, c.servers.ray_client_port,
                                          *_ray_ports(c).values()],
                   ui_path="/")]),
        *serve,
    ]


# -- process bookkeeping ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerStatus:
    name: str
    url: str
    healthy: bool
    pid: int | None


def _write_pid(home: Path, name: str, proc: subprocess.Popen) -> None:
    """pid and the process's start time: a recycled pid (another program, after a reboot) is not ours."""
    started = psutil.Process(proc.pid).create_time()
    DataDir(home).pid_file(name).write_text(json.dumps({"pid": proc.pid, "create_time": started}))


def _read_pid(home: Path, name: str) -> int | None:
    """The server's pid when that very process (same start time) still runs; None for a stale pid file."""
    path = DataDir(home).pid_file(name)
    try:
        record = json.loads(path.read_text())
        pid, started = int(record["pid"]), float(record["create_time"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None  # missing, or an old plain-pid file we cannot vouch for
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or abs(proc.create_time() - started) > 1e-3:
            return None
    except psutil.Error:
        return None
    return pid


def _health_url(cfg: RunConfig, srv: Server) -> str:
    port = cfg.servers.ray_dashboard_port if srv.name == "ray" else srv.port
    return srv.url(cfg, port) + srv.health_path


def _healthy(cfg: RunConfig, srv: Server) -> bool:
    if srv.probe is not None:
        return srv.probe(cfg)
    try:
        return srv.health_ok(requests.get(_health_url(cfg, srv), timeout=3))
    except requests.RequestException:
        return False


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _holder(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline()[:3])})"
    except (psutil.Error, OSError):
        pass
    return "another process"


def status(cfg: RunConfig) -> list[ServerStatus]:
    out = []
    for srv in servers(cfg):
        pid = _read_pid(cfg.home, srv.name)
        out.append(ServerStatus(srv.name, srv.url(cfg, cfg.servers.ray_dashboard_port if srv.name == "ray" else None),
                                pid is not None and _healthy(cfg, srv), pid))
    remote = remote_ray_head(cfg)
    if remote:  # not ours to start or stop: healthy when its GCS port answers
        out.append(ServerStatus("ray", f"{remote} (remote)", _reachable(remote), None))
    return out


def _start(cfg: RunConfig, srv: Server, say: Callable[[str], None]) -> subprocess.Popen | None:
    pid = _read_pid(cfg.home, srv.name)
    if pid is not None:
        say(f"{srv.name}: already running (pid {pid})")
        return None
    for port in [srv.port, *srv.extra_ports(cfg)]:
        if _port_taken(cfg.servers.host, port):
            raise ServerError(f"{srv.name}: port {port} on {cfg.servers.host} is taken by {_holder(port)}, "
                              f"not by this data dir's server; stop it or choose another port in [servers]")
    srv.prepare(cfg, say)
    log = open(DataDir(cfg.home).log_file(srv.name), "ab")
    proc = subprocess.Popen(srv.command(cfg), env=srv.env(cfg), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=DataDir(cfg.home).server(srv.name),
                            start_new_session=True)  # its own process group: `down` signals just that
    _write_pid(cfg.home, srv.name, proc)
    say(f"{srv.name}: starting (pid {proc.pid}, log {DataDir(cfg.home).log_file(srv.name)})")
    return proc


def up(cfg: RunConfig, say: Callable[[str], None] = print, names: Collection[str] | None = None) -> list[ServerStatus]:
    """Start every server (or those in `names`) that is not running, then wait for their health checks. One
    `up`/`down` at a time per data dir: a second caller waits for the first (then finds the servers healthy)."""
    with DataDir(cfg.home).lock("servers", wait_s=cfg.servers.start_timeout_s + 60):
        started = _up(cfg, say, names)
    auth.use_client_identity(cfg, replace=False)  # servers.auth: this process then calls them as the pipeline
    return started


def _selected(cfg: RunConfig, names: Collection[str] | None) -> list[Server]:
    chosen = [srv for srv in servers(cfg) if names is None or srv.name in names]
    unknown = set(names or ()) - {srv.name for srv in servers(cfg)}
    if unknown:
        raise ServerError(f"no server named {', '.join(sorted(unknown))} in this configuration")
    return chosen


def _up(cfg: RunConfig, say: Callable[[str], None], names: Collection[str] | None = None) -> list[ServerStatus]:
    (DataDir(cfg.home).server("label-studio") / "home").mkdir(exist_ok=True)
    auth.ensure_secrets(cfg)  # with `servers.auth`: generated once, before any server reads them
    procs = {srv.name: _start(cfg, srv, say) for srv in _selected(cfg, names)}
    deadline = time.monotonic() + cfg.servers.start_timeout_s
    pending = {srv.name: srv for srv in _selected(cfg, names)}
    while pending:
        for name, srv in list(pending.items()):
            proc = procs[name]
            if proc is not None and proc.poll() is not None:
                raise ServerError(f"{name}: exited with code {proc.returncode} during start; "
                                  f"see {DataDir(cfg.home).log_file(name)}")
            if _healthy(cfg, srv):
                srv.after_start(cfg)
                say(f"{name}: healthy at {_health_url(cfg, srv).rsplit('/', 1)[0] if name != 'ray' else srv.url(cfg, cfg.servers.ray_dashboard_port)}")
                del pending[name]
        if pending and time.monotonic() > deadline:
            name = next(iter(pending))
            raise ServerError(f"{name}: no healthy answer from {_health_url(cfg, pending[name])} within "
                              f"{cfg.servers.start_timeout_s:.0f}s; see {DataDir(cfg.home).log_file(name)}")
        time.sleep(1.0)
    return status(cfg)


def down(cfg: RunConfig, say: Callable[[str], None] = print, timeout_s: float = 30.0,
         names: Collection[str] | None = None) -> None:
    """Stop what `up` started (by recorded pid and start time), nothing else; waits for a running `up`."""
    with DataDir(cfg.home).lock("servers", wait_s=cfg.servers.start_timeout_s + 60):
        _down(cfg, say, timeout_s, names)


def _down(cfg: RunConfig, say: Callable[[str], None], timeout_s: float, names: Collection[str] | None = None) -> None:
    for srv in reversed(_selected(cfg, names)):
        pid = _read_pid(cfg.home, srv.name)
        pidf = DataDir(cfg.home).pid_file(srv.name)
        if pid is None:
            pidf.unlink(missing_ok=True)
            say(f"{srv.name}: not running")
            continue
        try:
            os.killpg(pid, srv.stop_signal)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.3)
        if _group_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pidf.unlink(missing_ok=True)
        # Sockets of the dead server may linger a moment; `up` right after must find them free.
        ports_deadline = time.monotonic() + 15
        while time.monotonic() < ports_deadline and _port_taken(cfg.servers.host, srv.port):
            time.sleep(0.3)
        say(f"{srv.name}: stopped")


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
