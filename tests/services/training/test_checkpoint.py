"""Durable checkpoints: digest on write, weights_only loads, a torn newest checkpoint falls back to the previous."""
import numpy as np
import pytest
import torch

from alignline.services.training.checkpoint import (DIGEST_FILE, STATE_FILE, checkpoint_extra, latest_checkpoint,
                                                    load_checkpoint, save_checkpoint, verified)


def _parts(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return model, optimizer, scheduler


def test_resume_restores_weights_and_rng_through_a_weights_only_load(tmp_path):
    model, optimizer, scheduler = _parts(0)
    np.random.seed(7)
    save_checkpoint(tmp_path, 5, model, optimizer, scheduler, extra={"summary": {"loss": 1.5}})
    expected_draw = np.random.rand()
    other, other_opt, other_sched = _parts(1)
    np.random.seed(99)
    assert load_checkpoint(latest_checkpoint(tmp_path), other, other_opt, other_sched) == 5
    assert torch.equal(other.weight, model.weight) and np.random.rand() == expected_draw
    assert checkpoint_extra(latest_checkpoint(tmp_path)) == {"summary": {"loss": 1.5}}


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_digest"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    model, optimizer, scheduler = _parts(0)
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    newest = save_checkpoint(tmp_path, 2, model, optimizer, scheduler)
    state = newest / STATE_FILE
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "flip":
        blob = bytearray(state.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        state.write_bytes(bytes(blob))
    else:
        (newest / DIGEST_FILE).unlink()
    assert not verified(newest)
    assert latest_checkpoint(tmp_path).name == "step_0000001"


def test_saving_a_step_again_keeps_a_complete_copy_and_prunes_old_ones(tmp_path):
    model, optimizer, scheduler = _parts(0)
    for step in (1, 2, 3, 3):
        save_checkpoint(tmp_path, step, model, optimizer, scheduler, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000002", "step_0000003"]
    assert all(verified(p) for p in tmp_path.iterdir())
