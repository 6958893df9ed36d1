"""The reward-model recipe (Llama 2 §3.2.2): loss, data mix, warmup, the model's pooling, learning and resume."""
import math
import os

import numpy as np
import pytest
import torch

from alignline.config.reward import RewardConfig
from alignline.services.data import default_sft_table, table_dialogues
from alignline.services.models import (build_model, load_reward_model, reward_model_from_policy, save_model,
                                       save_reward_model)
from alignline.services.rewards import RewardScorer, pad_batch
from alignline.services.evaluation import evaluate_reward_models
from alignline.services.training import (LaunchOptions, RewardJob, encode_pairs, margin_ranking_loss, mix_helpfulness,
                                         mix_safety, reward_warmup_steps, split_heldout, total_reward_steps,
                                         train_reward, write_pairs)

LEVELS = ("significantly_better", "better", "slightly_better", "negligibly_better")
UNHELPFUL = ("I don't know.", "No idea, sorry.", "Look it up yourself.", "That is not something I can answer.")


def test_margin_loss_hand_computed_and_plain_when_margins_are_zero():
    r_c, r_r = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0])
    # -log sigmoid(2 - 1 - 1) = ln 2; -log sigmoid(0.5 - 1 - 0) = ln(1 + e^0.5)
    expected = (math.log(2) + math.log(1 + math.exp(0.5))) / 2
    assert margin_ranking_loss(r_c, r_r, torch.tensor([1.0, 0.0])).item() == pytest.approx(expected, rel=1e-6)
    plain = -torch.nn.functional.logsigmoid(r_c - r_r).mean()  # InstructGPT's binary ranking loss
    assert margin_ranking_loss(r_c, r_r, torch.zeros(2)).item() == pytest.approx(plain.item())
    assert margin_ranking_loss(r_c, r_r, 0.0).item() == pytest.approx(plain.item())
    # a larger margin asks for a larger gap: same scores, higher loss
    assert margin_ranking_loss(r_c, r_r, torch.tensor([3.0, 3.0])) > margin_ranking_loss(r_c, r_r, torch.ones(2))


def _rows(n, is_safety, source):
    return [{"prompt": [{"role": "user", "content": f"{source}-{is_safety}-{i}"}], "chosen": "a", "rejected": "b",
             "margin_level": "better", "safety_category": "both_safe" if is_safety else None, "is_safety": is_safety,
             "source": source} for i in range(n)]


def test_data_mix_proportions_follow_the_paper():
    data = _rows(100, False, "annotators") + _rows(60, True, "annotators") + _rows(50, False, "hh-rlhf") + _rows(40, True, "hh-rlhf:harmless.jsonl")
    helpful, counts = mix_helpfulness(data, extra_share=1.0, public_sources=("hh-rlhf",), seed=0)
    # all 100 own helpfulness pairs + an equal amount sampled from the 150 safety and public pairs
    assert counts["helpful"] == 100 and counts["extra_safety"] + counts["extra_public"] == 100 == len(helpful) - 100
    assert 20 < counts["extra_safety"] < 60  # uniform over the pool (60 of 150 are own safety)
    safety, counts = mix_safety(data, helpful_share=0.1, seed=0)
    # all 100 safety pairs (own + Anthropic-harmless-like), helpfulness pairs making 10% of the whole: 90/10
    assert counts == {"safety": 100, "safety_public": 40, "helpful": 11, "total": 111} and len(safety) == 111
    assert sum(r["is_safety"] for r in safety) / len(safety) == pytest.approx(0.9, abs=0.01)
    assert mix_safety(data, 0.1, seed=0)[0] == safety  # deterministic for a seed
    small, counts = mix_safety(_rows(90, True, "annotators") + _rows(3, False, "annotators"), 0.1)
    assert counts["helpful"] == 3  # capped by what exists


def test_public_only_data_feeds_the_safety_rm_and_leaves_helpfulness_empty():
    """Only imported harmless pairs (is_safety, the importer's --kind safety): the safety RM trains on all of them;
    the helpfulness RM has nothing of its kind (the flow skips it with a message)."""
    public = _rows(30, True, "hh-rlhf:harmless-base.jsonl.gz")
    rows, counts = mix_safety(public, 0.1, seed=0)
    assert rows == public and counts == {"safety": 30, "safety_public": 30, "helpful": 0, "total": 30}
    assert mix_helpfulness(public, 1.0, ("hh-rlhf",))[0] == []
    helpful, counts = mix_helpfulness(public + _rows(10, False, "hh-rlhf:helpful-base.jsonl"), 1.0, ("hh-rlhf",))
    # public helpfulness pairs are the base, plus an equal amount of the (public) safety pairs
    assert counts == {"helpful": 10, "extra_safety": 0, "extra_public": 10, "total": 20}


def test_public_pairs_all_train_their_heldout_part_is_a_dataset_of_its_own():
    rows = _rows(100, False, "label-studio:2") + _rows(100, True, "hh-rlhf:harmless.jsonl")
    train, held = split_heldout(rows, 0.3, seed=0, public_sources=("hh-rlhf",))
    assert held and all(r["source"] == "label-studio:2" for r in held)
    assert sum(r["source"].startswith("hh-rlhf") for r in train) == 100


def test_warmup_is_three_percent_but_at_least_five_steps():
    cfg = RewardConfig()
    assert reward_warmup_steps(1000, cfg) == 30 and reward_warmup_steps(40, cfg) == 5 and reward_warmup_steps(3, cfg) == 3
    assert total_reward_steps(100, RewardConfig(batch_size=16, epochs=1)) == 6


def test_heldout_split_keeps_prompts_together_and_is_stable():
    rows = _rows(200, False, "x") + _rows(200, False, "x")  # every prompt twice
    train, held = split_heldout(rows, 0.2, seed=0)
    assert 40 < len(held) < 120 and len(held) % 2 == 0
    assert not {r["prompt"][0]["content"] for r in train} & {r["prompt"][0]["content"] for r in held}
    _, held_more = split_heldout(rows + _rows(10, True, "y"), 0.2, seed=0)
    assert all(r in held_more for r in held)


def test_reward_model_reads_the_last_real_token_left_or_right_padded(micro_config, tokenizer, tmp_path):
    policy = build_model(micro_config, tokenizer=tokenizer, seed=0)
    rm = reward_model_from_policy(policy, seed=0).eval()
    torch.testing.assert_close(rm.backbone.embed_tokens.weight, policy.model.embed_tokens.weight)
    seqs = [[1, 40, 41, 42, 43, 44], [1, 50, 51]]
    alone = torch.stack([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs]).squeeze(-1)
    for side in ("left", "right"):
        ids, mask = pad_batch(seqs, tokenizer.pad_token_id, side)  # (2, 6)
        torch.testing.assert_close(rm(ids, mask), alone, rtol=1e-4, atol=1e-5)
    save_reward_model(rm, tokenizer, tmp_path / "rm")
    loaded, tok = load_reward_model(tmp_path / "rm")
    ids, mask = pad_batch(seqs, tok.pad_token_id, "left")
    torch.testing.assert_close(loaded(ids, mask), alone, rtol=1e-4, atol=1e-5)


# -- training ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy_dir(micro_config, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    save_model(build_model(micro_config, tokenizer=tokenizer, seed=0), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def clear_signal_pairs():
    """Stdlib questions: chosen = the reference answer, rejected = a short non-answer (a clear, learnable signal)."""
    rows = []
    for i, d in enumerate(table_dialogues(default_sft_table(stdlib_limit=240))[:240]):
        rows.append({"prompt": d[:-1], "chosen": d[-1]["content"][:300], "rejected": UNHELPFUL[i % len(UNHELPFUL)],
                     "margin_level": LEVELS[i % 4], "safety_category": None, "is_safety": False, "source": "test"})
    return split_heldout(rows, 0.25, seed=0)


def reward_job(policy_dir, tokenizer, rows, out, **train) -> RewardJob:
    cfg = RewardConfig(**{"batch_size": 16, "max_length": 128, "learning_rate": 2e-3, "checkpoint_every": 100,
                          "log_every": 1, "use_ray": False, **train})
    out.mkdir(parents=True, exist_ok=True)
    pairs = write_pairs(encode_pairs(tokenizer, rows, cfg.margin, cfg.max_length), out / "pairs.npz")
    return RewardJob(cfg, str(policy_dir), pairs, str(out / "rm"), str(out / "ckpt"))


def test_tiny_rm_learns_a_clear_signal_and_beats_chance_on_heldout(policy_dir, tokenizer, clear_signal_pairs, tmp_path):
    train, held = clear_signal_pairs
    result = train_reward(reward_job(policy_dir, tokenizer, train, tmp_path), LaunchOptions())
    assert result["step"] == result["max_steps"] == len(train) // 16
    assert np.mean(result["losses"][-3:]) < np.mean(result["losses"][:3])
    scorer = RewardScorer.from_folder(result["output_dir"], max_length=128)
    ev = evaluate_reward_models({"rm": scorer}, held, safety_rm=None)
    assert len(held) >= 40 and ev.tables["rm"]["overall"] >= 0.9  # chance is 0.5
    probs = scorer.score([held[0]["prompt"]], [held[0]["chosen"]])
    assert probs.shape == (1,) and 0 < probs.item() < 1


def test_resume_continues_exactly(policy_dir, tokenizer, clear_signal_pairs, tmp_path):
    """A run killed after step 3 and restarted reads the same batches and ends with the same weights."""
    train = clear_signal_pairs[0][:96]  # 6 steps
    full = train_reward(reward_job(policy_dir, tokenizer, train, tmp_path / "full"), LaunchOptions())

    class Killed(Exception):
        pass

    def kill_at(step):
        if step == 3:
            raise Killed

    job = reward_job(policy_dir, tokenizer, train, tmp_path / "killed", checkpoint_every=3)
    with pytest.raises(Killed):
        train_reward(RewardJob(**{**job.__dict__, "on_step": kill_at}), LaunchOptions())
    resumed = train_reward(job, LaunchOptions())
    assert resumed["resumed_from_step"] == 3 and resumed["step"] == full["step"] == 6
    assert resumed["losses"] == pytest.approx(full["losses"][3:], rel=1e-5)
    a, _ = load_reward_model(full["output_dir"])
    b, _ = load_reward_model(resumed["output_dir"])
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_freeze_for_trains_what_reward_trainable_names(policy_dir):
    from alignline.services.models.factory import load_model
    from alignline.services.training.reward import freeze_for

    def fresh():
        return reward_model_from_policy(load_model(policy_dir), seed=0)

    hidden = fresh().config.hidden_size
    assert freeze_for(fresh(), "head") == hidden  # (1, H) head only
    rm = fresh()
    top = freeze_for(rm, "top_layers", 1)
    block = sum(p.numel() for p in rm.backbone.layers[-1].parameters())
    assert top == block + hidden + hidden  # last block + final RMSNorm gain + head
    assert not any(p.requires_grad for p in rm.backbone.layers[0].parameters())
    assert freeze_for(fresh(), "all") == sum(p.numel() for p in fresh().parameters())
    with pytest.raises(ValueError, match="trainable_top_layers = 9"):
        freeze_for(fresh(), "top_layers", 9)


def test_head_mode_trains_the_head_on_cached_trunk_states_only(policy_dir, tokenizer, clear_signal_pairs, tmp_path):
    """reward.trainable='head': the trunk is read once (cached beside the checkpoints), the head learns, and the
    saved RM's trunk is the policy's."""
    from alignline.services.models.factory import load_model

    train, held = clear_signal_pairs
    job = reward_job(policy_dir, tokenizer, train, tmp_path, trainable="head", head_epochs=8, head_learning_rate=1e-2)
    result = train_reward(job, LaunchOptions())
    assert result["trainable"] == "head" and result["step"] == 8 * len(train) // 16
    assert len(list((tmp_path / "ckpt").glob("trunk-features-*.pt"))) == 1
    assert np.mean(result["losses"][-5:]) < np.mean(result["losses"][:5])
    rm, _ = load_reward_model(result["output_dir"])
    policy = load_model(policy_dir)
    for name, w in policy.model.state_dict().items():
        torch.testing.assert_close(rm.backbone.state_dict()[name], w, msg=name)
    ev = evaluate_reward_models({"rm": RewardScorer(rm, tokenizer, max_length=128)}, held, safety_rm=None)
    assert ev.tables["rm"]["overall"] > 0.7  # chance is 0.5


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore")
def test_ray_train_two_workers_match_one_process(policy_dir, tokenizer, clear_signal_pairs, tmp_path, ray_cluster):
    """The one Ray Train test of this recipe (~45 s): 2 gloo workers, same losses as in-process, metrics in MLflow."""
    import mlflow
    import ray

    from alignline.services.tracking import start_run

    train = clear_signal_pairs[0][:64]  # 4 steps
    local = train_reward(reward_job(policy_dir, tokenizer, train, tmp_path / "local"), LaunchOptions())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = start_run(uri, "reward-test", "ray", {"workers": 2})
    job = reward_job(policy_dir, tokenizer, train, tmp_path / "ray")
    job = RewardJob(**{**job.__dict__, "tracking_uri": uri, "run_id": run_id})
    result = train_reward(job, LaunchOptions(use_ray=True, num_workers=2, cpus_per_worker=0.5,
                                             storage_path=str(tmp_path / "ray_results"), name="rm-test"))
    assert result["losses"] == pytest.approx(local["losses"], rel=1e-4)
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, "accuracy")
    assert len(history) == local["step"]
