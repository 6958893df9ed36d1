"""evaluate through the Prefect engine (MLflow on a sqlite file): held-out check, suites, intervals, stored report."""
import importlib
import inspect

import pyarrow as pa
import pytest
from prefect.testing.utilities import prefect_test_harness

from alignline.config import load_config
from alignline.flows.evaluate import run_evaluate
from alignline.services.data import default_eval_prompts_table
from alignline.services.evaluation.heldout import EvalOverlapError
from alignline.services.models import build_model, save_model, train_bpe_tokenizer
from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import tracked_run
from alignline.storage import Catalog

FIXTURES = "tests/fixtures/suites"
MICRO = ["model.vocab_size=512", "model.hidden_size=64", "model.intermediate_size=172", "model.num_hidden_layers=2",
         "model.num_attention_heads=4", "model.num_key_value_heads=2", "model.max_position_embeddings=256",
         "evaluation.eval_prompts=6", "rlhf.max_new_tokens=4", "evaluation.max_suite_items=3",
         "evaluation.gate_on_lower_bound=true", "evaluation.suite_gates=['borderline.false_refusal_rate<=1.0']"]


@pytest.fixture(scope="module")
def prefect_engine():
    with prefect_test_harness():
        yield


def _register(registry, folder, datasets, uri):
    with tracked_run(uri, "sft", "policy") as run_id:
        return registry.register_dir("policy", folder, Lineage(datasets=tuple(datasets), method="sft"), run_id=run_id)


def test_evaluate_checks_held_out_runs_suites_and_refuses_a_leak(prefect_engine, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config("tiny", overrides=[*MICRO, f"servers.mlflow_uri={uri}"], home=tmp_path / "home")
    texts = [inspect.getsource(importlib.import_module(m)) for m in ("json", "os", "re")]
    tokenizer = train_bpe_tokenizer(texts, 512)
    save_model(build_model(cfg.model, tokenizer=tokenizer), tokenizer, tmp_path / "policy")
    catalog, registry = Catalog(cfg.home / "lake"), Registry(uri)
    clean = catalog.publish("sft", pa.table({"id": ["a"], "source": ["t"], "messages": [[
        {"role": "user", "content": "What is a list?"}, {"role": "assistant", "content": "A sequence."}]]})).ref
    _register(registry, tmp_path / "policy", [clean], uri)

    result = run_evaluate(cfg, policy="1", suites=[f"truthfulqa={FIXTURES}/mc_task.json"])

    assert result["eval_set"].startswith("prompts-eval-default@") and result["overlap"] == 0
    low, high = result["win_rate_95ci"]
    assert low <= result["win_rate"] <= high and result["n"] == 6
    report = registry.load_report("policy", "1")
    description = registry.client.get_model_version("policy", "1").description  # what the MLflow UI shows
    assert "Evaluated against `policy/1` on `prompts-eval-default@" in description and "| gate |" in description
    assert report["held_out"]["eval_prompts"] == default_eval_prompts_table().num_rows
    assert set(report["suites"]) == {"borderline", "mc_task"}
    assert {"mc1", "mc2"} <= set(report["suites"]["mc_task"]["metrics"])
    assert report["suites"]["borderline"]["counts"]["items"] == 3
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["borderline.false_refusal_rate"]["passed"]
    assert "lower end of the 95% Wilson interval" in gates["win_rate_vs_champion"]["rule"]

    leaked = default_eval_prompts_table().column("messages").to_pylist()[0]
    question = next(m for m in leaked if m["role"] == "user")["content"]
    dirty = catalog.publish("sft", pa.table({"id": ["b"], "source": ["t"], "messages": [[
        {"role": "user", "content": question}, {"role": "assistant", "content": "An answer."}]]})).ref
    _register(registry, tmp_path / "policy", [dirty], uri)
    with pytest.raises(EvalOverlapError, match=f"evaluation prompts of prompts-eval-default@.*{question[:20]}"):
        run_evaluate(cfg, policy="2")


def test_a_human_evaluation_of_the_same_pair_survives_re_evaluation():
    from alignline.flows.evaluate import human_eval_from_tags

    tags = {"human_eval.baseline": "policy/1", "human_eval.win_rate": "0.62", "human_eval.n": "40",
            "human_eval.simulated": "True", "human_eval.uri": "runs:/x/human_eval.json", "lineage.method": "sft"}
    kept = human_eval_from_tags(tags, "policy/1")
    assert kept["win_rate"] == 0.62 and kept["n"] == 40.0 and kept["simulated"] is True and "method" not in kept
    assert human_eval_from_tags(tags, "policy/2") is None  # another pair's verdict does not carry over
