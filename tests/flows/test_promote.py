"""A long evaluation report (50 kB) stored by evaluate's path is what promote reads back, whole (issue 12)."""
import json
import uuid

import pyarrow as pa
import pytest

from alignline.flows.context import RunContext
from alignline.flows.promote import PromotionRefused, run_promote
from alignline.services.registry import Lineage
from alignline.services.tracking import tracked_run

pytestmark = pytest.mark.integration


def _report(policy: str, baseline: str, win: float, rows: int, eval_set: str) -> dict:
    return {"policy": policy, "baseline": baseline, "rm_win": {"win": win, "tie": 0.0, "loss": 1 - win, "n": rows,
                                                               "win_rate": win},
            "oracle_win": {"win_rate": win}, "oracle_prompts": 0, "safety_violation_rate": 0.0,
            "held_out": {"eval_set": eval_set, "eval_prompts": 1, "lineage_datasets_checked": 0, "overlap": 0},
            "answers": [{"prompt": f"question {i}", "answer": "a" * 90} for i in range(rows)]}


def _eval_set(cfg) -> str:
    """An evaluation set in the data dir's catalog: promote checks it against the lineage again."""
    return RunContext(cfg).catalog.publish("prompts-eval-promote-tests", pa.table({
        "id": ["e"], "source": ["t"], "messages": [[{"role": "user", "content": "What is a frozenset?"},
                                                    {"role": "assistant", "content": "An immutable set."}]]})).ref


def test_a_50kb_report_round_trips_through_evaluate_and_promote(servers, tmp_path):
    registry = RunContext(servers).registry
    name = f"policy-{uuid.uuid4().hex[:6]}"
    eval_set = _eval_set(servers)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with tracked_run(registry.tracking_uri, "promote-tests", "register") as run_id:
        for _ in range(2):
            registry.register_dir(name, folder, Lineage(method="sft"), run_id)
        registry.store_report(name, "1", _report(f"{name}/1", f"{name}/1", 0.5, 10, eval_set), run_id)
    # nothing to compare the first version with: a self-comparison never passes, so a reviewer overrides
    run_promote(servers, name, "1", reviewer="ada", reason="first", override=True)
    long_report = _report(f"{name}/2", f"{name}/1", 0.75, 500, eval_set)
    assert len(json.dumps(long_report)) > 50_000
    with tracked_run(registry.tracking_uri, "evaluation", "evaluate") as run_id:
        registry.store_report(name, "2", long_report, run_id)
    out = run_promote(servers, name, "2", reviewer="grace", reason="wins 75%")
    assert out["promoted"] == f"{name}/2" and "win_rate_vs_champion=pass" in out["gates"]
    assert registry.load_report(name, "2") == long_report
    history = registry.promotion_history(name)
    rows = registry.client.get_registered_model(name).description.splitlines()
    assert rows[4].split(" | ")[1:4] == ["2", "1", "grace"] and rows[5].split(" | ")[1:4] == ["1", "-", "ada"]
    assert [h["version"] for h in history] == ["1", "2"]
    assert history[1]["gate_policy"]["version"] == 0 and history[1]["gate_policy"]["set_by"] == "from config"
    assert {g["name"]: g["value"] for g in history[1]["gates"]}["win_rate_vs_champion"] == 0.75


def test_promote_refuses_a_version_without_a_report(servers, tmp_path):
    registry = RunContext(servers).registry
    name = f"policy-{uuid.uuid4().hex[:6]}"
    (tmp_path / "config.json").write_text("{}")
    with tracked_run(registry.tracking_uri, "promote-tests", "register") as run_id:
        registry.register_dir(name, tmp_path, Lineage(method="sft"), run_id)
    with pytest.raises(PromotionRefused, match="has no evaluation report"):
        run_promote(servers, name, "1", reviewer="ada", reason="x")
