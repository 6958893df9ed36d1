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
kept in the dataset version's metadata *and* in a ledger file under the data
dir, both keyed by the project (id and creation time: a recreated Label Studio
database restarts ids). Publishing is the commit: a harvest killed before it
publishes leaves nothing behind; one killed after publishing but before the
file is written is caught up from the catalog on the next run. Each version is
cumulative with the previous version as its parent, so `latest` is the whole
set so far.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence


from alignline.storage import Catalog
from alignline.storage.faults import fault_point
from alignline.storage.schemas import (ComparisonDataError, Kind, comparisons_table, parse_prompt, quarantine_table,
                                       validate_comparisons)

from .labeling import ResultError, parse_result
from .validation import ValidationFailed, check_comparisons


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


# -- reading new annotations ---------------------------------------------------------------------
def updated_since_query(since: str | None, slack_s: float) -> dict | None:
    """Data Manager query: tasks updated after `since - slack` (an annotation or draft touches its task)."""
    if since is None:
        return None
    start = dt.datetime.fromisoformat(since) - dt.timedelta(seconds=slack_s)
    return {"filters": {"conjunction": "and", "items": [
        {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
         "value": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}]}}


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


def parse_annotations(tasks: Iterable[Any], harvested: set[int], source: str, to_row: RowMaker) -> Parsed:
    """Every annotation of these tasks not in `harvested` -> `to_row`'s row, or quarantined with the reason it (or a
    malformed task/annotation shape) gives; every project's harvest reads its export through this."""
    out = Parsed()
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


def _comparison_row(task: dict, data: dict, ann: dict, ann_id: int, kind: Kind, annotators: dict[int, str],
                    source: str) -> dict[str, Any]:
    """One annotation -> a comparison row, or ResultError('<kind of problem>: ...') saying why it is unusable."""
    result = ann.get("result") or []
    if ann.get("was_cancelled"):
        # Skip with nothing chosen vs. a started judgement abandoned: both unused, told apart.
        raise ResultError("cancelled" if result else "skipped")
    try:
        j = parse_result(result, kind)
    except ResultError as e:
        raise ResultError(f"invalid: {e}") from None
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as e:
        raise ResultError(f"invalid: malformed result ({type(e).__name__})") from None
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


# -- one harvest ---------------------------------------------------------------------------------
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
            slack_s: float = 300.0, flow_run: str | None = None, page_size: int = 500,
            after_publish=None) -> HarvestResult:
    """Harvest the annotations of one project that no earlier harvest recorded: usable pairs to `dataset`, the rest
    to `<dataset>-quarantine` with reasons; publish when there is anything new."""
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
    project = f"{project_id}@{getattr(client.projects.get(id=project_id), 'created_at', '')}"
    ledger = Ledger.load(ledger_path, project)
    previous, prev_quarantine = catalog.find(dataset), catalog.find(f"{dataset}-quarantine")
    if previous is not None and previous.metadata.get("project") == project:
        ledger.ids |= decode_ids(previous.metadata.get("harvested_ids", ""))  # a run that died before saving the file
    annotators = {u.id: u.email or u.username for u in client.users.list()}
    tasks = client.tasks.list(project=project_id, fields="all", page_size=page_size,
                              query=json.dumps(q) if (q := updated_since_query(ledger.since, slack_s)) else None)
    source = f"label-studio:{project_id}"
    parsed = parse_tasks(tasks, kind, ledger.ids, annotators, source)
    old_rows = catalog.read_ref(previous.ref).to_pylist() if previous is not None else []
    rows, _ = one_label_per_annotator(old_rows + parsed.rows)
    kept_ids = {r["annotation_id"] for r in rows}
    for r in old_rows + parsed.rows:
        if r["annotation_id"] not in kept_ids:
            parsed.quarantine(r["source"], r["annotation_id"], r["task_id"], "duplicate label (the annotator's first "
                              "label of the task is kept)", r)
    rows, _ = drop_unsafe_chosen(rows, drop_categories)
    for r in (r for r in old_rows + parsed.rows if r["annotation_id"] in kept_ids):
        if r["safety_category"] in drop_categories:
            parsed.quarantine(r["source"], r["annotation_id"], r["task_id"], f"dropped: {r['safety_category']}", r)
    counts = dict(parsed.counts)
    old_quarantine = catalog.read_ref(prev_quarantine.ref).to_pylist() if prev_quarantine is not None else []
    quarantine = {(q["source"], q["record_id"]): q for q in old_quarantine + parsed.quarantined}
    published_ids = {r["annotation_id"] for r in rows} | {int(k[1]) for k in quarantine if k[1].isdigit()}
    ledger.ids |= parsed.seen_ids & published_ids  # only what a dataset now holds
    ref, report = (previous.ref if previous else None), None
    meta = {"harvested_ids": encode_ids(ledger.ids), "project_id": project_id, "project": project, "kind": kind,
            "new_annotations": len(parsed.seen_ids), "counts": counts, "harvested_at": started}
    if len(quarantine) > len(old_quarantine):
        catalog.publish(f"{dataset}-quarantine", quarantine_table(list(quarantine.values())),
                        parents=[prev_quarantine.ref] if prev_quarantine else [], flow_run=flow_run, metadata=meta)
    if {r["annotation_id"] for r in rows} != {r["annotation_id"] for r in old_rows}:
        table = comparisons_table(rows)
        validate_comparisons(table, dataset)
        check = check_comparisons(table, report_dir / f"{dataset}-{started.replace(':', '')}.json")
        if not check.success:
            raise ValidationFailed(f"{dataset}: " + "; ".join(check.failed), check.report)
        report = str(check.report)
        parents = sorted({r["tasks_ref"] for r in rows if r.get("tasks_ref")} | ({previous.ref} if previous else set()))
        parents = [p for p in parents if catalog.find(p) is not None]
        ref = catalog.publish(dataset, table, parents=parents, flow_run=flow_run,
                              metadata={**meta, "agreement": agreement(rows)}).ref
    if after_publish is not None:
        after_publish()  # tests: a harvest killed between publishing and writing the ledger file
    fault_point("harvest.published")  # a kill here: the rerun takes the ids from the published version's metadata
    ledger.since = started
    ledger.save(ledger_path)
    return HarvestResult(ref, len(parsed.seen_ids), len(rows) - len(old_rows), len(rows),
                         {k: v for k, v in counts.items() if v}, agreement(rows), report)
