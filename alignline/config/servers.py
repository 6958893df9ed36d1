"""Where the real servers listen and how long `alignline up` waits for them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import ConfigError, setting


@dataclass(frozen=True)
class ServersConfig:
    host: str = setting("127.0.0.1", "Address every server binds; loopback only (servers never listen on 0.0.0.0).")
    label_studio_port: int = setting(18080, "Label Studio HTTP port.", ge=1024, le=65535)
    label_studio_version: str = setting("1.23.2", "label-studio server release installed in its own virtualenv.")
    mlflow_port: int = setting(15000, "MLflow tracking server and registry port.", ge=1024, le=65535)
    mlflow_uri: str = setting("", "Tracking and registry URI to use instead of this data dir's MLflow server (a team's "
                                  "server, or sqlite:///FILE for a run without servers); empty: http://host:mlflow_port.")
    prefect_port: int = setting(14200, "Prefect server (API and UI) port.", ge=1024, le=65535)
    prefect_serve: bool = setting(True, "`alignline up` also starts `alignline serve` (a fifth managed process): the "
                                        "flows as Prefect deployments, started from the Prefect UI on these servers.")
    prefect_serve_port: int = setting(14201, "Health port of the `serve` process (Prefect runner webserver: /health).",
                                      ge=1024, le=65535)
    prefect_serve_limit: int = setting(1, "Flow runs `serve` executes at once (each trains on this machine's CPUs or "
                                          "GPUs; more queue in the Prefect UI).", ge=1)
    collect_schedule: str = setting("", "Cron schedule of the `collect` deployment (e.g. '0 6 * * 1': Mondays 06:00); "
                                        "empty: no schedule.", source="Llama 2 §3.2.1: preference data collected in "
                                        "weekly batches")
    task_retries: int = setting(2, "Retries of flow tasks that call Label Studio or MLflow (a restarting server, a "
                                   "dropped connection); compute tasks are not retried.", ge=0, le=10)
    task_retry_delays_s: tuple[float, ...] = setting((2.0, 10.0), "Back-off before each retry of those tasks (the last "
                                                     "repeats when retries outnumber it).")
    ray_port: int = setting(16379, "Ray GCS port of the local head node.", ge=1024, le=65535)
    ray_dashboard_port: int = setting(18265, "Ray dashboard port.", ge=1024, le=65535)
    ray_client_port: int = setting(10001, "Ray client server port (ray://).", ge=1024, le=65535)
    ray_min_worker_port: int = setting(20000, "First port of the Ray worker range.", ge=1024, le=65535)
    ray_max_worker_port: int = setting(20999, "Last port of the Ray worker range.", ge=1024, le=65535)
    ray_num_cpus: int = setting(2, "Logical CPUs the Ray head node offers.", ge=1)
    ray_object_store_mb: int = setting(768, "Ray object store size in MiB.", ge=78)
    start_timeout_s: float = setting(240.0, "Seconds `up` waits for a server's health check.", gt=0)
    ray_address: str = setting("", "Ray head (host:port of its GCS) that training and Ray tasks attach to instead of this "
                                   "data dir's head; a non-loopback head switches Ray's multi-node mode on in the "
                                   "driver. Empty: host:ray_port.")
    train_storage: str = setting("", "Ray Train run storage (checkpoints, summaries, outputs from other nodes): a folder "
                                     "or s3://bucket/prefix that every node reaches, so a worker restarted on another "
                                     "node restores. S3 credentials come from the AWS chain (AWS_ACCESS_KEY_ID/"
                                     "AWS_SECRET_ACCESS_KEY or ~/.aws), never this file. Empty: the data dir's ray/ folder.")
    train_storage_endpoint: str = setting("", "S3-compatible endpoint URL for an s3:// train_storage (MinIO, Ceph); "
                                              "empty: AWS.")
    auth: bool = setting(True, "Credentials on every server (infra/auth.py): MLflow basic auth with a pipeline account "
                                "and reviewer accounts (only reviewers move `champion`), a Prefect API auth string, "
                                "Ray token auth. Secrets are generated into the data dir's secrets/ (0600).")
    database: Literal["sqlite", "postgresql"] = setting(
        "sqlite", "Database behind Label Studio and MLflow: 'sqlite' files in the data dir (one machine, few "
                  "annotators), or 'postgresql', a PostgreSQL server `up` starts first (what a team runs under "
                  "concurrent annotators; Label Studio and MLflow both document PostgreSQL for production).")
    postgres_port: int = setting(15432, "PostgreSQL port (database = 'postgresql'; loopback only).", ge=1024, le=65535)
    postgres_os_user: str = setting(
        "postgres", "OS account the PostgreSQL server runs as when alignline runs as root (PostgreSQL refuses to run "
                    "as root); Debian's `postgresql` package creates it. Ignored when not root.")
    postgres_bin_dir: str = setting(
        "", "Folder holding initdb and postgres; empty: PATH, then the newest /usr/lib/postgresql/*/bin (Debian).")

    def validate(self) -> None:
        if self.host not in ("127.0.0.1", "localhost"):
            raise ConfigError(f"servers.host = {self.host!r} is not allowed; allowed: '127.0.0.1' (loopback only)")
        ports = {k: v for k, v in vars(self).items() if k.endswith("_port") and "worker" not in k}
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise ConfigError(f"servers.{key} = {port} is not allowed; allowed: a port not used by servers.{seen[port]}")
            if self.ray_min_worker_port <= port <= self.ray_max_worker_port:
                raise ConfigError(f"servers.{key} = {port} is not allowed; allowed: outside the Ray worker range")
            seen[port] = key
        if not self.postgres_os_user.strip() or any(c in self.postgres_os_user for c in " :/"):
            raise ConfigError(f"servers.postgres_os_user = {self.postgres_os_user!r} is not allowed; allowed: an account name")
        if self.collect_schedule and len(self.collect_schedule.split()) != 5:
            raise ConfigError(f"servers.collect_schedule = {self.collect_schedule!r} is not allowed; allowed: empty or "
                              "a 5-field cron expression such as '0 6 * * 1'")
        if not self.task_retry_delays_s or any(d < 0 for d in self.task_retry_delays_s):
            raise ConfigError(f"servers.task_retry_delays_s = {list(self.task_retry_delays_s)!r} is not allowed; "
                              "allowed: one or more delays >= 0")
        if self.ray_address and (":" not in self.ray_address or not self.ray_address.rsplit(":", 1)[1].isdigit()):
            raise ConfigError(f"servers.ray_address = {self.ray_address!r} is not allowed; allowed: empty or host:port")
        if self.train_storage and "://" in self.train_storage and not self.train_storage.startswith(("s3://", "file://")):
            raise ConfigError(f"servers.train_storage = {self.train_storage!r} is not allowed; allowed: empty, a folder, "
                              "file://... or s3://bucket/prefix")
        if self.ray_max_worker_port - self.ray_min_worker_port < 100:
            raise ConfigError(f"servers.ray_max_worker_port = {self.ray_max_worker_port} is not allowed; allowed: >= ray_min_worker_port + 100")

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"


PRESETS: dict[str, dict] = {}
