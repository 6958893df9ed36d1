"""FSDP2 on CPU (gloo): the SFT recipe sharded over 2 ranks computes the run one process computes, writes
sharded DCP checkpoints, and a run killed after a checkpoint resumes to the same weights as one never killed.

Ranks are plain processes with a gloo process group (what Ray Train sets up for each worker), so these run
without servers; tests/services/training/test_multinode.py runs the same recipe under Ray Train."""
import os
from pathlib import Path

import gloo_ranks
from gloo_ranks import KilledAt, kill_after
import pytest
import torch

from alignline.config.training import SFTConfig
from alignline.services.data import default_sft_table, table_dialogues
from alignline.services.models import load_model
from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, sft_loop, train_sft, write_sft_rows
from alignline.services.training.launch import WorkerContext
from alignline.services.training.sharding import is_sharded_checkpoint, verified


@pytest.fixture(scope="module")
def sft_rows(tokenizer, tmp_path_factory):
    rows = encode_sft_rows(tokenizer, table_dialogues(default_sft_table(stdlib_limit=30)), seq_len=128)
    return write_sft_rows(rows, tmp_path_factory.mktemp("sft") / "rows.npz")


def sft_job(base_dir, rows, out: Path, **train) -> SFTJob:
    cfg = SFTConfig(**{"batch_size": 4, "seq_len": 128, "epochs": 1, "learning_rate": 3e-3, "warmup_steps": 1,
                       "checkpoint_every": 3, "log_every": 1, "use_ray": False, **train})
    return SFTJob(cfg, str(base_dir), rows, str(out / "policy"), str(out / "ckpt"))




def _rank(rank: int, world: int, port: int, plan: list[tuple[SFTJob, int]], out) -> None:
    """Runs every (job, kill_at) of the plan in turn on this rank: one process start for all the runs."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    results = []
    for job, kill_at in plan:
        if kill_at:
            job = SFTJob(**{**job.__dict__, "on_step": kill_after(kill_at)})
        try:
            summary = sft_loop(job, WorkerContext(rank=rank, world_size=world, sharding="fsdp"))
            results.append({k: summary[k] for k in ("losses", "step", "resumed_from_step")})
        except KilledAt:
            results.append("killed")
        except Exception as exc:  # handed to the test
            results.append(f"error: {exc}")
    out.put((rank, results))
    torch.distributed.destroy_process_group()


def run_fsdp(plan: list[tuple[SFTJob, int]], world: int = 2) -> list:
    """Each (job, kill_at) on `world` local gloo ranks with FSDP, in order; rank 0's summaries ('killed' when
    the hook stopped it, 'error: ...' when it raised)."""
    return gloo_ranks.run_ranks(_rank, plan, world)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_model(folder).state_dict()


def test_fsdp_two_ranks_match_one_process_and_resume_exactly(base_dir, sft_rows, tmp_path):
    one = train_sft(sft_job(base_dir, sft_rows, tmp_path / "one"), LaunchOptions())
    train_sft(sft_job(base_dir, sft_rows, tmp_path / "whole-ckpt", checkpoint_every=2), LaunchOptions())
    resumed_job = sft_job(base_dir, sft_rows, tmp_path / "resumed")
    whole, killed, resumed, refused = run_fsdp([
        (sft_job(base_dir, sft_rows, tmp_path / "fsdp"), 0),
        (resumed_job, 4),            # killed after step 4; the last checkpoint is step 3
        (resumed_job, 0),            # the rerun resumes from it
        (sft_job(base_dir, sft_rows, tmp_path / "whole-ckpt"), 0),  # a whole (unsharded) checkpoint to resume
    ])
    # Same global batch, gradients averaged over ranks: the run one process computes (up to float reduction order).
    assert whole["step"] == one["step"] >= 6
    assert whole["losses"] == pytest.approx(one["losses"], rel=1e-4)
    a, b = weights(one["output_dir"]), weights(tmp_path / "fsdp" / "policy")
    for name in a:  # the saved model is gathered whole from the shards, in plain HF format
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)

    ckpt = sorted((tmp_path / "fsdp" / "ckpt").glob("step_*"))[-1]
    assert is_sharded_checkpoint(ckpt) and verified(ckpt)
    assert {"__0_0.distcp", "__1_0.distcp", "rank_0.pt", "rank_1.pt"} <= {p.name for p in ckpt.iterdir()}

    # The killed run's rerun loads the sharded checkpoint and ends where the uninterrupted run ended.
    assert killed == "killed"
    assert resumed["resumed_from_step"] == 3
    assert resumed["losses"] == pytest.approx(whole["losses"][3:], rel=1e-6)
    c = weights(tmp_path / "resumed" / "policy")
    for name in b:
        torch.testing.assert_close(c[name], b[name], rtol=0, atol=1e-7)

    # A sharded run does not silently restart from a whole checkpoint it cannot load: it stops and says why.
    assert refused.startswith("error:") and "is whole but the model is sharded" in refused
