"""The harvest reads a project in keyset pages by task id: a project larger than one page is harvested whole, each
annotation once, also when annotators keep submitting while the pages are read; then the same against the real
Label Studio."""
import json
import uuid
from types import SimpleNamespace

import pytest

from alignline.annotation import Judgement, harvest, result_for
from alignline.annotation.harvest import task_pages
from alignline.storage import Catalog

DATASET = "comparisons-helpfulness"


def task_data(i: int) -> dict:
    return {"prompt_id": f"p{i}", "dialogue": [{"role": "user", "content": f"How do I rotate log {i}?"}],
            "response_a": f"Use logrotate for log {i}.", "response_b": f"Delete log {i} by hand.",
            "policy_a": "policy/1", "policy_b": "policy/1", "iteration": 1, "batch": 1, "is_safety": False}


def annotation(ann_id: int, user: int, cancelled: bool = False) -> dict:
    return {"id": ann_id, "completed_by": user, "was_cancelled": cancelled, "lead_time": 1.0, "created_at": "t",
            "result": [] if cancelled else result_for(Judgement("a", "better"))}


class FakeLabelStudio:
    """The slice of Label Studio's task API a harvest uses: the Data Manager's `tasks:id` filter and id ordering
    (what the real server does, checked in the integration test below); other filters are ignored, which only
    makes a harvest read more. `between_pages(n)` runs after the n-th page is answered: annotators at work."""

    def __init__(self, tasks: list[dict], between_pages=lambda n: None, honour_id_filter: bool = True):
        self.store, self.requests, self.between_pages = tasks, [], between_pages
        self.honour_id_filter = honour_id_filter
        self.projects = SimpleNamespace(get=lambda id: SimpleNamespace(id=id, created_at="2026-12-01T00:00:00"))
        self.users = SimpleNamespace(list=lambda: [SimpleNamespace(id=u, email=f"u{u}@x", username="") for u in (7, 8)])
        self.tasks = SimpleNamespace(list=self._list)

    def _list(self, *, project, fields, page, page_size, query):
        q = json.loads(query)
        self.requests.append({"page": page, "page_size": page_size, **q})
        after = [f["value"] for f in q["filters"]["items"] if f["filter"] == "filter:tasks:id"]
        rows = sorted((t for t in self.store if not (after and self.honour_id_filter) or t["id"] > after[0]),
                      key=lambda t: t["id"])
        page_rows = json.loads(json.dumps(rows[(page - 1) * page_size:page * page_size]))  # a snapshot, as over HTTP
        self.between_pages(len(self.requests))
        return SimpleNamespace(items=page_rows, response=SimpleNamespace(total=len(rows)))


def project(n: int) -> list[dict]:
    """n tasks with sparse ids (task ids are global across projects), one annotation each by user 7; task 3's is a
    skip, task 4 has a draft."""
    tasks = [{"id": 100 + 3 * i, "data": task_data(i), "drafts": [{"id": 1}] if i == 4 else [],
              "annotations": [annotation(1000 + i, 7, cancelled=i == 3)]} for i in range(n)]
    return tasks


def run(client, tmp_path, page_size=5, pages=None):
    return harvest(client, 1, "helpfulness", Catalog(tmp_path / "lake"), DATASET, tmp_path / "ledger.json",
                   tmp_path / "reports", page_size=page_size, on_page=lambda read, total: pages.append((read, total))
                   if pages is not None else None)


def test_a_project_of_many_pages_is_harvested_whole_and_once_while_annotators_submit(tmp_path):
    tasks = project(23)

    def annotators_at_work(n):
        if n == 2:  # after the second page: a label on a task already read, one on a task not yet read, a new task
            tasks[1]["annotations"].append(annotation(2001, 8))
            tasks[20]["annotations"].append(annotation(2002, 8))
            tasks.append({"id": 500, "data": task_data(99), "annotations": [annotation(2003, 7)]})

    client, pages = FakeLabelStudio(tasks, annotators_at_work), []
    first = run(client, tmp_path, pages=pages)
    # keyset pages: always page 1, each above the last id read, in id order; 23 + the new task = 24 tasks, 5 requests
    assert [r["page"] for r in client.requests] == [1] * 5 and {r["page_size"] for r in client.requests} == {5}
    ids_after = [next((f["value"] for f in r["filters"]["items"] if f["filter"] == "filter:tasks:id"), None)
                 for r in client.requests]
    assert ids_after == [None, 112, 127, 142, 157] and all(r["ordering"] == ["tasks:id"] for r in client.requests)
    assert pages == [(5, 23), (10, 23), (15, 23), (20, 23), (24, 23)]  # total: what matched at the first page
    # every annotation on the tasks from the third page on is read; the one on an already-read task waits
    assert first.new_annotations == 23 + 2 and first.new_comparisons == first.total_comparisons == 24
    assert first.counts == {"skipped": 1, "drafts": 1}

    second = run(client, tmp_path)
    assert second.new_annotations == 1 and second.new_comparisons == 1 and second.total_comparisons == 25
    since = [f for f in client.requests[-1]["filters"]["items"] if f["filter"] == "filter:tasks:updated_at"]
    assert since and since[0]["operator"] == "greater"  # the second harvest asks only for tasks updated since
    assert run(client, tmp_path).new_annotations == 0

    catalog = Catalog(tmp_path / "lake")
    published = catalog.read(DATASET).column("annotation_id").to_pylist()
    quarantined = catalog.read(f"{DATASET}-quarantine").column("record_id").to_pylist()
    stored = [a["id"] for t in tasks for a in t["annotations"]]
    assert sorted(published + [int(i) for i in quarantined]) == sorted(stored)  # all of them, each once
    assert quarantined == ["1003"]


def test_a_page_that_does_not_advance_is_an_error_not_an_endless_loop():
    client = FakeLabelStudio(project(12), honour_id_filter=False)
    with pytest.raises(RuntimeError, match="did not advance past task id 112"):
        list(task_pages(client, 1, page_size=5))
    assert len(client.requests) == 2


def test_a_project_of_exactly_one_page_and_an_empty_one_take_one_request_each():
    for n, requests in ((5, 2), (4, 1), (0, 1)):  # a full page asks once more (the next may be empty)
        client = FakeLabelStudio(project(n))
        assert sum(len(tasks) for tasks, _ in task_pages(client, 1, page_size=5)) == n
        assert len(client.requests) == requests


@pytest.mark.integration
def test_the_real_label_studio_pages_by_task_id(servers, tmp_path):
    from alignline.annotation import connect, ensure_preference_project, import_tasks
    from alignline.annotation.pairs import dialogue_html
    from alignline.flows.context import label_studio_token

    client = connect(servers.servers.url(servers.servers.label_studio_port), label_studio_token(servers.home))
    project_id = ensure_preference_project(client, "helpfulness", f"paging {uuid.uuid4().hex[:6]}", overlap_share=0)
    try:
        data = [{**task_data(i), "conversation": dialogue_html(task_data(i)["dialogue"])} for i in range(12)]
        assert import_tasks(client, project_id, data) == 12
        ids = sorted(t.id for t in client.tasks.list(project=project_id, fields="task_only", page_size=100))

        def annotate(task_ids):
            return {int(client.annotations.create(id=i, project=project_id, result=result_for(Judgement("b", "better")),
                                                  lead_time=1.0, was_cancelled=False).id) for i in task_ids}

        created, pages = annotate(ids[:10]), []
        catalog, ledger = Catalog(tmp_path / "lake"), tmp_path / "ledger.json"
        first = harvest(client, project_id, "helpfulness", catalog, DATASET, ledger, tmp_path / "reports",
                        page_size=5, on_page=lambda read, total: pages.append((read, total)))
        assert pages == [(5, 12), (10, 12), (12, 12)]  # three requests of at most five tasks, in id order
        assert first.new_annotations == first.total_comparisons == 10
        created |= annotate(ids[10:])
        second = harvest(client, project_id, "helpfulness", catalog, DATASET, ledger, tmp_path / "reports",
                         page_size=5)
        assert second.new_annotations == 2 and second.total_comparisons == 12
        published = catalog.read(DATASET).column("annotation_id").to_pylist()
        assert sorted(published) == sorted(created)  # whole, each once
    finally:
        client.projects.delete(id=project_id)
