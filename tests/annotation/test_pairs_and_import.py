"""Prompt batches, pair tasks, and the import's retries against a Label Studio that fails (no servers)."""
import pytest

from alignline.annotation import Side, import_tasks, pair_tasks, select_prompts, task_key
from alignline.storage.schemas import PromptDataError, prompt_table

PROMPTS = prompt_table([(f"h{i}", "t", False, [{"role": "user", "content": f"q{i}"}], f"r{i}") for i in range(20)]
                       + [(f"s{i}", "t", True, [{"role": "user", "content": f"delete {i}"}], "no") for i in range(8)])


def test_batches_are_deterministic_mixed_and_differ():
    one = select_prompts(PROMPTS, 8, 0.25, iteration=1, batch=1)
    assert one == select_prompts(PROMPTS, 8, 0.25, iteration=1, batch=1)
    assert sum(p["is_safety"] for p in one) == 2 and len(one) == 8
    assert one != select_prompts(PROMPTS, 8, 0.25, iteration=1, batch=2)


def test_pair_tasks_carry_metadata_and_balance_sides():
    chosen = select_prompts(PROMPTS, 20, 0.0, 1, 1)
    cold, hot = Side("policy/3", {"temperature": 0.7}), Side("policy/3", {"temperature": 1.2})
    tasks = pair_tasks(chosen, cold, hot, [f"c{i}" for i in range(20)], [f"h{i}" for i in range(20)], 1, 1)
    cold_left = sum('0.7' in t["sampling_a"] for t in tasks)
    assert 4 <= cold_left <= 16  # neither temperature always on the left
    t = tasks[0]
    assert {t["response_a"][0], t["response_b"][0]} == {"c", "h"} and t["policy_a"] == "policy/3"
    assert (t["iteration"], t["batch"], t["kind"]) == (1, 1, "helpfulness") and t["reference"].startswith("r")
    with pytest.raises(ValueError):
        pair_tasks(chosen, cold, hot, ["x"], ["y"], 1, 1)


class FlakyProjects:
    """A Label Studio that drops the first `fail` import calls; the second one lands but its reply is lost."""

    def __init__(self, fail: int, lose_reply: bool = False):
        self.fail, self.lose_reply, self.store = fail, lose_reply, []

    def import_tasks(self, id, request, return_task_ids):
        if self.fail:
            self.fail -= 1
            if self.lose_reply:
                self.store += [r["data"] for r in request]
            raise ConnectionError("connection refused")
        self.store += [r["data"] for r in request]


class FakeClient:
    def __init__(self, projects):
        self.projects = projects
        self.tasks = self

    def list(self, project, fields, page_size):
        return [type("T", (), {"data": d}) for d in self.projects.store]


def test_import_retries_then_clear_error_and_rerun_has_no_duplicates():
    tasks = [{"text": str(i)} for i in range(7)]
    dead = FakeClient(FlakyProjects(fail=99))
    with pytest.raises(RuntimeError, match="after 3 tries"):
        import_tasks(dead, 1, tasks, batch_size=3, retries=3, backoff_s=0)
    flaky = FakeClient(FlakyProjects(fail=1, lose_reply=True))
    assert import_tasks(flaky, 1, tasks, batch_size=3, retries=3, backoff_s=0) == 7
    assert import_tasks(flaky, 1, tasks + [{"text": "new"}], batch_size=3, retries=3, backoff_s=0) == 1
    keys = [d["task_key"] for d in flaky.projects.store]
    assert len(keys) == len(set(keys)) == 8 and task_key({"text": "0"}) in keys
