import dataclasses
import os

import numpy as np
import pytest
import torch

from alignline.config.training import SFTConfig
from alignline.services.data import default_sft_table, table_dialogues
from alignline.services.models import IGNORE_INDEX, load_model
from alignline.services.training import (LaunchOptions, SFTJob, encode_sft_rows, pack_dialogues, token_loss_sum,
                                         train_sft, write_sft_rows)
from alignline.services.models.chat import EncodedDialogue


@pytest.fixture(scope="module")
def sft_rows(tokenizer, tmp_path_factory):
    rows = encode_sft_rows(tokenizer, table_dialogues(default_sft_table(stdlib_limit=60)), seq_len=256)
    return write_sft_rows(rows, tmp_path_factory.mktemp("sft") / "rows.npz")


def sft_job(base_dir, rows, out, **train) -> SFTJob:
    cfg = SFTConfig(**{"batch_size": 8, "seq_len": 256, "epochs": 2, "learning_rate": 3e-3, "warmup_steps": 2,
                       "checkpoint_every": 100, "log_every": 1, "use_ray": False, **train})
    return SFTJob(cfg, str(base_dir), rows, str(out / "policy"), str(out / "ckpt"))


def answer_loss(model, input_ids, labels) -> float:
    """Mean loss over the answer tokens of rows (N, T)."""
    with torch.no_grad():
        loss, count = token_loss_sum(model(input_ids=input_ids).logits, labels)
    return float(loss) / count


def test_packing_keeps_examples_whole_and_labels_aligned():
    a = EncodedDialogue([1, 10, 11, 12, 2], [IGNORE_INDEX, IGNORE_INDEX, 11, 12, 2])
    b = EncodedDialogue([1, 20, 21, 2], [IGNORE_INDEX, IGNORE_INDEX, 21, 2])
    rows = pack_dialogues([a, b, a], seq_len=9, pad_id=3)
    assert rows.input_ids.tolist() == [[1, 10, 11, 12, 2, 1, 20, 21, 2], [1, 10, 11, 12, 2, 3, 3, 3, 3]]
    assert rows.labels[1].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 11, 12, 2] + [IGNORE_INDEX] * 4


def test_sft_lowers_the_answer_loss(base_dir, sft_rows, tmp_path):
    result = train_sft(sft_job(base_dir, sft_rows, tmp_path), LaunchOptions())
    losses = result["losses"]
    assert len(losses) == result["max_steps"] >= 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    # What lands in output_dir is the trained model (not the base copied over, nor a checkpoint from before training):
    # its answer loss on the training rows is at the level of the last steps, well under the base's.
    data = np.load(sft_rows)
    ids, labels = torch.from_numpy(data["input_ids"][:16]), torch.from_numpy(data["labels"][:16])
    assert result["output_dir"] == str(tmp_path / "policy")
    saved, base = load_model(result["output_dir"]), load_model(base_dir)
    assert answer_loss(saved, ids, labels) < answer_loss(base, ids, labels) - 0.5


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore")
def test_ray_train_two_workers_match_one_process(base_dir, sft_rows, tmp_path, ray_cluster):
    """The one Ray Train test (~45 s): DDP on 2 gloo workers computes the same run as the in-process loop,
    and rank 0 logs metrics to MLflow."""
    import mlflow
    import ray

    from alignline.services.tracking import start_run

    local = train_sft(sft_job(base_dir, sft_rows, tmp_path / "local", epochs=1), LaunchOptions())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = start_run(uri, "sft-test", "ray", {"workers": 2})
    job = dataclasses.replace(sft_job(base_dir, sft_rows, tmp_path / "ray", epochs=1), tracking_uri=uri, run_id=run_id)
    result = train_sft(job, LaunchOptions(use_ray=True, num_workers=2, cpus_per_worker=0.5,
                                          storage_path=str(tmp_path / "ray_results"), name="sft-test"))
    assert result["step"] == local["step"]
    assert result["losses"] == pytest.approx(local["losses"], rel=1e-4)
    a, b = load_model(local["output_dir"]).state_dict(), load_model(result["output_dir"]).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, "loss")
    assert len(history) == local["step"]
