"""A head and two worker nodes on this machine (ray_nodes.local_cluster): a training job whose workers are
placed on different nodes (STRICT_SPREAD, FSDP) and a corpus dedup whose band tasks run on different nodes,
both giving what one node gives.

Inputs reach the workers through the object store and the outputs come back through run storage (the
workers' node is never the driver's: the head offers no CPUs)."""
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from alignline.config.corpus import CorpusConfig
from alignline.config.training import SFTConfig
from alignline.services.data import default_sft_table, table_dialogues
from alignline.services.models import load_model
from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, train_sft, write_sft_rows
from alignline.storage.corpus.dedup import near_duplicates

from ray_nodes import local_cluster

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def nodes():
    with local_cluster(workers=2, cpus_per_node=1) as (cluster, workers):
        yield cluster, workers


@pytest.fixture(scope="module")
def sft_rows(tokenizer, tmp_path_factory):
    rows = encode_sft_rows(tokenizer, table_dialogues(default_sft_table(stdlib_limit=30)), seq_len=128)
    return write_sft_rows(rows, tmp_path_factory.mktemp("sft") / "rows.npz")


def sft_job(base_dir, rows, out: Path) -> SFTJob:
    cfg = SFTConfig(batch_size=4, seq_len=128, epochs=1, learning_rate=3e-3, warmup_steps=1, checkpoint_every=3,
                    log_every=1, use_ray=False)
    return SFTJob(cfg, str(base_dir), rows, str(out / "policy"), str(out / "ckpt"))


@pytest.mark.integration
def test_fsdp_training_spread_over_two_nodes_matches_one_process(nodes, base_dir, sft_rows, tmp_path):
    import ray

    one = train_sft(sft_job(base_dir, sft_rows, tmp_path / "one"), LaunchOptions())
    job = sft_job(base_dir, sft_rows, tmp_path / "spread")
    storage = tmp_path / "ray_results"
    result = train_sft(job, LaunchOptions(use_ray=True, num_workers=2, cpus_per_worker=0.5, sharding="fsdp",
                                          placement_strategy="STRICT_SPREAD", storage_path=str(storage),
                                          name="sft-spread"))
    head = ray.get_runtime_context().get_node_id()
    assert len(set(result["worker_nodes"])) == 2 and head not in result["worker_nodes"]
    # The workers read the model and rows landed from the object store; rank 0's output came back via storage.
    assert result["landed_inputs"] == ["model_dir", "rows_path"]
    assert result["uploaded_outputs"] == ["output_dir"] and result["output_dir"] == job.output_dir

    assert result["step"] == one["step"] and result["losses"] == pytest.approx(one["losses"], rel=1e-4)
    a, b = load_model(one["output_dir"]).state_dict(), load_model(job.output_dir).state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
    # Each rank uploaded its own shards; Ray Train merged them into one checkpoint in run storage.
    ckpts = [p.parent for p in (storage / "sft-spread").rglob(".metadata")]
    assert ckpts and all({"__0_0.distcp", "__1_0.distcp", "rank_0.pt", "rank_1.pt"} <= {f.name for f in c.iterdir()}
                         for c in ckpts)


def near_duplicate_texts(n: int = 300, seed: int = 0) -> list[str]:
    """n/2 random documents and an edited copy of each (2 of 60 words changed: Jaccard of 5-grams ~0.7-0.85)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    docs = [[rng.choice(vocab) for _ in range(60)] for _ in range(n // 2)]
    copies = []
    for words in docs:
        edited = list(words)
        for pos in rng.sample(range(60), 2) if rng.random() < 0.5 else rng.sample(range(60), 1):
            edited[pos] = rng.choice(vocab)
        copies.append(edited)
    texts = [" ".join(w) for w in docs + copies]
    rng.shuffle(texts)
    return texts


@pytest.mark.integration
def test_dedup_band_tasks_on_two_nodes_keep_what_one_node_keeps(nodes, tmp_path):
    from alignline.flows.corpus import CheckpointedBands, ShardedSketch, near_dedup_settings

    texts = near_duplicate_texts()
    settings = {**near_dedup_settings(CorpusConfig()), "band_tasks": 4}
    local = near_duplicates(texts, **settings)
    bands = CheckpointedBands(str(tmp_path), use_ray=True, code="test")
    spread = near_duplicates(texts, **settings, run_bands=bands, sketcher=ShardedSketch(4, True, 0.5))
    assert len(bands.nodes) == 4 and len(set(bands.nodes)) == 2  # partitions ran on both worker nodes
    assert local.drop.sum() > 20                                 # the data has near-duplicates to find
    np.testing.assert_array_equal(spread.drop, local.drop)
    np.testing.assert_array_equal(spread.cluster, local.cluster)


def test_a_job_names_what_travels_even_inside_a_field():
    """PPO's reward-model folders sit inside its scorer factory: dotted INPUTS reach them; a scorer that is not
    built from folders has none to ship."""
    from alignline.config.rlhf import RLHFConfig
    from alignline.services.training.launch import _inputs, _replace
    from alignline.services.training.ppo import PPOJob, RewardModelFolders

    job = PPOJob(RLHFConfig(), "/p", "/r", [], [], [], [], RewardModelFolders("/h", "/s"), "/out")
    assert _inputs(job) == {"policy_dir": "/p", "ref_dir": "/r", "make_scorer.helpful_dir": "/h",
                            "make_scorer.safety_dir": "/s"}
    moved = _replace(job, "make_scorer.safety_dir", "/node/s")
    assert moved.make_scorer == RewardModelFolders("/h", "/node/s") and moved.policy_dir == "/p"
    assert set(_inputs(PPOJob(RLHFConfig(), "/p", "/r", [], [], [], [], lambda: None, "/out"))) == {"policy_dir",
                                                                                                  "ref_dir"}
