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


def ensure_project(client: LabelStudio, title: str, label_config: str, description: str = "",
                   **settings: Any) -> int:
    """The id of the project with this title, created (and its config and settings kept current) as needed.

    `settings` are project fields such as `maximum_annotations`, `overlap_cohort_percentage`,
    `expert_instruction`, `show_instruction`, `show_skip_button`.
    """
    for project in client.projects.list():
        if project.title == title:
            stale = {k: v for k, v in settings.items() if getattr(project, k, None) != v}
            if project.label_config != label_config:
                stale["label_config"] = label_config
            if stale:
                client.projects.update(id=project.id, **stale)
            return project.id
    return client.projects.create(title=title, label_config=label_config, description=description, **settings).id


def find_project(client: LabelStudio, title: str) -> int | None:
    return next((p.id for p in client.projects.list() if p.title == title), None)


def existing_keys(client: LabelStudio, project_id: int, page_size: int = 1000) -> set[str]:
    keys = set()
    for task in client.tasks.list(project=project_id, fields="task_only", page_size=page_size):
        key = (task.data or {}).get(TASK_KEY)
        if key:
            keys.add(key)
    return keys


def import_tasks(client: LabelStudio, project_id: int, tasks: Sequence[dict[str, Any]],
                 batch_size: int = 500, retries: int = 5, backoff_s: float = 1.0) -> int:
    """Import the tasks not already in the project (by content key), in batches; returns how many were new."""
    have = _with_retries(lambda: existing_keys(client, project_id), retries, backoff_s,
                         f"listing the tasks of project {project_id}")
    fresh, seen = [], set()
    for data in tasks:
        key = data.get(TASK_KEY) or task_key(data)
        if key in have or key in seen:
            continue
        seen.add(key)
        fresh.append({"data": {**data, TASK_KEY: key}})
    for start in range(0, len(fresh), batch_size):
        batch = fresh[start:start + batch_size]
        state = {"tries": 0}

        def send(batch=batch, state=state):
            todo = batch
            if state["tries"]:  # a failed try may still have landed: resend only what is missing
                have_now = existing_keys(client, project_id)
                todo = [t for t in batch if t["data"][TASK_KEY] not in have_now]
            state["tries"] += 1
            if todo:
                client.projects.import_tasks(id=project_id, request=todo, return_task_ids=True)

        _with_retries(send, retries, backoff_s, f"importing {len(batch)} tasks into project {project_id}")
    return len(fresh)


def _with_retries(call, retries: int, backoff_s: float, what: str):
    for attempt in range(retries):
        try:
            return call()
        except Exception as e:  # connection errors and 5xx: back off, then a clear error
            if attempt == retries - 1:
                raise RuntimeError(f"Label Studio failed while {what} after {retries} tries: {e}") from e
            time.sleep(backoff_s * 2 ** attempt)


def iter_tasks(client: LabelStudio, project_id: int, query: dict | None = None, page_size: int = 500) -> Iterable[Any]:
    """Tasks with their annotations and drafts; `query` is a Data Manager query (filters, ordering)."""
    return client.tasks.list(project=project_id, fields="all", page_size=page_size,
                             query=json.dumps(query) if query else None)


def ensure_preference_project(client: LabelStudio, kind: str, title: str, overlap_share: float) -> int:
    """The helpfulness or safety project, with its labeling config, instructions and overlap settings.

    A share `overlap_share` of tasks goes to two annotators (Label Studio's overlap cohort), which is
    what inter-annotator agreement is measured on.
    """
    from .labeling import INSTRUCTIONS, label_config

    return ensure_project(client, title, label_config(kind),
                          description=f"Llama 2 §3.2.1 {kind} comparisons: pick the better response, rate how much better.",
                          maximum_annotations=2 if overlap_share > 0 else 1,
                          overlap_cohort_percentage=int(round(overlap_share * 100)),
                          expert_instruction=INSTRUCTIONS[kind], show_instruction=True, show_skip_button=True)


def iteration_progress(client: LabelStudio, titles: Iterable[str], iteration: int) -> tuple[int, int]:
    """(annotated, total) tasks of one RLHF iteration across the named projects (a task counts once it has an
    annotation)."""
    annotated = total = 0
    for title in titles:
        project = find_project(client, title)
        if project is None:
            continue
        for task in iter_tasks(client, project):
            if (task.data or {}).get("iteration") != iteration:
                continue
            total += 1
            annotated += bool(getattr(task, "total_annotations", 0) or 0)
    return annotated, total
