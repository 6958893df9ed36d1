"""Issue 8 end to end against the real servers: a tiny iteration, crash-and-resume, promotion gates,
and the next iteration sampling from the new champion."""
from __future__ import annotations

import dataclasses
import shutil
import uuid

import pytest

from alignline.config import load_config
from tests.conftest import TEST_SERVER_OVERRIDES, real_prefect

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
    runs = requests.post(api, json={"flow_runs": {"name": {"like_": ""}}, "limit": 200}, timeout=10).json()
    flows = requests.post(f"{line.servers.url(line.servers.prefect_port)}/api/flows/filter", json={}, timeout=10).json()
    names = {f["id"]: f["name"] for f in flows}
    ran = {names.get(r["flow_id"]) for r in runs if r["state"]["type"] == "COMPLETED"}
    assert {"iteration", "collect", "harvest", "reward", "rlhf", "evaluate"} <= ran
