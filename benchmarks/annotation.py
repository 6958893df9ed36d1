"""Annotation throughput against a real Label Studio: batched import and harvest vs one request per task.

    python benchmarks/annotation.py [--home .alignline] [--n 10000] [--per-request 200]

Both sides run in one process against the same server and project kind. The
per-request side (the SDK's `tasks.create` / `annotations.list` once per task) is
timed on `--per-request` tasks and reported as tasks/s. The project is deleted at the end.
"""
from __future__ import annotations

import argparse
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from alignline.annotation import (Judgement, connect, ensure_preference_project, import_tasks, parse_tasks,
                                  result_for)
from alignline.annotation.pairs import dialogue_html
from alignline.config import load_config
from alignline.flows.context import RunContext


def fake_tasks(n: int, tag: str) -> list[dict]:
    """Task data as `pair_tasks` makes it (the labeling config reads `conversation`, harvest reads `dialogue`)."""
    rows = []
    for i in range(n):
        dialogue = [{"role": "user", "content": f"What does function {i} do?"}]
        rows.append({"kind": "helpfulness", "prompt_id": f"{tag}-{i}", "is_safety": False, "dialogue": dialogue,
                     "conversation": dialogue_html(dialogue), "reference": "ref", "response_a": f"answer A {i}",
                     "response_b": f"answer B {i}", "policy_a": "policy/1", "policy_b": "policy/1",
                     "iteration": 1, "batch": 1})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=None)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--per-request", type=int, default=200)
    args = ap.parse_args()
    ctx = RunContext(load_config(home=args.home))
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    tag = uuid.uuid4().hex[:6]
    project = ensure_preference_project(client, "helpfulness", f"bench annotation {tag}", overlap_share=0.0)
    try:
        t0 = time.perf_counter()
        import_tasks(client, project, fake_tasks(args.n, tag), batch_size=1000)
        batched_import = args.n / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for data in fake_tasks(args.per_request, tag + "-single"):
            client.tasks.create(project=project, data=data)
        single_import = args.per_request / (time.perf_counter() - t0)

        ids = [t.id for t in client.tasks.list(project=project, fields="task_only", page_size=1000)]
        result = result_for(Judgement("a", "better"))
        # Setup, not timed: one annotation per task (bulk creation is an Enterprise API; threads instead).
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: client.annotations.create(id=i, project=project, result=result), ids))

        t0 = time.perf_counter()
        tasks = client.tasks.list(project=project, fields="all", page_size=1000)
        parsed = parse_tasks(tasks, "helpfulness", set(), {}, "bench")
        harvest_rate = len(parsed.seen_ids) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for task_id in ids[:args.per_request]:
            client.annotations.list(id=task_id)
        single_harvest = args.per_request / (time.perf_counter() - t0)
    finally:
        client.projects.delete(id=project)
    print(f"import  n={args.n}: batched {batched_import:8.1f} tasks/s | one task per request "
          f"{single_import:6.1f} tasks/s (n={args.per_request}) | x{batched_import / single_import:.1f}")
    print(f"harvest n={len(parsed.seen_ids)}: paged export {harvest_rate:8.1f} annotations/s | one request per task "
          f"{single_harvest:6.1f} tasks/s (n={args.per_request}) | x{harvest_rate / single_harvest:.1f}")


if __name__ == "__main__":
    main()
