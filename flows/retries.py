"""Retry policy of flow tasks that call a server (Label Studio, MLflow): `@task(**SERVER_RETRIES)`.

A restarting server or a dropped connection costs a retry with back-off, not the
run; compute tasks are not retried (a failed training step is a bug to see).
The counts are the `[servers] task_retries` / `task_retry_delays_s` defaults:
decorators are built at import, before any run config exists.
"""
from __future__ import annotations

from alignline.config.servers import ServersConfig


def server_retries(servers: ServersConfig) -> dict:
    """Keyword arguments for `@task` / `task.with_options`: retries with one back-off delay per retry."""
    delays = list(servers.task_retry_delays_s)
    delays += [delays[-1]] * max(0, servers.task_retries - len(delays))  # the last delay repeats
    return {"retries": servers.task_retries, "retry_delay_seconds": delays[:servers.task_retries] or 0}


SERVER_RETRIES = server_retries(ServersConfig())
