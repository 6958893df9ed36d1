"""human-eval against the real servers: two tiny registered policies, collect -> three scripted raters -> harvest
(twice: the second adds nothing) -> results with AC2 and alpha, stored on the version and gated at promotion."""
from __future__ import annotations

import shutil
import uuid

import pytest

from alignline.config import load_config
from alignline.services.models import build_model, save_model
from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import tracked_run
from tests.conftest import TEST_HOME, TEST_SERVER_OVERRIDES, real_prefect
from tests.services.conftest import micro_config, real_texts, tokenizer  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture
def line(servers, tmp_path, tokenizer, micro_config):
    import torch

    (tmp_path / "secrets").mkdir(mode=0o700)
    shutil.copy(TEST_HOME / "secrets" / "label-studio.json", tmp_path / "secrets" / "label-studio.json")
    tag = uuid.uuid4().hex[:6]
    cfg = load_config(overrides=[*TEST_SERVER_OVERRIDES, f"annotation.policy_name=he-policy-{tag}",
                                 f"annotation.human_eval_project=he-{tag}", "evaluation.eval_prompts=6",
                                 "rlhf.max_new_tokens=8", "annotation.human_eval_rater_noise=0.1"], home=tmp_path)
    registry = Registry(cfg.servers.url(cfg.servers.mlflow_port))
    for seed in (0, 1):  # two different tiny policies: version 1 (champion) and 2
        torch.manual_seed(seed)
        save_model(build_model(micro_config, tokenizer=tokenizer), tokenizer, tmp_path / f"policy-{seed}")
        with tracked_run(registry.tracking_uri, "sft", "policy") as run_id:
            registry.register_dir(cfg.annotation.policy_name, tmp_path / f"policy-{seed}", Lineage(method="sft"),
                                  run_id=run_id)
    from alignline.services.tracking import as_reviewer

    with as_reviewer("ada"):  # servers.auth: only a reviewer account moves `champion` (tests/conftest.py)
        registry.client.set_registered_model_alias(cfg.annotation.policy_name, "champion", "1")
    with real_prefect(cfg):
        yield cfg, registry


def test_human_eval_collect_rate_harvest_twice_results(line):
    from alignline.annotation import connect, find_project, iter_tasks
    from alignline.flows.context import RunContext
    from alignline.flows.human_eval import run_human_eval
    from alignline.services.evaluation.human_eval import summary_lines
    from alignline.services.evaluation.policy_eval import promotion_gates

    cfg, registry = line
    name = cfg.annotation.policy_name
    first = run_human_eval(cfg, "2", "champion", bot=True)

    assert first["collect"]["imported"] == 6 and first["overlap"] == {"2": 0, "1": 0}
    assert all(b["submitted"] == 6 for b in first["bots"].values()) and len(first["bots"]) == 3
    assert first["harvest"]["new_ratings"] == first["harvest"]["total_ratings"] == 18
    result = first["results"]
    print("\n" + "\n".join(summary_lines(result)))
    assert result["simulated"] and result["items"] == 6 and result["raters"] == 3
    assert result["win"] + result["tie"] + result["loss"] == pytest.approx(1.0)
    assert result["win_rate_low"] <= result["win_rate"] <= result["win_rate_high"]
    assert -1.0 <= result["gwet_ac2"] <= 1.0 and result["paper_ac2_range"] == [0.37, 0.55]
    assert set(result["by_category"]) >= {"helpfulness", "single-turn"}

    ctx = RunContext(cfg)
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    tasks = list(iter_tasks(client, find_project(client, first["project"])))
    assert {t.data["candidate_side"] for t in tasks} <= {"a", "b"}
    assert all(t.data[f"policy_{t.data['candidate_side']}"] == f"{name}/2" for t in tasks)

    again = run_human_eval(cfg, "2", "champion", bot=True)  # idempotent: no new tasks, no new ratings
    assert again["collect"]["imported"] == 0 and all(b == {} for b in again["bots"].values())
    assert again["harvest"]["new_annotations"] == 0 and again["harvest"]["total_ratings"] == 18
    assert again["harvest"]["dataset"] == first["harvest"]["dataset"]
    only = run_human_eval(cfg, "2", "champion", harvest_only=True)
    assert only["harvest"]["new_ratings"] == 0 and "collect" not in only

    tags = registry.get(name, "2").tags
    assert tags["human_eval.baseline"] == f"{name}/1" and tags["human_eval.uri"].startswith("runs:/")
    assert float(tags["human_eval.gwet_ac2"]) == pytest.approx(result["gwet_ac2"])
    assert tags["human_eval.simulated"] == "True"
    assert first["harvest"]["dataset"].startswith("human-eval-2-vs-1@")

    # The gate reads a `human_eval` entry of the same pair from the report (evaluate's report gains it).
    report = {"policy": f"{name}/2", "baseline": f"{name}/1", "rm_win": {}, "oracle_win": {"win_rate": 1.0, "n": 6},
              "safety_violation_rate": 0.0, "human_eval": {**{k: result[k] for k in ("win_rate", "n", "simulated")},
                                                           "baseline": f"{name}/1"}}
    gate = {g.name: g for g in promotion_gates(report, None, 0.0, 1.0, min_human_win_rate=0.01)}
    assert gate["human_win_rate_vs_champion"].value == pytest.approx(result["win_rate"])
