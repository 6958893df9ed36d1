"""Reading a large annotated project: the harvest's keyset pages by task id vs the SDK's page-number pager.

    python benchmarks/harvest_paging.py [--home DIR] [--set servers.label_studio_port=P ...] [--n 5000]
        [--keyset-page 100] [--reference-page 500]

Against one running Label Studio (the data dir's; `--set` overrides its config as the CLI does): a fresh
preference project with `--n` tasks, each with one annotation (setup, not timed), then the whole project read
twice in one process, in turn: the reference, `tasks.list(fields="all", page_size=...)` iterated by the SDK's
pager (page numbers: what the harvest did before), and `annotation.harvest.task_pages` (keyset: `tasks:id >
last`, first page each time). The pager ends on a request for the page after the last (404), which the SDK
treats as the end: it is counted as a request. Printed per side: requests, tasks read, total seconds, slowest request, first and
last request; then the ratios. The slowest request is what the SDK's 60 s timeout sees. The project is deleted at
the end.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from label_studio_sdk.core.api_error import ApiError

from alignline.annotation import Judgement, connect, ensure_preference_project, import_tasks, result_for
from alignline.annotation.harvest import task_pages
from alignline.annotation.pairs import dialogue_html
from alignline.config import load_config
from alignline.flows.context import RunContext


def bench_tasks(n: int, tag: str) -> list[dict]:
    rows = []
    for i in range(n):
        dialogue = [{"role": "user", "content": f"[{tag}] How do I rotate log file {i}?"}]
        rows.append({"kind": "helpfulness", "prompt_id": f"{tag}-{i}", "is_safety": False, "dialogue": dialogue,
                     "conversation": dialogue_html(dialogue), "reference": "use logrotate",
                     "response_a": f"Use logrotate with a daily rule for file {i}.",
                     "response_b": f"Delete file {i} by hand every day.", "policy_a": "policy/1",
                     "policy_b": "policy/1", "iteration": 1, "batch": 1})
    return rows


def timed_pages(pages) -> dict:
    """Walk an iterator of pages, timing each request (the time until the page is in hand)."""
    times, tasks, annotations = [], 0, 0
    it = iter(pages)
    while True:
        t0 = time.perf_counter()
        try:
            page = next(it)
        except StopIteration:
            break
        except ApiError as e:  # the SDK pager's end: a request for the page after the last one answers 404
            if e.status_code != 404:
                raise
            times.append(time.perf_counter() - t0)
            break
        times.append(time.perf_counter() - t0)
        items = page.items if hasattr(page, "items") and not isinstance(page, tuple) else page[0]
        tasks += len(items or [])
        annotations += sum(len((t.annotations if hasattr(t, "annotations") else t["annotations"]) or [])
                           for t in items or [])
    return {"requests": len(times), "tasks": tasks, "annotations": annotations, "total_s": sum(times),
            "max_request_s": max(times, default=float("nan")), "first_request_s": times[0] if times else float("nan"),
            "last_request_s": times[-1] if times else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=None)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (as the CLI's --set)")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--keyset-page", type=int, default=100)
    ap.add_argument("--reference-page", type=int, default=500)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ctx = RunContext(load_config(home=args.home, overrides=args.set))
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    tag = uuid.uuid4().hex[:6]
    project = ensure_preference_project(client, "helpfulness", f"bench paging {tag}", overlap_share=0.0)
    try:
        import_tasks(client, project, bench_tasks(args.n, tag), batch_size=1000)
        ids = [t.id for t in client.tasks.list(project=project, fields="task_only", page_size=1000)]
        result = result_for(Judgement("a", "better"))
        with ThreadPoolExecutor(2) as pool:  # setup, not timed: one annotation per task
            list(pool.map(lambda i: client.annotations.create(id=i, project=project, result=result), ids))
        def sdk_pages():  # a generator, so the first request (made by `list` itself) is timed too
            yield from client.tasks.list(project=project, fields="all", page_size=args.reference_page).iter_pages()

        reference = timed_pages(sdk_pages())
        keyset = timed_pages(task_pages(client, project, page_size=args.keyset_page))
    finally:
        client.projects.delete(id=project)
    print(f"harvest read of {args.n} annotated tasks, {os.cpu_count()} CPUs (shared machine: figures are noisy)")
    for name, r in ((f"reference: SDK pager, page numbers, {args.reference_page}/page", reference),
                    (f"keyset task_pages, {args.keyset_page}/page", keyset)):
        print(f"{name:48s} {r['requests']:4d} requests, {r['tasks']} tasks, {r['annotations']} annotations, "
              f"total {r['total_s']:.2f} s, slowest request {r['max_request_s']:.2f} s, first "
              f"{r['first_request_s']:.2f} s, last {r['last_request_s']:.2f} s")
    print(f"keyset vs reference: slowest request x{keyset['max_request_s'] / reference['max_request_s']:.2f}, "
          f"total x{keyset['total_s'] / reference['total_s']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "reference": reference, "keyset": keyset}, fh, indent=2)


if __name__ == "__main__":
    main()
