"""Where the real servers listen and how long `alignline up` waits for them."""
from __future__ import annotations

from dataclasses import dataclass

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
    ray_port: int = setting(16379, "Ray GCS port of the local head node.", ge=1024, le=65535)
    ray_dashboard_port: int = setting(18265, "Ray dashboard port.", ge=1024, le=65535)
    ray_client_port: int = setting(10001, "Ray client server port (ray://).", ge=1024, le=65535)
    ray_min_worker_port: int = setting(20000, "First port of the Ray worker range.", ge=1024, le=65535)
    ray_max_worker_port: int = setting(20999, "Last port of the Ray worker range.", ge=1024, le=65535)
    ray_num_cpus: int = setting(2, "Logical CPUs the Ray head node offers.", ge=1)
    ray_object_store_mb: int = setting(768, "Ray object store size in MiB.", ge=78)
    start_timeout_s: float = setting(240.0, "Seconds `up` waits for a server's health check.", gt=0)

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
        if self.ray_max_worker_port - self.ray_min_worker_port < 100:
            raise ConfigError(f"servers.ray_max_worker_port = {self.ray_max_worker_port} is not allowed; allowed: >= ray_min_worker_port + 100")

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"


PRESETS: dict[str, dict] = {}
