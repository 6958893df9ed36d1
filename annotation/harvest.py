"""Incremental harvest: new Label Studio annotations -> a validated `comparisons` dataset version.

Llama 2 §3.2.1: binary comparisons with a 4-level margin, helpfulness and safety
kept apart; safety pairs whose chosen answer is unsafe (while the other is safe)
are not used. Drafts, skipped and cancelled annotations are counted, never used.

Exactly once, nothing lost. Every new annotation ends in one of two published
datasets: `comparisons-<kind>` (usable pairs) or `comparisons-<kind>-quarantine`
(skipped, cancelled, malformed, empty answers, duplicate labels, safety
categories the config drops: each with its annotation id and reason, the
parsed row when it got that far). The ledger of harvested annotation ids
(compact id ranges) records only ids that were published in one of them; it is
kept in the dataset versions' metadata (each version: the ids before it plus
the new ones it holds) *and* in a ledger file under the data dir, all keyed by
the project (id and creation time: a recreated Label Studio
database restarts ids). Publishing is the commit: a harvest killed before it
publishes leaves nothing behind; one killed after publishing but before the
file is written is caught up from the catalog on the next run. Each version is
cumulative with the previous version as its parent, so `latest` is the whole
set so far. A project is read in keyset pages by task id (`task_pages`), so no
request grows with the project.

`harvest_project` is every project's harvest (preferences here, human
evaluation and red teaming in their modules): each passes its row parser and
its cleaning step (one label per person and task, the paper's unsafe drop).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import pyarrow as pa

from alignline.storage import Catalog
from alignline.storage.faults import fault_point
from alignline.storage.schemas import (ComparisonDataError, Kind, comparisons_table, parse_prompt, quarantine_table,
                                       validate_comparisons)

from .labeling import ResultError, parse_result
from .validation import ValidationFailed, check_comparisons

T = TypeVar("T")


# -- the ledger: which annotation ids are already harvested ----------------------------------------
def encode_ids(ids: Iterable[int]) -> str:
    """Sorted ids as ranges, '1-500,502,510-900': annotation ids are mostly consecutive."""
    out, run = [], None
    for i in sorted(set(ids)):
        if run and i == run[1] + 1:
            run[1] = i
        else:
            if run:
                out.append(run)
            run = [i, i]
    if run:
        out.append(run)
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def decode_ids(text: str) -> set[int]:
    ids: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        a, _, b = part.partition("-")
        ids.update(range(int(a), int(b or a) + 1))
    return ids


@dataclass
class Ledger:
    ids: set[int] = field(default_factory=set)
    since: str | None = None       # start time of the last complete harvest (UTC ISO)
    project: str | None = None     # '<project id>@<project created_at>': ids are only unique within one

    @classmethod
    def load(cls, path: Path, project: str | None = None) -> "Ledger":
        """The ledger of `project`; an empty one when the file belongs to another project (a recreated database)."""
        if not path.is_file():
            return cls(project=project)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ids = decode_ids(data.get("ids", ""))
        except (OSError, ValueError, AttributeError, TypeError):
            # Torn or edited by hand: start from the ids the published dataset records (the caller adds them) and
            # read every task again; the quarantine is keyed by annotation id, so nothing is counted twice.
            return cls(project=project)
        if project is not None and data.get("project") not in (None, project):
            return cls(project=project)
        return cls(ids, data.get("since"), project or data.get("project"))

    def save(self, path: Path) -> None:
        """Atomic: a temp file, fsynced, renamed over the old one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"ids": encode_ids(self.ids), "since": self.since, "project": self.project}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


# -- reading a project, one page at a time -------------------------------------------------------
def updated_since_filter(since: str | None, slack_s: float) -> dict | None:
    """Data Manager filter: tasks updated after `since - slack` (an annotation or draft touches its task)."""
    if since is None:
        return None
    start = dt.datetime.fromisoformat(since) - dt.timedelta(seconds=slack_s)
    return {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
            "value": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def _task_id(task: Any) -> int | None:
    return _int_or_none(task.get("id") if isinstance(task, dict) else getattr(task, "id", None))


def task_pages(client, project_id: int, filters: Sequence[dict] = (), page_size: int = 100) -> Iterator[tuple[list, int | None]]:
    """(tasks, total) per request: the project's tasks matching the Data Manager `filters`, with annotations and
    drafts, in task-id order. Keyset paging: each request asks for the first `page_size` tasks above the last id
    read, so a request's time and a page's memory stay bounded however large the project is, and a task annotated
    while the harvest reads is neither skipped nor read twice (page numbers shift under both). `total`: the tasks
    that matched when the first page was read."""
    last, total = None, None
    while True:
        after = [{"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": last}]
        query = {"filters": {"conjunction": "and", "items": [*filters, *(after if last is not None else [])]},
                 "ordering": ["tasks:id"]}
        page = client.tasks.list(project=project_id, fields="all", page=1, page_size=page_size,
                                 query=json.dumps(query))
        tasks = list(page.items or [])
        total = getattr(page.response, "total", None) if total is None else total
        yield tasks, total
        ids = [i for i in map(_task_id, tasks) if i is not None]
        if len(tasks) < page_size:
            return
        if not ids or (last is not None and max(ids) <= last):  # the server ignored the id filter: never loop
            raise RuntimeError(f"Label Studio project {project_id}: a page of tasks did not advance past task id "
                               f"{last}; is the Data Manager filter on tasks:id supported by this server?")
        last = max(ids)


def _plain(obj: Any) -> dict:
    """An SDK object or a dict as a dict; TypeError for anything else (a malformed export)."""
    out = obj.model_dump() if hasattr(obj, "model_dump") else obj
    if not isinstance(out, dict):
        raise TypeError(f"expected an object, got {type(obj).__name__}")
    return out


def _user_id(value: Any) -> int | None:
    if isinstance(value, dict):
        return value.get("id")
    return value


@dataclass
class Parsed:
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # QUARANTINE_SCHEMA rows
    seen_ids: set[int] = field(default_factory=set)   # every new annotation id, used or not
    counts: Counter = field(default_factory=Counter)  # skipped, cancelled, drafts, invalid:<reason>

    def quarantine(self, source: str, ann_id: Any, task_id: Any, reason: str, record: Any) -> None:
        self.counts[reason] += 1
        self.quarantined.append({"source": source, "record_id": str(ann_id), "task_id": _int_or_none(task_id),
                                 "reason": reason, "record": json.dumps(record, default=str)[:20_000]})


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_tasks(tasks: Iterable[Any], kind: Kind, harvested: set[int], annotators: dict[int, str],
                source: str) -> Parsed:
    """New annotations of these tasks -> comparison rows; everything not used is quarantined with a reason."""
    return parse_annotations(tasks, harvested, source, lambda task, data, ann, ann_id: _comparison_row(
        task, data, ann, ann_id, kind, annotators, source))


RowMaker = Callable[[dict, dict, dict, int], dict[str, Any]]  # (task, task data, annotation, id) -> row | ResultError


def parse_annotations(tasks: Iterable[Any], harvested: set[int], source: str, to_row: RowMaker,
                      into: Parsed | None = None) -> Parsed:
    """Every annotation of these tasks not in `harvested` -> `to_row`'s row, or quarantined with the reason it (or a
    malformed task/annotation shape) gives; every project's harvest reads its export through this (page by page,
    adding to `into`)."""
    out = Parsed() if into is None else into
    for task in tasks:
        try:
            task = _plain(task)
        except (TypeError, ValueError):
            out.quarantine(source, None, None, "invalid: task is not an object", task)
            continue
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        annotations = task.get("annotations") if isinstance(task.get("annotations"), list) else []
        out.counts["drafts"] += len(task.get("drafts")) if isinstance(task.get("drafts"), list) else 0
        for ann in annotations:
            try:
                ann = _plain(ann)
            except (TypeError, ValueError):
                out.quarantine(source, None, task.get("id"), "invalid: annotation is not an object", ann)
                continue
            ann_id = _int_or_none(ann.get("id"))
            if ann_id is None or ann_id in harvested:
                continue
            out.seen_ids.add(ann_id)
            try:
                row = to_row(task, data, ann, ann_id)
            except ResultError as e:  # includes malformed results of any shape
                out.quarantine(source, ann_id, task.get("id"), str(e), ann)
                continue
            out.rows.append(row)
    return out


def parse_submitted(ann: dict, parse: Callable[[Any], T]) -> T:
    """`parse` of the annotation's result, or ResultError: 'skipped' / 'cancelled' for a skip (nothing chosen vs. a
    started judgement abandoned: both unused, told apart), 'invalid: ...' for what `parse` rejects or cannot read."""
    result = ann.get("result") or []
    if ann.get("was_cancelled"):
        raise ResultError("cancelled" if result else "skipped")
    try:
        return parse(result)
    except ResultError as e:
        raise ResultError(f"invalid: {e}") from None
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as e:
        raise ResultError(f"invalid: malformed result ({type(e).__name__})") from None


def _comparison_row(task: dict, data: dict, ann: dict, ann_id: int, kind: Kind, annotators: dict[int, str],
                    source: str) -> dict[str, Any]:
    """One annotation -> a comparison row, or ResultError('<kind of problem>: ...') saying why it is unusable."""
    j = parse_submitted(ann, lambda result: parse_result(result, kind))
    side, other = ("a", "b") if j.preferred == "a" else ("b", "a")
    chosen, rejected = data.get(f"response_{side}"), data.get(f"response_{other}")
    if not isinstance(chosen, str) or not isinstance(rejected, str) or not chosen.strip() or not rejected.strip():
        raise ResultError("invalid: empty answer")
    if chosen == rejected:
        raise ResultError("invalid: identical responses")
    try:
        prompt = parse_prompt(data.get("dialogue") or [], f"task {task.get('id')} dialogue")
    except (ComparisonDataError, TypeError, AttributeError, KeyError):
        raise ResultError("invalid: dialogue does not end with a user turn") from None
    user = _user_id(ann.get("completed_by"))
    return {
        "comparison_id": f"{source}:{ann_id}", "source": source, "kind": kind,
        "prompt_id": data.get("prompt_id"), "prompt": prompt,
        "chosen": chosen, "rejected": rejected, "margin_level": j.margin_level,
        "safety_category": j.safety_category, "is_safety": bool(data.get("is_safety", kind == "safety")),
        "annotator": annotators.get(user, str(user)), "lead_time_s": float(ann.get("lead_time") or 0.0),
        "task_id": int(task["id"]), "annotation_id": ann_id,
        "chosen_policy": data.get(f"policy_{side}"), "rejected_policy": data.get(f"policy_{other}"),
        "iteration": data.get("iteration"), "batch": data.get("batch"), "tasks_ref": data.get("tasks_ref"),
        "created_at": str(ann.get("created_at") or ""),
    }


# -- cleaning and agreement ----------------------------------------------------------------------
def one_label_per_annotator(rows: list[dict]) -> tuple[list[dict], int]:
    """Keep each annotator's first label of a task (lowest annotation id); returns (rows, duplicates dropped)."""
    kept, seen = [], set()
    for row in sorted(rows, key=lambda r: r["annotation_id"]):
        key = (row["source"], row["task_id"], row["annotator"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def drop_unsafe_chosen(rows: list[dict], categories: Sequence[str]) -> tuple[list[dict], Counter]:
    """Llama 2 §3.2.1: no pairs whose chosen answer is unsafe and the other safe; counts by category."""
    dropped = Counter(r["safety_category"] for r in rows if r["safety_category"] in categories)
    return [r for r in rows if r["safety_category"] not in categories], dropped


def agreement(rows: Sequence[dict]) -> dict[str, float | int]:
    """Pairwise agreement between annotators on tasks labelled by two or more (the overlap share)."""
    by_task: dict[tuple, list[dict]] = {}
    for r in rows:
        by_task.setdefault((r["source"], r["task_id"]), []).append(r)
    pairs = same_side = same_margin = 0
    overlapping = 0
    for labels in by_task.values():
        if len(labels) < 2:
            continue
        overlapping += 1
        for i in range(len(labels)):
            for k in range(i + 1, len(labels)):
                pairs += 1
                agree = labels[i]["chosen"] == labels[k]["chosen"]
                same_side += agree
                same_margin += agree and labels[i]["margin_level"] == labels[k]["margin_level"]
    return {"overlapping_tasks": overlapping, "annotator_pairs": pairs,
            "preference_agreement": same_side / pairs if pairs else float("nan"),
            "margin_agreement": same_margin / pairs if pairs else float("nan")}


# -- one harvest (every project's: preferences, human evaluation, red teaming) -------------------------------------
RowFn = Callable[[dict, dict, dict, int, dict[int, str], str], dict[str, Any]]  # + (annotators, source) -> row
Keep = Callable[[list[dict], list[dict], Parsed], list[dict]]  # (published rows, new rows, parsed) -> rows to publish
OnPage = Callable[[int, "int | None"], None]                    # (tasks read so far, tasks to read) -> None


@dataclass
class ProjectHarvest:
    dataset: str | None            # '<dataset>@version', None when nothing was ever harvested
    new_annotations: int           # annotation ids seen for the first time (used or not)
    old_rows: list[dict]           # the rows published before this harvest
    rows: list[dict]               # the rows published now (cumulative)
    counts: dict[str, int]         # skipped, cancelled, drafts, duplicates, invalid: ... (this harvest, non-zero)
    quarantined: int               # rows in `<dataset>-quarantine` (all harvests)


def harvest_project(client, project_id: int, catalog: Catalog, dataset: str, ledger_path: Path, to_row: RowFn,
                    keep: Keep, to_table: Callable[[list[dict]], pa.Table], *, slack_s: float = 300.0,
                    page_size: int = 100, flow_run: str | None = None, metadata: dict | None = None,
                    row_metadata: Callable[[list[dict]], dict] | None = None, on_page: OnPage | None = None,
                    after_publish: Callable[[], None] | None = None) -> ProjectHarvest:
    """The annotations of one project that no earlier harvest recorded -> `to_row`'s rows, which `keep` cleans
    (quarantining what it drops on the Parsed it is given) into cumulative `dataset` (its previous version as a
    parent; `to_table` builds and validates the table); everything unused to `<dataset>-quarantine` with a reason.
    Publishes only what is new. Tasks are read in pages of `page_size` (see `task_pages`); `on_page` hears progress.
    Exactly once: see the module doc; each version's `harvested_ids` names the ids harvested before it plus the new
    ones that version holds, so a kill between the two publishes never marks an unpublished id as harvested."""
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
    project = f"{project_id}@{getattr(client.projects.get(id=project_id), 'created_at', '')}"
    ledger = Ledger.load(ledger_path, project)
    previous, prev_quarantine = catalog.find(dataset), catalog.find(f"{dataset}-quarantine")
    for version in (previous, prev_quarantine):  # a run that died after publishing, before saving the file
        if version is not None and version.metadata.get("project") == project:
            ledger.ids |= decode_ids(version.metadata.get("harvested_ids", ""))
    annotators = {u.id: u.email or u.username for u in client.users.list()}
    source, parsed, read = f"label-studio:{project_id}", Parsed(), 0
    since = updated_since_filter(ledger.since, slack_s)
    for tasks, total in task_pages(client, project_id, [since] if since else [], page_size):
        parse_annotations(tasks, ledger.ids, source, lambda task, data, ann, ann_id: to_row(
            task, data, ann, ann_id, annotators, source), into=parsed)
        read += len(tasks)
        if on_page is not None:
            on_page(read, total)
    old_rows = catalog.read_ref(previous.ref).to_pylist() if previous is not None else []
    rows = keep(old_rows, parsed.rows, parsed)
    old_quarantine = catalog.read_ref(prev_quarantine.ref).to_pylist() if prev_quarantine is not None else []
    quarantine = {(q["source"], q["record_id"]): q for q in old_quarantine + parsed.quarantined}
    row_ids, old_ids = {r["annotation_id"] for r in rows}, {r["annotation_id"] for r in old_rows}
    quarantined_ids = {int(k[1]) for k in quarantine if k[1].isdigit()}
    before, counts = set(ledger.ids), {k: v for k, v in parsed.counts.items() if v}
    meta = {"project_id": project_id, "project": project, "new_annotations": len(parsed.seen_ids),
            "counts": dict(parsed.counts), "harvested_at": started, **(metadata or {})}
    if len(quarantine) > len(old_quarantine):
        catalog.publish(f"{dataset}-quarantine", quarantine_table(list(quarantine.values())),
                        parents=[prev_quarantine.ref] if prev_quarantine else [], flow_run=flow_run,
                        metadata={**meta, "harvested_ids": encode_ids(before | (parsed.seen_ids & quarantined_ids))})
    ref = previous.ref if previous else None
    if row_ids != old_ids:
        table = to_table(rows)
        parents = sorted({r["tasks_ref"] for r in rows if r.get("tasks_ref")} | ({previous.ref} if previous else set()))
        ref = catalog.publish(dataset, table, parents=[p for p in parents if catalog.find(p) is not None],
                              flow_run=flow_run, metadata={
                                  **meta, "harvested_ids": encode_ids(before | (parsed.seen_ids & row_ids)),
                                  **(row_metadata(rows) if row_metadata else {})}).ref
    if after_publish is not None:
        after_publish()  # tests: a harvest killed between publishing and writing the ledger file
    fault_point("harvest.published")  # a kill here: the rerun takes the ids from the published versions' metadata
    ledger.ids = before | (parsed.seen_ids & (row_ids | quarantined_ids))  # only what a dataset now holds
    ledger.since = started
    ledger.save(ledger_path)
    return ProjectHarvest(ref, len(parsed.seen_ids), old_rows, rows, counts, len(quarantine))


@dataclass
class HarvestResult:
    dataset: str | None            # 'comparisons-<kind>@version', None when nothing was ever harvested
    new_annotations: int           # annotation ids seen for the first time (used or not)
    new_comparisons: int           # rows added to the dataset
    total_comparisons: int
    counts: dict[str, int]         # skipped, cancelled, drafts, duplicates, invalid: ..., dropped: ...
    agreement: dict[str, float | int]
    report: str | None


def harvest(client, project_id: int, kind: Kind, catalog: Catalog, dataset: str, ledger_path: Path,
            report_dir: Path, drop_categories: Sequence[str] = ("chosen_unsafe_rejected_safe",),
            slack_s: float = 300.0, flow_run: str | None = None, page_size: int = 100,
            after_publish=None, on_page: OnPage | None = None) -> HarvestResult:
    """Harvest the annotations of one preference project that no earlier harvest recorded: usable pairs to
    `dataset`, the rest to `<dataset>-quarantine` with reasons; publish when there is anything new."""
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
    checked: dict[str, str] = {}

    def keep(old_rows: list[dict], new_rows: list[dict], parsed: Parsed) -> list[dict]:
        rows, _ = one_label_per_annotator(old_rows + new_rows)
        kept_ids = {r["annotation_id"] for r in rows}
        for r in old_rows + new_rows:
            if r["annotation_id"] not in kept_ids:
                parsed.quarantine(r["source"], r["annotation_id"], r["task_id"], "duplicate label (the annotator's "
                                  "first label of the task is kept)", r)
        rows, _ = drop_unsafe_chosen(rows, drop_categories)
        for r in (r for r in old_rows + new_rows if r["annotation_id"] in kept_ids):
            if r["safety_category"] in drop_categories:
                parsed.quarantine(r["source"], r["annotation_id"], r["task_id"], f"dropped: {r['safety_category']}", r)
        return rows

    def to_table(rows: list[dict]) -> pa.Table:
        table = comparisons_table(rows)
        validate_comparisons(table, dataset)
        check = check_comparisons(table, report_dir / f"{dataset}-{started.replace(':', '')}.json")
        if not check.success:
            raise ValidationFailed(f"{dataset}: " + "; ".join(check.failed), check.report)
        checked["report"] = str(check.report)
        return table

    out = harvest_project(client, project_id, catalog, dataset, ledger_path,
                          lambda task, data, ann, ann_id, annotators, source: _comparison_row(
                              task, data, ann, ann_id, kind, annotators, source),
                          keep, to_table, slack_s=slack_s, page_size=page_size, flow_run=flow_run,
                          metadata={"kind": kind}, row_metadata=lambda rows: {"agreement": agreement(rows)},
                          on_page=on_page, after_publish=after_publish)
    return HarvestResult(out.dataset, out.new_annotations, len(out.rows) - len(out.old_rows), len(out.rows),
                         out.counts, agreement(out.rows), checked.get("report"))
