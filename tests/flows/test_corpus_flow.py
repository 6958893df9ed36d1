import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from alignline.config import load_config
from alignline.storage import Catalog
from alignline.storage import corpus as storage_corpus
from tests.conftest import TEST_SERVER_OVERRIDES

sys.path.insert(0, str(Path(__file__).parents[1] / "storage" / "corpus"))
from corpus_texts import prose  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def prefect_engine():
    with prefect_test_harness():
        yield


def write_source(folder: Path) -> tuple[Path, Path]:
    rng = random.Random(0)
    lines = []
    for i in range(30):
        lines.append(json.dumps({"id": f"doc{i}", "text": prose(1000 + i, 12) + f" Mail admin{i}@example.com today."}))
    lines.append(json.dumps({"id": "dup-exact", "text": prose(1000, 12).upper() + " Mail admin0@example.com today."}))
    words = prose(1001, 12).split()
    words[rng.randrange(len(words))] = "changed"
    lines.append(json.dumps({"id": "dup-near", "text": " ".join(words) + " Mail admin1@example.com today."}))
    lines.append(json.dumps({"id": "short", "text": "Too short to keep."}))
    lines += ["{broken json", json.dumps({"id": "notext"})]
    source = folder / "corpus.jsonl"
    source.write_text("\n".join(lines) + "\n")
    evalset = folder / "eval.jsonl"
    evalset.write_text(json.dumps({"id": "leak", "text": " ".join(prose(1005, 12).split()[:60]), "metadata": {"score": 1}})
                       + "\n" + json.dumps({"id": "fresh", "text": prose(5000, 3), "metadata": {"score": 0}}) + "\n")
    return source, evalset


def config(home: Path, *extra: str):
    return load_config("tiny", home=home, overrides=["corpus.dedup_band_tasks=2", *extra])


def test_flow_publishes_corpus_dropped_rejects_and_report_then_caches(tmp_path, monkeypatch):
    from alignline.flows.corpus import run_corpus

    source, evalset = write_source(tmp_path)
    cfg = config(tmp_path / "home", f"corpus.eval_sets=['{evalset}']")
    first = run_corpus(cfg, [str(source)])

    catalog = Catalog(tmp_path / "home" / "lake")
    corpus = catalog.read("corpus").to_pylist()
    ids = {row["id"] for row in corpus}
    assert ids == {f"doc{i}" for i in range(30)}
    assert all("@example.com" not in row["text"] and "<EMAIL>" in row["text"] for row in corpus)
    assert {row["cluster_id"] for row in corpus if row["id"] == "doc1"} == {"doc1"}
    dropped = {row["id"]: row["reason"] for row in catalog.read("corpus-dropped").to_pylist()}
    assert dropped == {"dup-exact": "exact_duplicate", "dup-near": "near_duplicate", "short": "language_unknown"}
    assert sorted(r["reason"] for r in catalog.read("corpus-rejects").to_pylist()) == ["bad_json", "missing_text"]
    assert first["rejects_by_reason"] == {"bad_json": 1, "missing_text": 1}
    assert first["contamination"]["eval.jsonl"] == {"samples": 2, "clean": 1, "not_clean": 1, "not_dirty": 1, "dirty": 1}
    by_bucket = {r["bucket"]: r for r in first["contamination_scores"]["eval.jsonl"]}
    assert by_bucket["dirty"]["mean_score"] == 1.0 and by_bucket["clean"]["mean_score"] == 0.0  # Table 51 rows
    assert "Table 51 layout" in Path(first["report"]).read_text()
    lineage = [v.name for v in catalog.lineage(first["corpus"])]
    assert lineage[0] == "corpus" and "corpus-raw" in lineage and "corpus-rejects" in lineage
    assert Path(first["report"]).exists() and list(Path(first["report"]).parent.glob("*.png"))
    # every step's time is measured, near dedup included (band partitions run inside the step)
    steps = {row["step"]: row for row in first["steps"]}
    assert steps["near_dedup"]["seconds"] > 0 and steps["near_dedup"]["dropped"] == {"near_duplicate": 1}
    near_row = next(line for line in Path(first["report"]).read_text().splitlines() if line.startswith("| near_dedup |"))
    assert near_row.split("|")[5].strip() != "0.00"
    assert "| wrongly removed | 0 (0.00% of removals) |" in Path(first["report"]).read_text()

    # Rerun with the same inputs: every step is a cache hit, nothing is computed or published again.
    calls = []
    for name in ("run_steps", "read_sources", "contamination", "write_report"):
        real = getattr(storage_corpus, name)
        monkeypatch.setattr(storage_corpus, name, lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k))
    real_sig = storage_corpus.minhash.signatures
    monkeypatch.setattr(storage_corpus.minhash, "signatures", lambda *a, **k: calls.append("signatures") or real_sig(*a, **k))
    second = run_corpus(cfg, [str(source)])
    assert calls == []
    assert {k: second[k] for k in ("corpus", "corpus-dropped", "corpus-rejects")} == \
           {k: first[k] for k in ("corpus", "corpus-dropped", "corpus-rejects")}
    assert len(catalog.versions("corpus")) == 1


def test_validation_failure_publishes_nothing(tmp_path):
    from alignline.flows.corpus import run_corpus
    from alignline.storage.corpus import ValidationFailed

    source, _ = write_source(tmp_path)
    home = tmp_path / "home"
    with pytest.raises(ValidationFailed) as failure:
        run_corpus(config(home, "corpus.validation_min_chars=100000", "corpus.validation_max_chars=200000"), [str(source)])
    assert failure.value.report.exists()
    assert Catalog(home / "lake").names() == []


def test_killed_mid_dedup_resumes_with_the_same_result(tmp_path, monkeypatch):
    """A run that dies in the middle of the band partitions reruns only what did not finish,
    and publishes what an uninterrupted run publishes (nothing lost, nothing twice)."""
    from alignline.flows.corpus import run_corpus
    from alignline.storage.corpus import minhash

    source, _ = write_source(tmp_path)
    real = minhash.band_candidates
    calls = []

    def dies_after_first_partition(*args, **kwargs):
        calls.append(args[1])
        if len(calls) > 1:
            raise RuntimeError("worker killed mid-dedup")
        return real(*args, **kwargs)

    cfg = config(tmp_path / "home")
    monkeypatch.setattr(minhash, "band_candidates", dies_after_first_partition)
    with pytest.raises(Exception, match="worker killed mid-dedup"):
        run_corpus(cfg, [str(source)])
    assert not (tmp_path / "home" / "lake" / "datasets" / "corpus").exists()  # nothing published

    calls.clear()
    monkeypatch.setattr(minhash, "band_candidates", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    resumed = run_corpus(cfg, [str(source)])
    assert len(calls) == 1  # the finished partition came from the cache

    uninterrupted = run_corpus(config(tmp_path / "other"), [str(source)])
    for name in ("corpus", "corpus-dropped", "corpus-rejects", "corpus-raw"):
        assert resumed[name].split("@")[1] == uninterrupted[name].split("@")[1]
    assert len(Catalog(tmp_path / "home" / "lake").versions("corpus")) == 1


def _band_ray_tasks(cfg) -> list:
    """Ray tasks of this driver's job that ran `minhash.band_candidates` (the state API, via the dashboard)."""
    import ray
    from ray.util.state import list_tasks

    return list_tasks(address=cfg.servers.url(cfg.servers.ray_dashboard_port), limit=10_000, raise_on_missing_output=False,
                      filters=[("job_id", "=", ray.get_runtime_context().get_job_id()), ("name", "=", "band_candidates")])


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore")
def test_band_partitions_as_ray_tasks_publish_the_in_process_corpus(tmp_path, ray_cluster):
    """corpus.dedup_use_ray: each band partition runs as a Ray task on the session's Ray head (one
    finished `band_candidates` task per partition, in a worker process, not this one), and the run
    publishes exactly what the in-process run publishes: same candidates per partition, same corpus
    (ids, text, cluster ids), same near-duplicate drops."""
    from alignline.flows.corpus import run_corpus

    source, _ = write_source(tmp_path)
    partitions = ["corpus.dedup_band_tasks=3"]  # 20 bands -> 3 partitions, 3 Ray tasks
    local = run_corpus(config(tmp_path / "local", *partitions), [str(source)])
    ray_cfg = config(tmp_path / "ray", *TEST_SERVER_OVERRIDES, *partitions, "corpus.dedup_use_ray=true")
    before = {t.task_id for t in _band_ray_tasks(ray_cfg)}
    on_ray = run_corpus(ray_cfg, [str(source)])

    # Task events reach the GCS asynchronously (~1 s): wait for all three, or fail.
    deadline = time.monotonic() + 60
    while True:
        new = [t for t in _band_ray_tasks(ray_cfg) if t.task_id not in before]
        if (len(new) >= 3 and all(t.state == "FINISHED" for t in new)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sorted(t.state for t in new) == ["FINISHED"] * 3, new
    assert all(t.worker_pid and t.worker_pid != os.getpid() for t in new), new

    # Same candidates per partition (checkpoint files), then byte-identical published datasets.
    local_bands = sorted((tmp_path / "local" / "work" / "corpus").glob("bands-*.npz"))
    ray_bands = sorted((tmp_path / "ray" / "work" / "corpus").glob("bands-*.npz"))
    assert [p.name for p in ray_bands] == [p.name for p in local_bands] and len(local_bands) == 3
    for a, b in zip(local_bands, ray_bands):
        la, lb = np.load(a), np.load(b)
        assert sorted(la.files) == sorted(lb.files) == ["bucket_members", "bucket_offsets", "pairs"]
        for key in la.files:
            np.testing.assert_array_equal(la[key], lb[key])
    assert sum(len(np.load(p)["pairs"]) for p in ray_bands) > 0  # the near duplicate is a candidate somewhere
    for name in ("corpus", "corpus-dropped", "corpus-rejects", "corpus-raw"):
        assert on_ray[name].split("@")[1] == local[name].split("@")[1], name
    lakes = Catalog(tmp_path / "local" / "lake"), Catalog(tmp_path / "ray" / "lake")
    local_corpus, ray_corpus = (lake.read("corpus").to_pylist() for lake in lakes)
    assert [(r["id"], r["cluster_id"]) for r in ray_corpus] == [(r["id"], r["cluster_id"]) for r in local_corpus]
    assert {r["id"]: r["cluster_id"] for r in ray_corpus}["doc1"] == "doc1"
    local_dropped, ray_dropped = (lake.read("corpus-dropped").to_pylist() for lake in lakes)
    assert ray_dropped == local_dropped
    assert {(r["id"], r["reason"]) for r in ray_dropped if r["reason"] == "near_duplicate"} == {("dup-near", "near_duplicate")}
    assert on_ray["dropped_by_reason"] == local["dropped_by_reason"]


def test_shard_count_does_not_change_what_is_published(tmp_path):
    """The per-document steps run shard by shard; 1 shard and 3 shards publish the same versions."""
    from alignline.flows.corpus import run_corpus

    source, evalset = write_source(tmp_path)
    one = run_corpus(config(tmp_path / "one", "corpus.shards=1", f"corpus.eval_sets=['{evalset}']"), [str(source)])
    three = run_corpus(config(tmp_path / "three", "corpus.shards=3", f"corpus.eval_sets=['{evalset}']"), [str(source)])
    for name in ("corpus", "corpus-dropped", "corpus-rejects", "corpus-raw"):
        assert one[name].split("@")[1] == three[name].split("@")[1], name
    strip = lambda steps: [{k: v for k, v in s.items() if k != "seconds"} for s in steps]  # noqa: E731
    assert strip(one["steps"]) == strip(three["steps"])
    assert one["contamination"] == three["contamination"]


def _shard_ray_tasks(cfg) -> list:
    import ray
    from ray.util.state import list_tasks

    return list_tasks(address=cfg.servers.url(cfg.servers.ray_dashboard_port), limit=10_000, raise_on_missing_output=False,
                      filters=[("job_id", "=", ray.get_runtime_context().get_job_id())])


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore")
def test_cleaning_shards_on_ray_publish_the_in_process_corpus(tmp_path, ray_cluster):
    """corpus.use_ray: the cleaning steps and MinHash signatures run as one Ray task per shard on the
    session's Ray head, and the run publishes exactly the versions the in-process run publishes."""
    from alignline.flows.corpus import run_corpus

    source, evalset = write_source(tmp_path)
    common = ["corpus.shards=3", f"corpus.eval_sets=['{evalset}']"]
    local = run_corpus(config(tmp_path / "local", *common), [str(source)])
    ray_cfg = config(tmp_path / "ray", *TEST_SERVER_OVERRIDES, *common, "corpus.use_ray=true", "corpus.ray_task_cpus=0.5")
    before = {t.task_id for t in _shard_ray_tasks(ray_cfg)}
    on_ray = run_corpus(ray_cfg, [str(source)])

    deadline = time.monotonic() + 60
    while True:
        new = [t for t in _shard_ray_tasks(ray_cfg) if t.task_id not in before]
        names = Counter(t.name for t in new if t.state == "FINISHED")
        if (names["clean_shard"] >= 3 and names["sketch"] >= 3) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert names["clean_shard"] == 3 and names["sketch"] == 3, names
    assert all(t.worker_pid != os.getpid() for t in new)
    for name in ("corpus", "corpus-dropped", "corpus-rejects", "corpus-raw"):
        assert on_ray[name].split("@")[1] == local[name].split("@")[1], name
    assert on_ray["dropped_by_reason"] == local["dropped_by_reason"]
    assert on_ray["contamination"] == local["contamination"]
