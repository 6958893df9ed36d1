"""Ray Train run storage on S3 (a real S3-compatible server: moto in server mode on loopback): the node a
worker runs on is lost mid-run, with its disk; the worker restarts on the other node, restores the last
checkpoint from S3 and ends where a run that never failed ends."""
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from alignline.config.training import SFTConfig
from alignline.services.data import default_sft_table, table_dialogues
from alignline.services.models import load_model
from alignline.services.training import LaunchOptions, SFTJob, encode_sft_rows, train_sft, write_sft_rows
from alignline.services.training.storage import run_filesystem

from ray_nodes import local_cluster

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore")]

BUCKET = "alignline-runs"
S3_ENV = {"AWS_ACCESS_KEY_ID": "moto-test", "AWS_SECRET_ACCESS_KEY": "moto-test", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_and_nodes():
    """The S3 server first, then the cluster: its raylets (and so the workers) inherit the AWS credential
    chain from this process's environment, as nodes of a real cluster read their own."""
    import boto3
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    try:
        with local_cluster(workers=2, cpus_per_node=1) as (cluster, workers):
            yield endpoint, s3, cluster, workers
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def sft_rows(tokenizer, tmp_path_factory):
    rows = encode_sft_rows(tokenizer, table_dialogues(default_sft_table(stdlib_limit=30)), seq_len=128)
    return write_sft_rows(rows, tmp_path_factory.mktemp("sft") / "rows.npz")


def wait_to_be_lost(flag: str, step: int):
    """on_step hook (a closure: Ray ships it by value): on the first attempt, at `step`, tell the test which node
    this worker is on and wait for the test to take that node away (the worker dies with it)."""
    def hook(done: int) -> None:
        if done == step and not os.path.exists(flag):
            import ray

            Path(flag).write_text(ray.get_runtime_context().get_node_id())
            time.sleep(600)
    return hook


def test_a_worker_restarted_on_another_node_restores_from_s3(s3_and_nodes, base_dir, sft_rows, tmp_path):
    endpoint, s3, cluster, workers = s3_and_nodes
    cfg = SFTConfig(batch_size=4, seq_len=128, epochs=1, learning_rate=3e-3, warmup_steps=1, checkpoint_every=2,
                    log_every=1, use_ray=False)
    one = train_sft(SFTJob(cfg, str(base_dir), sft_rows, str(tmp_path / "one" / "policy"),
                           str(tmp_path / "one" / "ckpt")), LaunchOptions())
    assert one["step"] >= 5
    flag = tmp_path / "lost-node"
    job = SFTJob(cfg, str(base_dir), sft_rows, str(tmp_path / "s3" / "policy"), str(tmp_path / "s3" / "ckpt"),
                 on_step=wait_to_be_lost(str(flag), step=3))
    opts = LaunchOptions(use_ray=True, num_workers=1, cpus_per_worker=0.5, max_failures=1, name="sft-s3",
                         storage_path=f"s3://{BUCKET}/train", storage_endpoint=endpoint)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(train_sft, job, opts)
        deadline = time.monotonic() + 300
        while not flag.exists():
            assert not running.done(), running.result()
            assert time.monotonic() < deadline, "the worker never reached step 3"
            time.sleep(0.5)
        lost = flag.read_text()
        # Ray Train registers a reported checkpoint when its controller next polls the worker; a node lost before
        # that loses the registration (not the upload). Wait for the registration, as the run would resume from it.
        while not s3.list_objects_v2(Bucket=BUCKET, Prefix="train/sft-s3/checkpoint_manager_snapshot.json").get("KeyCount"):
            assert time.monotonic() < deadline, "the step-2 checkpoint was never registered"
            time.sleep(0.5)
        cluster.remove_node(next(n for n in workers if n.node_id == lost))  # the node and its disk are gone
        result = running.result(timeout=600)

    # Restarted on the surviving node, from the step-2 checkpoint it could only have found in S3.
    assert result["worker_nodes"] != [lost]
    assert result["resumed_from_step"] == 2
    assert result["losses"] == pytest.approx(one["losses"][2:], rel=1e-5)
    a, b = load_model(one["output_dir"]).state_dict(), load_model(job.output_dir).state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="train/sft-s3/")
            for o in page.get("Contents", [])]
    assert any(k.endswith("/state.pt") for k in keys) and "train/sft-s3/summary.json" in keys
    assert any(k.startswith("train/sft-s3/outputs/output_dir/") for k in keys)


def test_run_filesystem_maps_uris():
    fs, path = run_filesystem("s3://bucket/some/prefix/", "http://127.0.0.1:9000")
    assert (fs.type_name, path) == ("s3", "bucket/some/prefix")
    fs, path = run_filesystem("/tmp/x/../runs")
    assert (fs.type_name, path) == ("local", "/tmp/runs")
    with pytest.raises(ValueError, match="only a local folder or s3"):
        run_filesystem("gs://bucket/x")
