"""Label Studio projects and idempotent task import, through label-studio-sdk 2.x.

A task's identity is the hash of its content (`data.task_key`): importing the
same tasks again creates nothing, so a collect flow that died halfway can be
rerun safely.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Iterable, Sequence

from label_studio_sdk import LabelStudio

TASK_KEY = "task_key"


def connect(url: str, token: str) -> LabelStudio:
    # Both explicit: the SDK's defaults (localhost:8000, env var read at import) are not ours.
    return LabelStudio(base_url=url, api_key=token, timeout=60)


def task_key(data: dict[str, Any]) -> str:
    """Content hash of a task's data (without its key), stable across runs."""
    body = {k: v for k, v in data.items() if k != TASK_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]


def ensure_project(client: LabelStudio, title: str, label_config: str, description: str = "") -> int:
    """The id of the project with this title, created (and its config kept current) as needed."""
    for project in client.projects.list():
        if project.title == title:
            if project.label_config != label_config:
                client.projects.update(id=project.id, label_config=label_config)
            return project.id
    return client.projects.create(title=title, label_config=label_config, description=description).id


def existing_keys(client: LabelStudio, project_id: int) -> set[str]:
    keys = set()
    for task in client.tasks.list(project=project_id, fields="all"):
        key = (task.data or {}).get(TASK_KEY)
        if key:
            keys.add(key)
    return keys


def import_tasks(client: LabelStudio, project_id: int, tasks: Sequence[dict[str, Any]],
                 batch_size: int = 500, retries: int = 5, backoff_s: float = 1.0) -> int:
    """Import the tasks not already in the project (by content key), in batches; returns how many were new."""
    have = existing_keys(client, project_id)
    fresh, seen = [], set()
    for data in tasks:
        key = data.get(TASK_KEY) or task_key(data)
        if key in have or key in seen:
            continue
        seen.add(key)
        fresh.append({"data": {**data, TASK_KEY: key}})
    for start in range(0, len(fresh), batch_size):
        batch = fresh[start:start + batch_size]
        _with_retries(lambda: client.projects.import_tasks(id=project_id, request=batch, return_task_ids=True),
                      retries, backoff_s, f"importing {len(batch)} tasks into project {project_id}")
    return len(fresh)


def _with_retries(call, retries: int, backoff_s: float, what: str):
    for attempt in range(retries):
        try:
            return call()
        except Exception as e:  # connection errors and 5xx: back off, then a clear error
            if attempt == retries - 1:
                raise RuntimeError(f"Label Studio failed while {what} after {retries} tries: {e}") from e
            time.sleep(backoff_s * 2 ** attempt)


def iter_tasks(client: LabelStudio, project_id: int) -> Iterable[Any]:
    return client.tasks.list(project=project_id, fields="all")
