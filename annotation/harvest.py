"""Incremental harvest: new Label Studio annotations -> a validated `comparisons` dataset version.

Llama 2 §3.2.1: binary comparisons with a 4-level margin, helpfulness and safety
kept apart; safety pairs whose chosen answer is unsafe (while the other is safe)
are not used. Drafts, skipped and cancelled annotations are counted, never used.

Exactly once. The ledger of harvested annotation ids (compact id ranges) is
stored in the published dataset version's metadata *and* in a ledger file under
the data dir. Publishing is the commit: a harvest killed before it publishes
leaves nothing behind; one killed after publishing but before the file is
written is caught up from the catalog on the next run. Each version is
cumulative (previous rows + new rows) with the previous version as its parent,
so `latest` is the whole preference set so far.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence


from alignline.storage import Catalog
from alignline.storage.schemas import ComparisonDataError, Kind, comparisons_table, parse_prompt, validate_comparisons

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

    @classmethod
    def load(cls, path: Path) -> "Ledger":
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(decode_ids(data.get("ids", "")), data.get("since"))

    def save(self, path: Path) -> None:
        """Atomic: a temp file renamed over the old one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"ids": encode_ids(self.ids), "since": self.since}, fh)
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


def _plain(obj: Any) -> Any:
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)


def _user_id(value: Any) -> int | None:
    if isinstance(value, dict):
        return value.get("id")
    return value


@dataclass
class Parsed:
    rows: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: set[int] = field(default_factory=set)   # every new annotation id, used or not
    counts: Counter = field(default_factory=Counter)  # skipped, cancelled, drafts, invalid:<reason>


def parse_tasks(tasks: Iterable[Any], kind: Kind, harvested: set[int], annotators: dict[int, str],
                source: str) -> Parsed:
    """New annotations of these tasks -> comparison rows; everything not used is counted with a reason."""
    out = Parsed()
    for task in tasks:
        task = _plain(task)
        data = task.get("data") or {}
        out.counts["drafts"] += len(task.get("drafts") or [])
        for ann in task.get("annotations") or []:
            ann = _plain(ann)
            ann_id = int(ann["id"])
            if ann_id in harvested:
                continue
            out.seen_ids.add(ann_id)
            result = ann.get("result") or []
            if ann.get("was_cancelled"):
                # Skip with nothing chosen vs. a started judgement abandoned: both unused, counted apart.
                out.counts["cancelled" if result else "skipped"] += 1
                continue
            try:
                j = parse_result(result, kind)
            except ResultError as e:
                out.counts[f"invalid: {e}"] += 1
                continue
            side, other = ("a", "b") if j.preferred == "a" else ("b", "a")
            chosen, rejected = data.get(f"response_{side}", ""), data.get(f"response_{other}", "")
            if chosen == rejected:
                out.counts["invalid: identical responses"] += 1
                continue
            try:
                prompt = parse_prompt(data.get("dialogue") or [], f"task {task['id']} dialogue")
            except ComparisonDataError:
                out.counts["invalid: dialogue does not end with a user turn"] += 1
                continue
            user = _user_id(ann.get("completed_by"))
            out.rows.append({
                "comparison_id": f"{source}:{ann_id}", "source": source, "kind": kind,
                "prompt_id": data.get("prompt_id"), "prompt": prompt,
                "chosen": chosen, "rejected": rejected, "margin_level": j.margin_level,
                "safety_category": j.safety_category, "is_safety": bool(data.get("is_safety", kind == "safety")),
                "annotator": annotators.get(user, str(user)), "lead_time_s": float(ann.get("lead_time") or 0.0),
                "task_id": int(task["id"]), "annotation_id": ann_id,
                "chosen_policy": data.get(f"policy_{side}"), "rejected_policy": data.get(f"policy_{other}"),
                "iteration": data.get("iteration"), "batch": data.get("batch"), "tasks_ref": data.get("tasks_ref"),
                "created_at": str(ann.get("created_at") or ""),
            })
    return out


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
    """Harvest the annotations of one project that no earlier harvest recorded; publish when there are new rows."""
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
    ledger = Ledger.load(ledger_path)
    previous = catalog.find(dataset)
    if previous is not None:  # catch up with a run that published and died before writing the file
        ledger.ids |= decode_ids(previous.metadata.get("harvested_ids", ""))
    annotators = {u.id: u.email or u.username for u in client.users.list()}
    tasks = client.tasks.list(project=project_id, fields="all", page_size=page_size,
                              query=json.dumps(q) if (q := updated_since_query(ledger.since, slack_s)) else None)
    source = f"label-studio:{project_id}"
    parsed = parse_tasks(tasks, kind, ledger.ids, annotators, source)
    old_rows = catalog.read(dataset, previous.version).to_pylist() if previous is not None else []
    rows, duplicates = one_label_per_annotator(old_rows + parsed.rows)
    rows, dropped = drop_unsafe_chosen(rows, drop_categories)
    counts = {**parsed.counts, "duplicates": duplicates, **{f"dropped: {k}": v for k, v in dropped.items()}}
    ledger.ids |= parsed.seen_ids
    ref, report = (previous.ref if previous else None), None
    if len(rows) > len(old_rows):
        table = comparisons_table(rows)
        validate_comparisons(table, dataset)
        check = check_comparisons(table, report_dir / f"{dataset}-{started.replace(':', '')}.json")
        if not check.success:
            raise ValidationFailed(f"{dataset}: " + "; ".join(check.failed), check.report)
        report = str(check.report)
        parents = sorted({r["tasks_ref"] for r in rows if r.get("tasks_ref")} | ({previous.ref} if previous else set()))
        parents = [p for p in parents if catalog.find(p) is not None]
        ref = catalog.publish(dataset, table, parents=parents, flow_run=flow_run, metadata={
            "harvested_ids": encode_ids(ledger.ids), "project_id": project_id, "kind": kind,
            "new_annotations": len(parsed.seen_ids), "counts": counts, "agreement": agreement(rows),
            "harvested_at": started}).ref
    if after_publish is not None:
        after_publish()  # tests: a harvest killed between publishing and writing the ledger file
    ledger.since = started
    ledger.save(ledger_path)
    return HarvestResult(ref, len(parsed.seen_ids), len(rows) - len(old_rows), len(rows), counts,
                         agreement(rows), report)

