import dataclasses

import numpy as np
import pytest
import torch

from alignline.config.training import PretrainConfig
from alignline.services.models import load_model
from alignline.services.training import (LaunchOptions, PretrainJob, cosine_lr_factor, latest_checkpoint,
                                         pack_documents, step_rows, token_loss_sum, train_pretrain)


def job_for(micro_config, tokenizer_dir, rows_path, out, **train):
    cfg = PretrainConfig(**{"max_steps": 8, "batch_size": 8, "seq_len": 64, "warmup_steps": 2, "learning_rate": 3e-3,
                            "checkpoint_every": 3, "log_every": 1, "use_ray": False, **train})
    return PretrainJob(micro_config, cfg, str(tokenizer_dir), str(rows_path), str(out / "model"), str(out / "ckpt"))


def held_out_loss(model, tokenizer, text: str) -> float:
    rows = pack_documents([tokenizer(text, add_special_tokens=False)["input_ids"]], 64,
                          tokenizer.bos_token_id, tokenizer.eos_token_id)
    ids = torch.from_numpy(rows.input_ids[:32])
    with torch.no_grad():
        loss, count = token_loss_sum(model(input_ids=ids).logits, ids)
    return float(loss) / count


def test_pretraining_lowers_the_loss_on_held_out_real_text(micro_config, tokenizer, tokenizer_dir, pretrain_rows,
                                                           real_texts, tmp_path):
    from alignline.services.models import build_model

    before = held_out_loss(build_model(micro_config, tokenizer=tokenizer, seed=0), tokenizer, real_texts[-1])
    result = train_pretrain(job_for(micro_config, tokenizer_dir, pretrain_rows, tmp_path, max_steps=40), LaunchOptions())
    after = held_out_loss(load_model(result["output_dir"]), tokenizer, real_texts[-1])
    assert before > 6.0  # ~ln(512): uniform over the vocabulary
    assert after < before - 0.8


class Killed(RuntimeError):
    pass


def test_killed_run_resumes_to_the_same_weights(micro_config, tokenizer_dir, pretrain_rows, tmp_path):
    full = train_pretrain(job_for(micro_config, tokenizer_dir, pretrain_rows, tmp_path / "full"), LaunchOptions())

    def kill_at_5(step: int) -> None:
        if step == 5:  # after the step-3 checkpoint, before the step-6 one: steps 4-5 are lost
            raise Killed

    job = job_for(micro_config, tokenizer_dir, pretrain_rows, tmp_path / "resumed")
    with pytest.raises(Killed):
        train_pretrain(dataclasses.replace(job, on_step=kill_at_5), LaunchOptions())
    assert latest_checkpoint(job.checkpoint_dir).name == "step_0000003"
    resumed = train_pretrain(job, LaunchOptions())
    assert resumed["resumed_from_step"] == 3 and resumed["step"] == full["step"] == 8
    a, b = load_model(full["output_dir"]).state_dict(), load_model(resumed["output_dir"]).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["loss"] == full["loss"]


def test_data_order_depends_only_on_seed_and_step():
    first = [step_rows(10, 4, s, seed=1) for s in range(5)]
    assert all(np.array_equal(a, step_rows(10, 4, s, seed=1)) for s, a in enumerate(first))
    assert sorted(np.concatenate(first[:2]).tolist() + first[2][:2].tolist()) == list(range(10))  # epoch 0 covered once
    assert not np.array_equal(step_rows(10, 4, 0, seed=2), first[0])


def test_a_short_run_trains_at_the_peak_rate_instead_of_ending_in_its_warmup():
    from alignline.services.training.optimization import capped_warmup

    assert capped_warmup(5, 150) == 5  # a long run keeps its configured warmup
    assert capped_warmup(5, 20) == 2  # at most a tenth of the run
    assert capped_warmup(5, 4) == 0
    factors = [cosine_lr_factor(s, capped_warmup(5, 4), 4, 0.1) for s in range(4)]
    assert factors[0] == pytest.approx(1.0) and factors[-1] < factors[0]


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    factors = [cosine_lr_factor(s, 10, 110, 0.1) for s in range(120)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.55) and factors[110] == pytest.approx(0.1) and factors[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
