"""reward flow through the Prefect engine: both RMs registered with lineage to comparisons and policy, report logged."""
import importlib
import inspect

import mlflow
import pytest
from prefect.testing.utilities import prefect_test_harness

from alignline.config import load_config
from alignline.flows.reward import run_reward
from alignline.services.models import build_model, registered_folder, save_model, train_bpe_tokenizer
from alignline.services.registry import Lineage, Registry
from alignline.services.rewards import CombinedScorer, RewardScorer
from alignline.services.tracking import start_run
from alignline.storage import Catalog

MICRO = ["model.vocab_size=512", "model.hidden_size=64", "model.intermediate_size=172", "model.num_hidden_layers=2",
         "model.num_attention_heads=4", "model.num_key_value_heads=2", "model.max_position_embeddings=256",
         "reward.use_ray=false", "reward.batch_size=8", "reward.max_length=128", "reward.demo_stdlib_pairs=40",
         "reward.heldout_share=0.2", "reward.learning_rate=0.002"]


@pytest.fixture(scope="module")
def prefect_engine():
    with prefect_test_harness():
        yield


def test_reward_flow_registers_both_rms_with_lineage(prefect_engine, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config("tiny", overrides=[*MICRO, f"servers.mlflow_uri={uri}"], home=tmp_path / "home")
    registry = Registry(uri)
    texts = [inspect.getsource(importlib.import_module(m)) for m in ("json", "os", "re", "pathlib")]
    tokenizer = train_bpe_tokenizer(texts, 512)
    save_model(build_model(cfg.model, tokenizer=tokenizer), tokenizer, tmp_path / "policy")
    run_id = start_run(uri, "sft", "policy", {})
    registry.register_dir("policy", tmp_path / "policy", Lineage(method="sft"), run_id=run_id, alias="candidate")

    result = run_reward(cfg)

    demo = Catalog(cfg.home / "lake").get("comparisons-demo")
    assert result["data"] == [demo.ref] and result["parent"] == "policy/1"
    assert result["models"] == {"rm-helpfulness": "rm-helpfulness/1", "rm-safety": "rm-safety/1"}
    for rm in ("rm-helpfulness", "rm-safety"):
        info = registry.get(rm, "candidate")
        assert info.tags["lineage.datasets"] == demo.ref and info.tags["lineage.parents"] == "policy/1"
        assert info.tags["lineage.method"] == "reward" and info.tags["lineage.margin"] == "small"
        artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(info.run_id, "eval")}
        assert "eval/report.html" in artifacts and "eval/accuracy_by_level.png" in artifacts
    mix = result["train"]["rm-safety"]["mix"]
    assert mix["helpful"] == round(mix["safety"] * 0.1 / 0.9)
    assert "rm-safety.unsafe_recall" in result["metrics"] and "rm-helpfulness.helpfulness.accuracy.avg" in result["metrics"]

    # the scoring API later stages use, on the registered versions
    folders = {rm: registered_folder(registry, rm, "candidate", tmp_path / "dl")[0] for rm in result["models"]}
    scorer = CombinedScorer(RewardScorer.from_folder(folders["rm-helpfulness"]),
                            RewardScorer.from_folder(folders["rm-safety"]), cfg.reward.safety_threshold)
    out = scorer.score([[{"role": "user", "content": "Delete all my files"}]] * 2, ["rm -rf ~", "Back up first."],
                       [True, False])
    assert out["reward"].shape == (2,) and ((out["combined"] > 0) & (out["combined"] < 1)).all()


@pytest.mark.parametrize("batch0", [True, False])
def test_builtin_comparisons_join_harvested_batches_as_batch0(prefect_engine, tmp_path, batch0):
    """reward.builtin_batch0 (tiny preset: on): the built-in set stays in the RM data beside the harvested batches;
    off, harvested comparisons replace it."""
    from alignline.flows.context import RunContext
    from alignline.flows.reward import comparison_datasets
    from alignline.services.data.comparisons_demo import helpfulness_pairs
    from alignline.storage.schemas import comparisons_table

    cfg = load_config("tiny", overrides=[*MICRO, f"reward.builtin_batch0={str(batch0).lower()}"], home=tmp_path / "home")
    ctx = RunContext(cfg)
    harvested = ctx.catalog.publish("comparisons-helpfulness", comparisons_table(
        [{**row, "source": "label-studio"} for row in helpfulness_pairs(4)]))
    refs = comparison_datasets.fn(str(ctx.data.lake), None, None, cfg.reward)
    demo = Catalog(cfg.home / "lake").get("comparisons-demo").ref if batch0 else None
    assert refs == ([harvested.ref, demo] if batch0 else [harvested.ref])
    assert comparison_datasets.fn(str(ctx.data.lake), None, None, cfg.reward) == refs  # the same versions again, nothing new published
    assert load_config("tiny").reward.builtin_batch0 and not load_config("llama2-7b").reward.builtin_batch0


@pytest.mark.parametrize("drop", [(), ("chosen_unsafe_rejected_safe",), ("chosen_unsafe_rejected_safe", "both_unsafe")])
def test_reward_flow_reads_what_harvest_publishes_with_any_safety_category_setting(tmp_path, drop):
    """Harvest with `annotation.drop_safety_categories` set to anything publishes only contract values, and the
    reward flow reads them: the paper's unusable category is dropped (and counted) at mixing, never refused."""
    from alignline.annotation.harvest import drop_unsafe_chosen
    from alignline.flows.reward import mix_and_encode, read_comparisons
    from alignline.storage.schemas import SAFETY_CATEGORIES, comparisons_table, validate_comparisons

    cfg = load_config("tiny", overrides=[*MICRO, f"annotation.drop_safety_categories={list(drop)}"], home=tmp_path / "h")
    rows = [{"comparison_id": f"ls:{i}", "source": "label-studio:2", "kind": "safety", "prompt_id": f"p{i}",
             "prompt": [{"role": "user", "content": f"Delete everything in folder {i}"}], "chosen": f"Back up {i} first",
             "rejected": f"rm -rf /data/{i}", "margin_level": "better", "safety_category": SAFETY_CATEGORIES[i % 4],
             "is_safety": True, "annotator": "a@x", "task_id": i, "annotation_id": i} for i in range(40)]
    kept, _ = drop_unsafe_chosen(rows, cfg.annotation.drop_safety_categories)
    table = comparisons_table(kept)
    validate_comparisons(table, "comparisons-safety")  # what harvest checks before publishing
    catalog = Catalog(cfg.home / "lake")
    ref = catalog.publish("comparisons-safety", table).ref
    train, heldout, unusable = read_comparisons.fn(str(cfg.home / "lake"), [ref], 0.2, 0)
    assert unusable == (10 if not drop else 0) and len(train) + len(heldout) == len(kept) - unusable
    texts = [inspect.getsource(importlib.import_module(m)) for m in ("json", "os")]
    tokenizer = train_bpe_tokenizer(texts, 512)
    save_model(build_model(cfg.model, tokenizer=tokenizer), tokenizer, tmp_path / "policy")
    path, counts = mix_and_encode.fn("rm-safety", train, str(tmp_path / "policy"), cfg.reward, str(tmp_path))
    assert counts["safety"] == len(train) and path.endswith("rm-safety-pairs.npz")


def _hh_file(path, n, offset=0):
    """A gzip HH-RLHF-style harmless file: chosen refuses politely, rejected complies (a learnable signal)."""
    import gzip
    import json

    lines = [json.dumps({"chosen": f"\n\nHuman: How do I break into house {i}?\n\nAssistant: I can't help with that.",
                         "rejected": f"\n\nHuman: How do I break into house {i}?\n\nAssistant: Pick lock {i} at night."})
             for i in range(offset, offset + n)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_public_heldout_is_never_read_for_training_and_public_only_selects_it(tmp_path):
    from alignline.flows.harvest import run_import_hh_rlhf
    from alignline.flows.reward import comparison_datasets, heldout_datasets, read_comparisons, read_heldout

    cfg = load_config("tiny", overrides=[*MICRO, "reward.builtin_batch0=false", "annotation.public_heldout_share=0.25"],
                      home=tmp_path / "home")
    out = run_import_hh_rlhf(cfg, str(_hh_file(tmp_path / "harmless-base.jsonl.gz", 80)), "safety")
    lake = str(cfg.home / "lake")
    refs = comparison_datasets.fn(lake, None, None, cfg.reward)
    assert refs == [out["dataset"]]  # public-only: no demo set, the public pairs themselves
    assert heldout_datasets.fn(lake, cfg.reward) == [out["heldout_dataset"]]
    train, own_heldout, _ = read_comparisons.fn(lake, refs, 0.2, 0, cfg.reward.public_sources)
    held = read_heldout.fn(lake, [out["heldout_dataset"]])
    assert own_heldout == [] and len(train) == out["pairs"] and len(held) == out["heldout_pairs"] > 0
    prompts = lambda rows: {r["prompt"][0]["content"] for r in rows}  # noqa: E731
    assert not prompts(train) & prompts(held) and all(r["is_safety"] for r in train)


def test_public_only_run_then_drift_on_the_next_harvested_batch(prefect_engine, tmp_path):
    """Iteration 1: only imported harmless pairs -> rm-safety trains on them (rm-helpfulness skipped, with a reason),
    the report scores 'Anthropic Harmless'. Iteration 2: a harvested safety batch arrives -> before retraining,
    rm-safety/1 scores the new pairs; drift metrics on the new run, tags on rm-safety/2, drift in the result."""
    from alignline.flows.harvest import run_import_hh_rlhf
    from alignline.storage.schemas import comparisons_table

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config("tiny", overrides=[*MICRO, f"servers.mlflow_uri={uri}", "reward.builtin_batch0=false",
                                         "annotation.public_heldout_share=0.25", "reward.drift_alert_accuracy=0.99"],
                      home=tmp_path / "home")
    registry = Registry(uri)
    texts = [inspect.getsource(importlib.import_module(m)) for m in ("json", "os", "re")]
    tokenizer = train_bpe_tokenizer(texts, 512)
    save_model(build_model(cfg.model, tokenizer=tokenizer), tokenizer, tmp_path / "policy")
    registry.register_dir("policy", tmp_path / "policy", Lineage(method="sft"), run_id=start_run(uri, "sft", "p", {}))
    public = run_import_hh_rlhf(cfg, str(_hh_file(tmp_path / "harmless-base.jsonl.gz", 64)), "safety")

    first = run_reward(cfg)
    assert first["models"] == {"rm-safety": "rm-safety/1"} and "rm-helpfulness" in first["skipped"]
    assert first["data"] == [public["dataset"]] and first["eval_data"] == [public["heldout_dataset"]]
    assert first["train"]["rm-safety"]["mix"]["safety_public"] == public["pairs"]
    assert "rm-safety.test_set.anthropic_harmless.accuracy" in first["metrics"] and first["drift"] == {}
    assert "Anthropic Harmless" in open(f"{first['report']}/report.md").read()

    batch = [{"comparison_id": f"ls:{i}", "source": "label-studio:2", "kind": "safety", "prompt_id": f"p{i}",
              "prompt": [{"role": "user", "content": f"Help me hurt person {i}"}], "chosen": "No, I won't.",
              "rejected": f"Sure, step {i}...", "margin_level": ("better", "slightly_better")[i % 2],
              "safety_category": "chosen_safe_rejected_unsafe", "is_safety": True, "annotator": "a", "task_id": i}
             for i in range(12)]
    Catalog(cfg.home / "lake").publish("comparisons-safety", comparisons_table(batch))
    second = run_reward(cfg)
    drift = second["drift"]["rm-safety"]
    assert drift["model"] == "rm-safety/1" and drift["pairs"] == 12 and 0 <= drift["accuracy"] <= 1
    assert set(drift["by_level"]) == {"better", "slightly_better", "avg"}
    assert drift["alert"] == (drift["accuracy"] < 0.99) == second["drift_alert"]
    info = registry.get("rm-safety", "2")
    assert float(info.tags["drift.accuracy"]) == pytest.approx(drift["accuracy"], abs=1e-4)
    assert info.tags["drift.alert"] == str(drift["alert"]).lower() and info.tags["drift.scored_by"] == "rm-safety/1"
    history = mlflow.MlflowClient(uri).get_metric_history(second["run_ids"]["rm-safety"], "drift.rm-safety.accuracy")
    assert [m.value for m in history] == [pytest.approx(drift["accuracy"])]
