"""Issue 8 end to end against the real servers: a tiny iteration, crash-and-resume, promotion gates,
and the next iteration sampling from the new champion."""
from __future__ import annotations

import dataclasses
import shutil
import uuid

import pytest

from alignline.config import load_config
from tests.conftest import TEST_SERVER_OVERRIDES, prefect_api_auth, real_prefect

pytestmark = pytest.mark.integration

# A very small line: every stage runs for real (Label Studio, MLflow, Prefect, Ray head attached),
# training loops in-process so the test spends its time on the hand-offs, not on Ray start-up.
TINY = [
    "corpus.max_documents=1500",
    "model.vocab_size=512", "model.hidden_size=64", "model.intermediate_size=172", "model.num_hidden_layers=2",
    "model.num_attention_heads=4", "model.num_key_value_heads=2", "model.max_position_embeddings=256",
    "pretrain.max_steps=10", "pretrain.batch_size=4", "pretrain.seq_len=128", "pretrain.use_ray=false",
    "pretrain.checkpoint_every=100",
    "sft.epochs=1", "sft.stdlib_examples=40", "sft.seq_len=128", "sft.batch_size=8", "sft.use_ray=false",
    "annotation.prompts_per_batch=6", "annotation.max_new_tokens=12", "annotation.bot_annotators=1",
    "annotation.wait_timeout_s=60", "annotation.poll_interval_s=1",
    "reward.use_ray=false", "reward.batch_size=8", "reward.max_length=96", "reward.demo_stdlib_pairs=20",
    "rlhf.use_ray=false", "rlhf.rs_samples=2", "rlhf.max_new_tokens=12", "rlhf.max_prompts=6",
    "rlhf.rollout_actors=0", "rlhf.heldout_prompts=2",
    # every RLHF stage on (issue 15): PPO against pi_0, Ghost Attention, context distillation
    "rlhf.ppo_enabled=true", "rlhf.ppo_iterations=2", "rlhf.ppo_batch_size=4", "rlhf.ppo_minibatch_size=2",
    "rlhf.ppo_eval_every=1", "rlhf.gatt_enabled=true", "rlhf.gatt_dialogues=4", "rlhf.gatt_turns=2",
    "rlhf.gatt_eval_dialogues=2", "rlhf.gatt_eval_turns=[2,4]", "rlhf.context_distillation_enabled=true",
    "rlhf.context_distillation_prompts=4",
    "sweep.eval_prompts=6", "sweep.max_new_tokens=8",
    "evaluation.eval_prompts=6",
]


@pytest.fixture(scope="module")
def line(servers, tmp_path_factory):
    """A data dir of its own on the session's servers: SFT policy registered, ready to iterate."""
    home = tmp_path_factory.mktemp("iteration-home")
    shutil.copytree(servers.home / "secrets", home / "secrets")
    tag = uuid.uuid4().hex[:6]
    cfg = load_config(overrides=[*TEST_SERVER_OVERRIDES, *TINY, f"annotation.helpfulness_project='it-{tag} helpfulness'",
                                 f"annotation.safety_project='it-{tag} safety'"], home=home)
    from alignline.flows.corpus import run_corpus
    from alignline.flows.pretrain import run_pretrain
    from alignline.flows.sft import run_sft

    with real_prefect(cfg):
        run_corpus(cfg)
        run_pretrain(cfg)
        run_sft(cfg)
    return cfg


def _tasks(cfg):
    from alignline.annotation import connect, iter_tasks
    from alignline.annotation.projects import find_project
    from alignline.flows.context import RunContext

    ctx = RunContext(cfg)
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    out = []
    for title in (cfg.annotation.helpfulness_project, cfg.annotation.safety_project):
        pid = find_project(client, title)
        out += list(iter_tasks(client, pid)) if pid else []
    return out


def test_iteration_resumes_after_a_crash_in_reward_training(line, prefect_server, monkeypatch):
    import alignline.flows.iteration as iteration_flow
    from alignline.flows.context import RunContext
    from alignline.flows.iteration import iteration_ledger, run_iterate

    def killed(*args, **kwargs):
        raise RuntimeError("killed during reward-model training")

    with monkeypatch.context() as m:
        m.setattr(iteration_flow, "run_reward", killed)
        with pytest.raises(Exception, match="killed during reward-model training"):
            run_iterate(line, iteration=1, bot=True)
    data = RunContext(line).data
    ledger = iteration_ledger(data, 1)
    assert [s for s in ("collect", "annotate", "wait", "harvest") if ledger.done(s)] == ["collect", "annotate", "wait", "harvest"]
    assert not ledger.done("reward")
    tasks_before = {t.id: t.total_annotations for t in _tasks(line)}
    harvested = ledger.result("harvest")
    assert tasks_before and all(n >= 1 for n in tasks_before.values())

    result = run_iterate(line, iteration=1, bot=True)  # resume: continues at reward

    tasks_after = {t.id: t.total_annotations for t in _tasks(line)}
    assert tasks_after == tasks_before  # no task imported twice, no annotation added or lost
    assert iteration_ledger(data, 1).result("harvest") == harvested
    assert iteration_ledger(data, 1).complete
    assert result["candidate"].startswith("policy/") and result["baseline"].startswith("policy/")
    registry = RunContext(line).registry
    info = registry.resolve(result["candidate"])
    report = registry.load_report("policy", info.version)
    assert report["policy"] == info.ref and report["baseline"] == result["baseline"]
    assert {g["name"] for g in report["gates"]} >= {"win_rate_vs_champion", "safety_violation_rate"}
    assert "any_refusal" in report["false_refusal"]
    assert info.tags["eval.card"].startswith("runs:/")
    # parents: the policy this stage started from, then the two reward models it was tuned against
    rlhf = iteration_ledger(data, 1).result("rlhf")
    parents = info.tags["lineage.parents"].split(",")
    assert parents[1:] == list(rlhf["reward_models"])
    assert parents[0] in {rlhf["parent"], *(s["model"] for s in rlhf["stages"].values())} - {info.ref}


def test_iteration_runs_every_rlhf_stage_with_lineage(line, prefect_server):
    """Issue 15.1: RS, then PPO against the SFT model pi_0, GAtt and context distillation, each registered as a
    policy version whose parent is the stage before, with the stage's figures in the iteration ledger."""
    from alignline.flows.context import RunContext
    from alignline.flows.iteration import iteration_ledger

    registry = RunContext(line).registry
    rlhf = iteration_ledger(RunContext(line).data, 1).result("rlhf")
    stages = rlhf["stages"]
    assert list(stages) == ["rejection_sampling", "ppo", "gatt", "context_distillation"]
    sft = [m for m in registry.lineage("policy", registry.resolve(rlhf["parent"]).version)[0]
           if m.tags.get("lineage.method") == "sft"]
    assert rlhf["ppo_reference"] == sft[0].ref  # KL against pi_0, not the iteration's start (which may differ)
    previous = rlhf["parent"]
    for method, result in stages.items():
        if result["model"] != previous:  # distillation registers nothing when no answer got safer
            tags = registry.resolve(result["model"]).tags
            assert tags["lineage.method"] == method
            assert tags["lineage.parents"].split(",") == [previous, *rlhf["reward_models"]]
            assert rlhf["prompts"] in tags["lineage.datasets"].split(",")
        previous = result["model"]
    assert rlhf["model"] == previous
    curve = stages["rejection_sampling"]["best_of_k"]
    assert [p["k"] for p in curve] == [1, 2] and curve[1]["max"] >= curve[0]["max"]
    assert set(stages["gatt"]["adherence"]) == {"with", "without"}
    assert all(set(row) == {"2", "4"} and all(0 <= v <= 1 for v in row.values())
               for row in stages["gatt"]["adherence"].values())
    cd = stages["context_distillation"]
    assert cd["by_category"]["destructive_action"]["prompts"] == 4
    assert cd["cd_kept"] == cd["by_category"]["destructive_action"]["kept"]


def test_safety_sweep_trains_a_variant_per_share_and_plots_the_judges(line, prefect_server):
    """Issue 15.3 (Llama 2 Figs. 15, 33): SFT variants with 0% and 100% of the safety demonstrations, judged by the
    latest RMs; a safety RM trained on the share's safety comparisons; metrics per share on one MLflow run."""
    from alignline.flows.context import RunContext
    from alignline.flows.iteration import run_iterate
    from alignline.flows.sweep import run_sweep

    run_iterate(line, iteration=1, bot=True)  # the judges and safety comparisons (a no-op when the test above ran)
    out = run_sweep(line, shares=(0.0, 1.0))
    none, full = out["points"]
    assert (none["share"], full["share"]) == (0.0, 1.0)
    assert none["safety_rows"] == 0 < full["safety_rows"] and none["helpful_rows"] == full["helpful_rows"] > 0
    assert none["model_dir"] != full["model_dir"]
    assert all(p["mean_helpfulness"] is not None and p["mean_safety"] is not None for p in out["points"])
    assert [j.split("/")[0] for j in out["judges"]] == ["rm-helpfulness", "rm-safety"]
    assert none["safety_rm_accuracy"] is None and 0 <= full["safety_rm_accuracy"] <= 1 and full["safety_rm_pairs"] > 0
    client = RunContext(line).registry.client
    history = client.get_metric_history(out["run_id"], "sweep.safety_rm_mean")
    assert sorted(m.step for m in history) == [0, 100]
    assert "safety-sweep.png" in {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(out["run_id"], "sweep")}


def test_promotion_gates_refuse_then_override_is_recorded(line, prefect_server):
    from alignline.flows.context import RunContext
    from alignline.flows.promote import PromotionRefused, run_promote

    registry = RunContext(line).registry
    candidate = registry.get("policy", "candidate").version
    strict = dataclasses.replace(line, evaluation=dataclasses.replace(line.evaluation, min_win_rate=1.01))
    with pytest.raises(PromotionRefused, match="fails its promotion gates: win_rate_vs_champion"):
        run_promote(strict, "policy", candidate, reviewer="grace", reason="looks good")
    out = run_promote(strict, "policy", candidate, reviewer="grace", reason="ship it for the demo", override=True)
    assert out["override"] is True
    tags = registry.get("policy", "champion").tags
    assert registry.get("policy", "champion").version == candidate
    assert tags["promotion.reviewer"] == "grace" and tags["promotion.override"] == "True"
    assert registry.promotion_history("policy")[-1]["reason"] == "ship it for the demo"


def test_next_iteration_samples_from_the_new_champion(line, prefect_server):
    from alignline.flows.collect import run_collect
    from alignline.flows.context import RunContext

    champion = RunContext(line).registry.get("policy", "champion").ref
    run_collect(line, iteration=2, batch=2)
    second = [t for t in _tasks(line) if t.data.get("iteration") == 2]
    assert second and all(t.data["policy_a"] == champion and t.data["policy_b"] == champion for t in second)


def test_iteration_runs_are_recorded_by_the_real_prefect_server(line, prefect_server):
    """Engineers watch iterations in the Prefect UI: the flow runs must land on the server, not an ephemeral API."""
    import requests

    api = f"{line.servers.url(line.servers.prefect_port)}/api/flow_runs/filter"
    key = prefect_api_auth(prefect_server)  # servers.auth: the Prefect API refuses anonymous calls
    runs = requests.post(api, json={"flow_runs": {"name": {"like_": ""}}, "limit": 200}, timeout=10, auth=key).json()
    flows = requests.post(f"{line.servers.url(line.servers.prefect_port)}/api/flows/filter", json={}, timeout=10,
                          auth=key).json()
    names = {f["id"]: f["name"] for f in flows}
    ran = {names.get(r["flow_id"]) for r in runs if r["state"]["type"] == "COMPLETED"}
    assert {"iteration", "collect", "harvest", "reward", "rlhf", "evaluate"} <= ran
