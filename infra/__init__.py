"""infra: how the real servers (Label Studio, MLflow, Prefect, Ray) of a data dir start and stop."""
from .servers import ServerError, ServersDown, ServerStatus, down, prefect_env, prefect_server, require_up, status, up

__all__ = ["ServerError", "ServerStatus", "up", "status", "down", "prefect_env", "prefect_server", "require_up", "ServersDown"]
