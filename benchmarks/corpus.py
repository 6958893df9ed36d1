"""End-to-end corpus cleaning benchmark: alignline's pipeline vs datatrove's equivalent one, scaling
over Ray workers, and near-dedup memory per million documents.

Same documents for both (real text the `local` source finds: man pages, /usr/share/doc, docstrings):
  alignline: normalize -> language -> Gopher quality -> Gopher repetition -> C4 -> PII (per shard: in
    process, or one Ray task per shard), then exact dedup and MinHash near dedup (signatures per shard,
    bands in process, exact-Jaccard verification). What flows/corpus.py runs, without Prefect.
  datatrove 0.10.1, 1 worker: in-memory reader -> GopherQualityFilter -> GopherRepetitionFilter ->
    C4QualityFilter -> PIIFormatter -> JsonlWriter, then MinhashDedupSignature / Buckets / Cluster /
    Filter (20 x 6, 5-grams, as ours), documents read back from its JSONL between stages (its design).
    Its word tokenizer is a plain split (its default English one needs spacy and is ~6x slower,
    shared/INTEGRATION.md). It has no language step (its LanguageFilter downloads a fastText model):
    alignline does more work per document.
--million: near dedup alone on 1,000,000 synthetic documents (random words drawn Zipf-like from the
  real documents' vocabulary, lengths from the real length distribution, 5% of them shifted copies of
  another, i.e. near duplicates): peak RSS above the start (texts already in memory) and seconds.

    python benchmarks/corpus.py [--docs 20000] [--workers 1,2] [--skip-datatrove] [--million]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dedup import PeakRSS, datatrove_split_tokenizer  # noqa: E402  (same memory sampler, same tokenizer)

from alignline.config.corpus import CorpusConfig  # noqa: E402
from alignline.flows.corpus import ShardedSketch, map_shards, near_dedup_settings  # noqa: E402
from alignline.storage import corpus as sc  # noqa: E402


def local_documents(n: int) -> list[sc.Document]:
    docs, _ = sc.read_sources(["local"], n, 1_000_000)
    return docs


def run_alignline(docs: list[sc.Document], cfg: CorpusConfig, use_ray: bool) -> tuple[int, dict[str, float]]:
    """(documents kept, seconds per stage): the flow's stages without Prefect."""
    times = {}
    t0 = time.perf_counter()
    table = sc.documents_to_table(docs)
    shards = [(table.slice(lo, hi - lo), cfg) for lo, hi in sc.shard_bounds(table.num_rows, cfg.shards)]
    kept, stats, _ = sc.merge_shards(map_shards(sc.clean_shard, shards, use_ray, cfg.ray_task_cpus))
    times["clean (wall)"] = time.perf_counter() - t0
    for s in stats:
        times[f"  {s.step} (summed over shards)"] = s.seconds
    t = time.perf_counter()
    after, exact_stats, _ = sc.run_steps([sc.ExactDedup()], sc.documents_from_table(kept))
    times["exact_dedup"] = time.perf_counter() - t
    t = time.perf_counter()
    near = sc.NearDedup(**near_dedup_settings(cfg), sketcher=ShardedSketch(cfg.shards, use_ray, cfg.ray_task_cpus))
    final, near_stats, _ = sc.run_steps([near], after)
    times["near_dedup"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    return len(final), times


def run_datatrove(docs: list[sc.Document], workdir: Path) -> tuple[int, dict[str, float]]:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from loguru import logger
    import xxhash

    logger.disable("datatrove")
    tok = datatrove_split_tokenizer()
    cfg = MinhashConfig(n_grams=5, num_buckets=20, hashes_per_bucket=6)
    times = {}

    def stage(name, pipeline, tasks=1):
        t = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(workdir / f"log-{name}")).run()
        times[name] = time.perf_counter() - t

    t0 = time.perf_counter()
    items = [Document(text=d.text, id=d.id) for d in docs]
    stage("filters", [items, GopherQualityFilter(language=tok), GopherRepetitionFilter(language=tok),
                      C4QualityFilter(language=tok), PIIFormatter(), JsonlWriter(str(workdir / "clean"))])
    signature = MinhashDedupSignature(output_folder=str(workdir / "sigs"), config=cfg, language=tok)
    signature._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode())  # datatrove 0.10.1 passes str (see dedup.py)
    stage("minhash signatures", [JsonlReader(str(workdir / "clean")), signature])
    stage("minhash buckets", [MinhashDedupBuckets(str(workdir / "sigs"), str(workdir / "buckets"), config=cfg)], tasks=20)
    stage("minhash cluster", [MinhashDedupCluster(str(workdir / "buckets"), str(workdir / "remove"), config=cfg)])
    stage("minhash filter", [JsonlReader(str(workdir / "clean")), MinhashDedupFilter(str(workdir / "remove")),
                             JsonlWriter(str(workdir / "final"))])
    times["total"] = time.perf_counter() - t0
    kept = sum(1 for f in (workdir / "final").glob("*.jsonl.gz") for _ in __import__("gzip").open(f))
    return kept, times


def synthetic_corpus(n: int, real: list[str], seed: int = 0, copy_share: float = 0.05, max_words: int = 600) -> list[str]:
    """`n` documents of random words (Zipf-like over the real vocabulary, real lengths cut to 30..`max_words`); `copy_share`
    of them are another document shifted by a few words (a near duplicate, Jaccard ~0.95)."""
    rng = np.random.default_rng(seed)
    vocab = sorted({w for t in real[:5000] for w in t.split() if len(w) <= 20})
    lengths = np.clip(np.array([len(t.split()) for t in real]), 30, max_words)
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    texts: list[str] = []
    while len(texts) < n:
        lens = rng.choice(lengths, size=min(20_000, n - len(texts)))
        ids = rng.choice(len(vocab), size=int(lens.sum()) + 10, p=weights)
        stream = [vocab[i] for i in ids.tolist()]
        offsets = np.concatenate(([0], np.cumsum(lens)))
        for k in range(lens.size):
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            if texts and rng.random() < copy_share:      # a shifted copy of an earlier document
                src = texts[int(rng.integers(len(texts)))].split(" ")
                shift = int(rng.integers(1, 4))
                texts.append(" ".join(src[shift:] + stream[lo:lo + shift]))
            else:
                texts.append(" ".join(stream[lo:hi]))
    return texts


def million(real: list[str], n: int) -> None:
    t = time.perf_counter()
    texts = synthetic_corpus(n, real)
    print(f"\nnear dedup memory: {n:,} synthetic documents, {sum(map(len, texts)) / 2**30:.2f} GiB of text, "
          f"{sum(t.count(' ') + 1 for t in texts) / n:.0f} words/doc, "
          f"built in {time.perf_counter() - t:.0f}s")
    cfg = CorpusConfig()
    settings = {k: v for k, v in near_dedup_settings(cfg).items() if k != "band_tasks"}
    with PeakRSS() as m:
        result = sc.near_duplicates(texts, **settings, band_tasks=1)
    print(f"near dedup of {n:,} docs: {m.seconds:.0f}s ({n / m.seconds:,.0f} docs/s), peak RSS above start "
          f"{m.mb:,.0f} MB = {m.mb / n * 1e6:,.0f} MB per 1M documents; removed {int(result.drop.sum()):,}; {result.stats}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--workers", default="1,2", help="Ray worker counts for the scaling rows")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--million", action="store_true", help="also measure near dedup on 1M synthetic documents")
    ap.add_argument("--million-docs", type=int, default=1_000_000)
    args = ap.parse_args()
    os.environ.setdefault("DATATROVE_DISABLE_PROGRESS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t = time.perf_counter()
    docs = local_documents(args.docs)
    n = len(docs)
    print(f"corpus: {n:,} real local documents, {sum(len(d.text.split()) for d in docs):,} words "
          f"(read in {time.perf_counter() - t:.0f}s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cfg = CorpusConfig(shards=args.shards, ray_task_cpus=1.0)
    rows = []

    def fresh():
        return [sc.Document(d.id, d.text, d.source, d.url, dict(d.metadata)) for d in docs]

    kept, times = run_alignline(fresh(), cfg, use_ray=False)
    rows.append(("alignline, in process (1 core)", 1, kept, times))
    for workers in [int(w) for w in args.workers.split(",") if w]:
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        run_alignline(fresh()[:200], cfg, use_ray=True)   # warm-up: start the workers, import the steps
        kept, times = run_alignline(fresh(), cfg, use_ray=True)
        ray.shutdown()
        rows.append((f"alignline, Ray, {workers} worker(s)", workers, kept, times))
    if not args.skip_datatrove:
        with tempfile.TemporaryDirectory() as tmp:
            kept, times = run_datatrove(fresh(), Path(tmp))
        rows.append(("datatrove 0.10.1, 1 worker", 1, kept, times))

    print(f"\nend to end, {n:,} documents ({args.shards} shards for alignline)")
    print(f"{'pipeline':<36} {'cores':>5} {'kept':>7} {'seconds':>8} {'docs/s':>8} {'docs/s/core':>11}")
    for name, cores, kept, times in rows:
        print(f"{name:<36} {cores:>5} {kept:>7,} {times['total']:8.1f} {n / times['total']:8,.0f} {n / times['total'] / cores:11,.0f}")
    for name, _, _, times in rows:
        print(f"\n{name}: " + ", ".join(f"{k.strip()} {v:.1f}s" for k, v in times.items() if k != "total"))
    base = rows[0][3]["total"]
    ray_rows = [r for r in rows if "Ray" in r[0]]
    if len(ray_rows) >= 2:
        (_, w1, _, t1), (_, w2, _, t2) = ray_rows[0], ray_rows[-1]
        print(f"\nscaling {w1} -> {w2} workers: end to end {t1['total'] / t2['total']:.2f}x, "
              f"cleaning stage {t1['clean (wall)'] / t2['clean (wall)']:.2f}x")
    dt = [r for r in rows if r[0].startswith("datatrove")]
    if dt:
        print(f"alignline in process vs datatrove, docs/s per core: {dt[0][3]['total'] / base:.2f}x")
    if args.million:
        million([d.text for d in docs], args.million_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
