"""The scripted annotator: a real Label Studio user whose preferences come from a deterministic oracle.

It signs up like a person (`accounts.sign_up`: the organization's invite link; the admin token reads the
link, as an admin inviting a person would), logs in like a browser and reads its
own API token; then it submits annotations to `POST /api/tasks/<id>/annotations/`,
the endpoint the labeling editor calls. The oracle stands in for a person on the
built-in data (Llama 2 §3.2.1 judgements, made mechanical, with the judges of
`services.evaluation.judges` passed in):
* helpfulness: the response closer to the reference answer wins;
* safety: a response that hands over a destructive command is unsafe; the
  safe one wins, ties go to closeness to the (cautious) reference;
* margin level from the score gap (thresholds are config fields).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence


from alignline.storage.schemas import MARGIN_LEVELS, Kind

from .labeling import Judgement, result_for
from .projects import connect


def margin_level(gap: float, thresholds: Sequence[float]) -> str:
    """Score gap -> one of the four levels; thresholds for significantly / better / slightly, descending."""
    for level, bound in zip(MARGIN_LEVELS, thresholds):
        if gap >= bound:
            return level
    return MARGIN_LEVELS[-1]


@dataclass(frozen=True)
class Oracle:
    """Judgements from two judges passed in (`services.evaluation.judges`: closeness to the reference, is unsafe)."""
    closeness: Callable[[str, str], float]
    is_unsafe: Callable[[str], bool]
    thresholds: tuple[float, ...] = (0.3, 0.15, 0.05)

    def judge(self, data: dict[str, Any], kind: Kind) -> Judgement:
        a, b, ref = data.get("response_a", ""), data.get("response_b", ""), data.get("reference", "")
        score_a, score_b = self.closeness(a, ref), self.closeness(b, ref)
        if kind == "safety":
            unsafe_a, unsafe_b = self.is_unsafe(a), self.is_unsafe(b)
            # Safety first: a safe answer beats an unsafe one by a full point.
            score_a, score_b = score_a + (not unsafe_a), score_b + (not unsafe_b)
        preferred = "a" if score_a >= score_b else "b"
        level = margin_level(abs(score_a - score_b), self.thresholds)
        category = None
        if kind == "safety":
            chosen_unsafe, other_unsafe = (unsafe_a, unsafe_b) if preferred == "a" else (unsafe_b, unsafe_a)
            category = ("both_unsafe" if chosen_unsafe and other_unsafe else
                        "chosen_unsafe_rejected_safe" if chosen_unsafe else
                        "chosen_safe_rejected_unsafe" if other_unsafe else "both_safe")
        return Judgement(preferred, level, category)


# -- the bot's Label Studio account ---------------------------------------------------------------
def bot_works(url: str, token: str, email: str) -> bool:
    try:
        return connect(url, token).users.whoami().email == email
    except Exception:  # a stale secret: the data dir's Label Studio was reset
        return False


# -- annotating ---------------------------------------------------------------------------------
def pending_tasks(client, project_id: int, user_id: int, page_size: int = 500) -> list[Any]:
    """Tasks this user has not annotated that still need an annotation (fewer than the task's overlap)."""
    todo = []
    for task in client.tasks.list(project=project_id, fields="all", page_size=page_size):
        annotations = task.annotations or []
        done_by = {a.get("completed_by") if isinstance(a, dict) else a.completed_by for a in annotations}
        done_by = {u.get("id") if isinstance(u, dict) else u for u in done_by}
        submitted = [a for a in annotations if not (a.get("was_cancelled") if isinstance(a, dict) else a.was_cancelled)]
        if user_id not in done_by and len(submitted) < (task.overlap or 1):
            todo.append(task)
    return todo


def annotate_project(client, project_id: int, kind: Kind, oracle: Oracle, limit: int = 0) -> dict[str, int]:
    """Judge and submit every pending task of the project (at most `limit` when > 0); returns counts."""
    me = client.users.whoami()
    counts: Counter = Counter()
    for task in pending_tasks(client, project_id, me.id)[:limit or None]:
        t0 = time.perf_counter()
        judgement = oracle.judge(task.data or {}, kind)
        client.annotations.create(id=task.id, project=project_id, result=result_for(judgement),
                                  lead_time=round(time.perf_counter() - t0, 4), was_cancelled=False)
        counts["submitted"] += 1
        counts[judgement.margin_level] += 1
        if judgement.safety_category:
            counts[judgement.safety_category] += 1
    return dict(counts)
