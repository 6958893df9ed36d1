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
partition. Nothing is published before the Great Expectations suite passes, and
publishing is content-addressed, so a resumed run publishes nothing twice.
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
from alignline.flows.context import RunContext
from alignline.storage import Catalog, content_hash
from alignline.storage import corpus as sc
from alignline.storage.corpus import minhash

CACHE = INPUTS + TASK_SOURCE
_STORAGE_CODE = Path(sc.__file__).parent


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


@task(cache_policy=CACHE, persist_result=True)
def clean_task(documents: str, corpus: dict[str, Any], work: str, code: str) -> dict[str, str]:
    kept, stats, dropped = sc.run_steps(sc.cleaning_steps(CorpusConfig(**corpus)), _docs(documents))
    return _stage(kept, stats, dropped, work, "clean")


@task(cache_policy=CACHE, persist_result=True)
def exact_dedup_task(documents: str, work: str, code: str) -> dict[str, str]:
    kept, stats, dropped = sc.run_steps([sc.ExactDedup()], _docs(documents))
    return _stage(kept, stats, dropped, work, "exact")


@task(cache_policy=CACHE, persist_result=True)
def signatures_task(documents: str, ngram: int, num_perm: int, seed: int, work: str, code: str) -> str:
    texts = pq.read_table(documents, columns=["text"]).column("text").to_pylist()
    shingles = minhash.shingle_sets(texts, ngram)
    sig = minhash.signatures(shingles, num_perm, seed)
    path = Path(work) / f"minhash-{Path(documents).stem}-{ngram}-{num_perm}-{seed}.npz"
    np.savez(path, offsets=shingles.offsets, values=shingles.values, sig=sig)
    return str(path)


@task(cache_policy=CACHE, persist_result=True)
def bands_task(signatures: str, bands: list[int], rows: int, max_bucket_pairs: int, use_ray: bool,
               work: str, code: str) -> str:
    """One band partition -> candidate pairs; on a cluster the partition runs as a Ray task."""
    data = np.load(signatures)
    sig, has = data["sig"], np.diff(data["offsets"]) > 0
    if use_ray:
        import ray

        pairs = ray.get(ray.remote(minhash.band_candidates).remote(sig, bands, rows, max_bucket_pairs, has))
    else:
        pairs = minhash.band_candidates(sig, bands, rows, max_bucket_pairs, has)
    path = Path(work) / f"bands-{Path(signatures).stem}-{bands[0]}-{bands[-1]}-{rows}.npy"
    np.save(path, pairs)
    return str(path)


@task(cache_policy=CACHE, persist_result=True)
def near_dedup_task(documents: str, signatures: str, candidates: list[str], threshold: float, prefilter: float,
                    work: str, code: str) -> dict[str, str]:
    docs = _docs(documents)
    data = np.load(signatures)
    shingles = minhash.Shingles(data["offsets"], data["values"])
    found = [p for p in (np.load(c) for c in candidates) if p.size]
    pairs = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), dtype=np.int64)
    verified, jac = minhash.verify_pairs(shingles, data["sig"], pairs, threshold, prefilter)
    cluster, drop = minhash.clusters_from_pairs(len(docs), verified)
    result = sc.NearDedupResult(cluster, drop, verified, jac, len(pairs),
                                {"candidates": int(len(pairs)), "verified_pairs": int(len(verified))})
    log = sc.StepLog("near_dedup")
    log.stats.docs_in = len(docs)
    sc.apply_near_dedup(docs, result, log)
    kept = [d for d, dropped in zip(docs, drop) if not dropped]
    log.stats.kept = len(kept)
    return _stage(kept, [log.stats], log.dropped, work, "near")


@task(cache_policy=CACHE, persist_result=True)
def contamination_task(documents: str, eval_sets: list[str], fingerprints: list[str], ngram: int, clean: float,
                       dirty: float, max_record_bytes: int, work: str, code: str) -> dict[str, Any]:
    sets = {}
    for path in eval_sets:
        samples, _ = sc.read_sources([path], 0, max_record_bytes)
        sets[Path(path).name] = [(d.id, d.text) for d in samples]
    texts = pq.read_table(documents, columns=["text"]).column("text").to_pylist()
    report = sc.contamination(sets, texts, ngram, clean, dirty)
    return {"table": _save(report.table, work, "contamination"), "summary": report.summary}


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
    catalog = Catalog(Path(home) / "lake")
    raw_v = catalog.publish("corpus-raw", pq.read_table(raw), flow_run=flow_run, metadata=metadata)
    rejects_v = catalog.publish("corpus-rejects", pq.read_table(rejects), flow_run=flow_run, metadata=metadata)
    dropped_v = catalog.publish("corpus-dropped", pa.concat_tables([pq.read_table(p) for p in dropped]),
                                parents=[raw_v.ref], flow_run=flow_run, metadata=metadata)
    corpus_v = catalog.publish("corpus", corpus_table(documents), parents=[raw_v.ref, rejects_v.ref],
                               flow_run=flow_run, metadata=metadata)
    return {"corpus": corpus_v.ref, "corpus-dropped": dropped_v.ref, "corpus-rejects": rejects_v.ref, "corpus-raw": raw_v.ref}


@task(cache_policy=CACHE, persist_result=True)
def report_task(documents: str, stats: list[str], dropped: list[str], rejects: str, contamination: dict | None,
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
                           contamination, top_terms=cfg.report_top_terms, toxicity_min_terms=cfg.toxicity_min_terms,
                           title=title)
    return str(path)


@flow(name="corpus")
def corpus_flow(home: str, corpus: dict[str, Any], config_digest: str) -> dict[str, Any]:
    """Llama 2 §2.1: read, clean, deduplicate (exact, then MinHash LSH), audit (A.6), validate, publish."""
    from prefect.runtime import flow_run

    cfg = CorpusConfig(**corpus)
    work = str(Path(home) / "work" / "corpus")
    Path(work).mkdir(parents=True, exist_ok=True)
    code = code_digest()
    sources = list(cfg.sources)
    raw = read_task(sources, [sc.source_fingerprint(s) for s in sources], cfg.max_documents, cfg.max_record_bytes, work, code)
    stages = [clean_task(raw["documents"], corpus, work, code)]
    if cfg.exact_dedup:
        stages.append(exact_dedup_task(stages[-1]["documents"], work, code))
    if cfg.near_dedup:
        sig = signatures_task(stages[-1]["documents"], cfg.minhash_ngram, cfg.num_permutations, cfg.minhash_seed, work, code)
        futures = [bands_task.submit(sig, part, cfg.minhash_rows, cfg.max_bucket_pairs, cfg.dedup_use_ray, work, code)
                   for part in sc.dedup.band_partitions(cfg.minhash_bands, cfg.dedup_band_tasks)]
        candidates = [f.result() for f in futures]
        stages.append(near_dedup_task(stages[-1]["documents"], sig, candidates, cfg.dedup_threshold, cfg.minhash_prefilter, work, code))
    final = stages[-1]["documents"]
    contamination = None
    if cfg.eval_sets:
        contamination = contamination_task(final, list(cfg.eval_sets), [sc.source_fingerprint(s) for s in cfg.eval_sets],
                                           cfg.contamination_ngram, cfg.contamination_clean, cfg.contamination_dirty,
                                           cfg.max_record_bytes, work, code)["summary"]
    validation = validate_task(final, cfg.validation_min_chars, cfg.validation_max_chars,
                               str(Path(work) / f"validation-{Path(final).stem}.json"))
    dropped = [s["dropped"] for s in stages]
    metadata = {"sources": sources, "config_digest": config_digest, "corpus_config": corpus, "code": code}
    refs = publish_task(home, raw["documents"], raw["rejects"], final, dropped, metadata, flow_run.get_id())
    folder = str(Path(home) / "reports" / "corpus" / refs["corpus"].replace("@", "-"))
    report = report_task(final, [s["stats"] for s in stages], dropped, raw["rejects"], contamination, corpus, folder,
                         f"Corpus report: {refs['corpus']}", code)
    stats = [row for s in stages for row in json.loads(Path(s["stats"]).read_text())]
    rejects = Counter(pq.read_table(raw["rejects"], columns=["reason"]).column("reason").to_pylist())
    return {**refs, "documents": pq.read_metadata(final).num_rows, "report": report, "validation": validation,
            "dropped_by_reason": dict(sum((Counter(r["dropped"]) for r in stats), Counter())),
            "rejects_by_reason": dict(rejects), "contamination": contamination, "steps": stats}


def run_corpus(cfg: RunConfig, sources: list[str] | None = None, eval_sets: list[str] | None = None) -> dict[str, Any]:
    """What `alignline corpus` calls: the flow with this run's corpus section (sources/eval sets overridden)."""
    corpus_cfg = cfg.corpus
    if sources:
        corpus_cfg = dataclasses.replace(corpus_cfg, sources=tuple(sources))
    if eval_sets:
        corpus_cfg = dataclasses.replace(corpus_cfg, eval_sets=tuple(eval_sets))
    # Task results (and so the cache) live in the data dir, not ~/.prefect.
    results = Path(cfg.home) / "work" / "prefect-results"
    results.mkdir(parents=True, exist_ok=True)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(corpus_cfg).items()}
    if corpus_cfg.near_dedup and corpus_cfg.dedup_use_ray:
        RunContext(cfg).init_ray()  # band partitions become Ray tasks on the cluster `alignline up` started
    runner = corpus_flow.with_options(result_storage=results, persist_result=True)
    return runner(str(cfg.home), plain, cfg.digest())
