"""Corpus flow: raw text -> cleaned, deduplicated, validated `corpus` dataset (Llama 2 §2.1, A.6).

CLI (wired in flows/cli.py): `alignline corpus [--source local|PATH ...] [--eval-set FILE ...]`
plus the common --preset/--config/--set/--home. `--source` (repeatable) overrides
corpus.sources, `--eval-set` (repeatable) overrides corpus.eval_sets; the CLI
calls `run_corpus(cfg, sources)` and prints the returned dict.

Every task is a thin call into `alignline.storage.corpus`. Tasks exchange
content-addressed Parquet/NumPy files under `<home>/work/corpus`, and are cached
on their inputs + source (+ a digest of the storage code they call), with results
persisted under `<home>/work/prefect-results`: a rerun with the same inputs does
no work, and a run killed mid-dedup resumes from the last finished band
partition (near dedup is the storage step `NearDedup`, given a band runner that
checkpoints each partition and sends it to Ray when corpus.dedup_use_ray). The
per-document steps (cleaning, MinHash signatures) run on `corpus.shards` shards,
as Ray tasks when corpus.use_ray, merged in shard order: the same corpus either way.
Nothing is published before the Great Expectations suite passes, and publishing
is content-addressed, so a resumed run publishes nothing twice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from alignline.config import RunConfig
from alignline.config.corpus import CorpusConfig
from alignline.flows.artifacts import publish_corpus
from alignline.flows.context import RunContext
from alignline.storage import Catalog, DataDir, content_hash
from alignline.storage import corpus as sc
from alignline.storage.corpus import minhash

CACHE = INPUTS + TASK_SOURCE
_STORAGE_CODE = Path(sc.__file__).parent


def corpus_work_dir(home: str) -> Path:
    """Where the corpus tasks exchange their files."""
    return DataDir(Path(home)).work("corpus")


def code_digest() -> str:
    """Hash of the storage code the tasks call: a cache input, since TASK_SOURCE sees only the task body."""
    h = hashlib.sha256()
    for path in sorted(_STORAGE_CODE.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _save(table: pa.Table, work: str, kind: str) -> str:
    """Write `table` once under a content-addressed name; returns the path (a cache-key input downstream)."""
    path = Path(work) / f"{kind}-{content_hash(table)[:16]}.parquet"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
    return str(path)


def _save_stats(stats: list[sc.StepStats], work: str, kind: str) -> str:
    blob = json.dumps([s.as_dict() for s in stats], sort_keys=True)
    path = Path(work) / f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"
    path.write_text(blob)
    return str(path)


def _docs(path: str) -> list[sc.Document]:
    return sc.documents_from_table(pq.read_table(path))


def _stage(kept, stats, dropped, work: str, kind: str) -> dict[str, str]:
    return {"documents": _save(sc.documents_to_table(kept), work, kind),
            "dropped": _save(sc.dropped_to_table(dropped), work, f"{kind}-dropped"),
            "stats": _save_stats(stats, work, f"{kind}-stats")}


@task(cache_policy=CACHE, persist_result=True)
def read_task(sources: list[str], fingerprints: list[str], max_documents: int, max_record_bytes: int,
              work: str, code: str) -> dict[str, str]:
    docs, rejects = sc.read_sources(sources, max_documents, max_record_bytes)
    return {"documents": _save(sc.documents_to_table(docs), work, "raw"),
            "rejects": _save(sc.rejects_to_table(rejects), work, "rejects")}


def map_shards(fn, shards: list[tuple], use_ray: bool, cpus: float = 1.0) -> list:
    """`fn(*args)` for each shard's args, results in shard order: one Ray task per shard on the
    cluster `alignline up` started (`num_cpus=cpus`; INTEGRATION.md: on 2 CPUs keep it <= 1), or one
    call after another in this process."""
    if not use_ray:
        return [fn(*args) for args in shards]
    import ray

    remote = ray.remote(num_cpus=cpus)(fn)
    return ray.get([remote.remote(*args) for args in shards])


@task(cache_policy=CACHE, persist_result=True)
def clean_task(documents: str, corpus: dict[str, Any], work: str, code: str) -> dict[str, str]:
    """Per-document cleaning on `corpus.shards` shards (Ray tasks with corpus.use_ray), merged in shard order."""
    cfg = CorpusConfig(**corpus)
    table = pq.read_table(documents)
    shards = [(table.slice(lo, hi - lo), cfg) for lo, hi in sc.shard_bounds(table.num_rows, cfg.shards)]
    kept, stats, dropped = sc.merge_shards(map_shards(sc.clean_shard, shards, cfg.use_ray, cfg.ray_task_cpus))
    return {"documents": _save(kept, work, "clean"), "dropped": _save(dropped, work, "clean-dropped"),
            "stats": _save_stats(stats, work, "clean-stats")}


@task(cache_policy=CACHE, persist_result=True)
def exact_dedup_task(documents: str, work: str, code: str) -> dict[str, str]:
    kept, stats, dropped = sc.run_steps([sc.ExactDedup()], _docs(documents))
    return _stage(kept, stats, dropped, work, "exact")


class CheckpointedBands:
    """The band runner `NearDedup` gets from this flow: each band partition's candidates are saved
    under a content-addressed name in `work`, so a run killed mid-dedup recomputes only the
    partitions that had not finished; with `use_ray` the missing partitions run as Ray tasks
    (one `band_candidates` task each, on the cluster `alignline up` started), in process otherwise.
    The candidates, and so the corpus, are the same either way."""

    def __init__(self, work: str, use_ray: bool, code: str):
        self.work, self.use_ray, self.code = Path(work), use_ray, code
        self.nodes: list[str] = []  # the Ray node each partition computed here ran on (tests check the spread)

    def __call__(self, sig: np.ndarray, has_shingles: np.ndarray, partitions: list[list[int]], rows: int,
                 max_bucket_pairs: int) -> list[minhash.Candidates]:
        h = hashlib.sha256(np.ascontiguousarray(sig).data)  # hashed in place, no copy of the matrix
        h.update(np.ascontiguousarray(has_shingles).data)
        h.update(f"{sig.shape}|{rows}|{max_bucket_pairs}|{self.code}".encode())
        paths = [self.work / f"bands-{h.hexdigest()[:16]}-{part[0]}-{part[-1]}.npz" for part in partitions]
        todo = [(path, part) for path, part in zip(paths, partitions) if not path.exists()]
        if self.use_ray and todo:
            import ray

            sig_ref, has_ref = ray.put(sig), ray.put(has_shingles)

            # Defined here, so Ray ships it by value and workers never import this (Prefect) module.
            def band_task(sig, part, rows, max_bucket_pairs, has_shingles):
                import ray

                found = minhash.band_candidates(sig, part, rows, max_bucket_pairs, has_shingles)
                return found, ray.get_runtime_context().get_node_id()

            # SPREAD: on a multi-node cluster the partitions go to different nodes (the signatures travel as refs).
            band_task = ray.remote(band_task).options(name="band_candidates", scheduling_strategy="SPREAD")
            pending = {band_task.remote(sig_ref, part, rows, max_bucket_pairs, has_ref): path for path, part in todo}
            while pending:  # checkpoint each partition as soon as it finishes
                done, _ = ray.wait(list(pending), num_returns=1)
                found, node = ray.get(done[0])
                self.nodes.append(node)
                _save_candidates(found, pending.pop(done[0]))
        else:
            for path, part in todo:
                _save_candidates(minhash.band_candidates(sig, part, rows, max_bucket_pairs, has_shingles), path)
        return [minhash.Candidates(**np.load(path)) for path in paths]


def _save_candidates(found: minhash.Candidates, path: Path) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, pairs=found.pairs, bucket_offsets=found.bucket_offsets, bucket_members=found.bucket_members)
    tmp.replace(path)


class ShardedSketch:
    """The sketcher `NearDedup` gets from this flow: MinHash signatures per shard of the texts (Ray tasks
    with corpus.use_ray), stacked in shard order; a row depends on its document alone, so the matrix is
    the one `minhash.sketch` computes on all texts at once."""

    def __init__(self, shards: int, use_ray: bool, cpus: float):
        self.shards, self.use_ray, self.cpus = shards, use_ray, cpus

    def __call__(self, texts, ngram: int, num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        parts = [(texts[lo:hi], ngram, num_perm, seed) for lo, hi in sc.shard_bounds(len(texts), self.shards)]
        if not parts:
            return minhash.sketch(texts, ngram, num_perm, seed)
        done = map_shards(minhash.sketch, parts, self.use_ray, self.cpus)
        return np.concatenate([sig for sig, _ in done]), np.concatenate([sizes for _, sizes in done])


@task(cache_policy=CACHE, persist_result=True)
def near_dedup_task(documents: str, near: dict[str, Any], use_ray: bool, sharding: dict[str, Any], work: str,
                    code: str) -> dict[str, str]:
    """MinHash LSH near dedup; `near` holds `NearDedup`'s settings (see `near_dedup_settings`), band
    partitions go to Ray with `use_ray` (corpus.dedup_use_ray), signatures per shard with `sharding`."""
    step = sc.NearDedup(**near, run_bands=CheckpointedBands(work, use_ray, code), sketcher=ShardedSketch(**sharding))
    kept, stats, dropped = sc.run_steps([step], _docs(documents))
    return _stage(kept, stats, dropped, work, "near")


def near_dedup_settings(cfg: CorpusConfig) -> dict[str, Any]:
    return dict(threshold=cfg.dedup_threshold, ngram=cfg.minhash_ngram, bands=cfg.minhash_bands, rows=cfg.minhash_rows,
                seed=cfg.minhash_seed, prefilter=cfg.minhash_prefilter, max_bucket_pairs=cfg.max_bucket_pairs,
                band_tasks=cfg.dedup_band_tasks)


@task(cache_policy=CACHE, persist_result=True)
def contamination_task(documents: str, eval_sets: list[str], fingerprints: list[str], settings: dict[str, Any],
                       tokenizer: str, lake: str, max_record_bytes: int, work: str, code: str) -> dict[str, Any]:
    """Llama 2 A.6 on the final corpus; `tokenizer` is a published tokenizer version ('' for words)."""
    sets = {}
    settings = dict(settings)
    score = settings.pop("score_field")
    for path in eval_sets:
        samples, _ = sc.read_sources([path], 0, max_record_bytes)
        sets[Path(path).name] = [(d.id, d.text, d.metadata.get(score)) for d in samples]
    texts = pq.read_table(documents, columns=["text"]).column("text").to_pylist()
    report = sc.contamination(sets, texts, **settings, tokenize=_tokenizer(lake, tokenizer))
    return {"table": _save(report.table, work, "contamination"), "summary": report.summary, "scores": report.scores}


def _tokenizer(lake: str, ref: str):
    """text -> token ids of the published BPE tokenizer `ref` (Llama 2 A.6 counts model tokens), or words."""
    if not ref:
        return sc.word_tokens
    from tokenizers import Tokenizer

    bpe = Tokenizer.from_str(Catalog(lake).read_ref(ref).column("tokenizer_json")[0].as_py())
    return lambda text: bpe.encode(text, add_special_tokens=False).ids


def published_tokenizer(lake: Path, choice: str) -> str:
    """The latest `tokenizer` dataset version's ref when corpus.contamination_tokenizer is 'project', else ''."""
    catalog = Catalog(lake)
    if choice != "project" or "tokenizer" not in catalog.names():
        return ""
    return catalog.versions("tokenizer")[-1].ref


def corpus_table(documents: str) -> pa.Table:
    """The published schema: document columns plus text_hash, language and cluster_id lifted from metadata."""
    docs = _docs(documents)
    return sc.documents_to_table(docs, {
        "text_hash": pa.array([d.metadata.get("text_hash", "") for d in docs], pa.string()),
        "language": pa.array([d.metadata.get("language", "") for d in docs], pa.string()),
        "cluster_id": pa.array([d.metadata.get("cluster_id", "") for d in docs], pa.string()),
        "num_chars": pa.array([len(d.text) for d in docs], pa.int64()),
    })


@task
def validate_task(documents: str, min_chars: int, max_chars: int, report_path: str) -> str:
    result = sc.validate_corpus(corpus_table(documents), report_path, min_chars, max_chars)
    if not result.success:
        raise sc.ValidationFailed("corpus validation failed: " + "; ".join(result.failed), result.report)
    return str(result.report)


@task
def publish_task(home: str, raw: str, rejects: str, documents: str, dropped: list[str], metadata: dict[str, Any],
                 flow_run: str | None) -> dict[str, str]:
    catalog = Catalog(DataDir(Path(home)).lake)
    raw_v = catalog.publish("corpus-raw", pq.read_table(raw), flow_run=flow_run, metadata=metadata)
    rejects_v = catalog.publish("corpus-rejects", pq.read_table(rejects), flow_run=flow_run, metadata=metadata)
    dropped_v = catalog.publish("corpus-dropped", pa.concat_tables([pq.read_table(p) for p in dropped]),
                                parents=[raw_v.ref], flow_run=flow_run, metadata=metadata)
    corpus_v = catalog.publish("corpus", corpus_table(documents), parents=[raw_v.ref, rejects_v.ref],
                               flow_run=flow_run, metadata=metadata)
    return {"corpus": corpus_v.ref, "corpus-dropped": dropped_v.ref, "corpus-rejects": rejects_v.ref, "corpus-raw": raw_v.ref}


@task(cache_policy=CACHE, persist_result=True)
def report_task(documents: str, stats: list[str], dropped: list[str], rejects: str, contamination: dict | None,
                contamination_scores: dict | None,
                corpus: dict[str, Any], folder: str, title: str, code: str) -> str:
    cfg = CorpusConfig(**corpus)
    all_stats = [sc.stats_from_dict(row) for path in stats for row in json.loads(Path(path).read_text())]
    all_dropped = [d for path in dropped for d in sc.dropped_from_table(pq.read_table(path))]
    languages = Counter()
    for s in all_stats:
        if s.step == "language":
            languages[cfg.language] += s.kept
            languages.update({reason.removeprefix("language_"): n for reason, n in s.dropped.items()})
    reject_counts = Counter(pq.read_table(rejects, columns=["reason"]).column("reason").to_pylist())
    path = sc.write_report(folder, _docs(documents), all_stats, all_dropped, dict(reject_counts), dict(languages),
                           contamination, contamination_scores=contamination_scores, top_terms=cfg.report_top_terms,
                           toxicity_min_terms=cfg.toxicity_min_terms,
                           near_threshold=cfg.dedup_threshold, title=title)
    return str(path)


@flow(name="corpus")
def corpus_flow(home: str, corpus: dict[str, Any], config_digest: str) -> dict[str, Any]:
    """Llama 2 §2.1: read, clean, deduplicate (exact, then MinHash LSH), audit (A.6), validate, publish."""
    from prefect.runtime import flow_run

    cfg = CorpusConfig(**corpus)
    work = str(corpus_work_dir(home))
    Path(work).mkdir(parents=True, exist_ok=True)
    code = code_digest()
    sources = list(cfg.sources)
    raw = read_task(sources, [sc.source_fingerprint(s) for s in sources], cfg.max_documents, cfg.max_record_bytes, work, code)
    stages = [clean_task(raw["documents"], corpus, work, code)]
    if cfg.exact_dedup:
        stages.append(exact_dedup_task(stages[-1]["documents"], work, code))
    if cfg.near_dedup:
        sharding = dict(shards=cfg.shards, use_ray=cfg.use_ray, cpus=cfg.ray_task_cpus)
        stages.append(near_dedup_task(stages[-1]["documents"], near_dedup_settings(cfg), cfg.dedup_use_ray, sharding,
                                      work, code))
    final = stages[-1]["documents"]
    contamination, contamination_scores = None, None
    if cfg.eval_sets:
        settings = dict(ngram=cfg.contamination_ngram, clean_below=cfg.contamination_clean, dirty_from=cfg.contamination_dirty,
                        skip_budget=cfg.contamination_skip_budget, score_field=cfg.contamination_score_field)
        lake = DataDir(Path(home)).lake
        found = contamination_task(final, list(cfg.eval_sets), [sc.source_fingerprint(s) for s in cfg.eval_sets], settings,
                                   published_tokenizer(lake, cfg.contamination_tokenizer), str(lake), cfg.max_record_bytes,
                                   work, code)
        contamination, contamination_scores = found["summary"], found["scores"]
    validation = validate_task(final, cfg.validation_min_chars, cfg.validation_max_chars,
                               str(Path(work) / f"validation-{Path(final).stem}.json"))
    dropped = [s["dropped"] for s in stages]
    metadata = {"sources": sources, "config_digest": config_digest, "corpus_config": corpus, "code": code}
    refs = publish_task(home, raw["documents"], raw["rejects"], final, dropped, metadata, flow_run.get_id())
    folder = str(DataDir(Path(home)).reports("corpus") / refs["corpus"].replace("@", "-"))
    report = report_task(final, [s["stats"] for s in stages], dropped, raw["rejects"], contamination, contamination_scores, corpus,
                         folder,
                         f"Corpus report: {refs['corpus']}", code)
    stats = [row for s in stages for row in json.loads(Path(s["stats"]).read_text())]
    rejects = Counter(pq.read_table(raw["rejects"], columns=["reason"]).column("reason").to_pylist())
    result = {**refs, "documents": pq.read_metadata(final).num_rows, "report": report, "validation": validation,
              "dropped_by_reason": dict(sum((Counter(r["dropped"]) for r in stats), Counter())),
              "rejects_by_reason": dict(rejects), "contamination": contamination,
              "contamination_scores": contamination_scores, "steps": stats}
    publish_corpus(result)
    return result


def run_corpus(cfg: RunConfig, sources: list[str] | None = None, eval_sets: list[str] | None = None) -> dict[str, Any]:
    """What `alignline corpus` calls: the flow with this run's corpus section (sources/eval sets overridden)."""
    corpus_cfg = cfg.corpus
    if sources:
        corpus_cfg = dataclasses.replace(corpus_cfg, sources=tuple(sources))
    if eval_sets:
        corpus_cfg = dataclasses.replace(corpus_cfg, eval_sets=tuple(eval_sets))
    # Task results (and so the cache) live in the data dir, not ~/.prefect.
    results = DataDir(cfg.home).prefect_results
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(corpus_cfg).items()}
    if corpus_cfg.use_ray or (corpus_cfg.near_dedup and corpus_cfg.dedup_use_ray):
        RunContext(cfg).init_ray()  # shards and band partitions become Ray tasks on the cluster `alignline up` started
    runner = corpus_flow.with_options(result_storage=results, persist_result=True)
    return runner(str(cfg.home), plain, cfg.digest())
