"""Run one recipe loop in this process or on N Ray Train workers (DDP or FSDP: gloo on CPU, NCCL on GPUs).

The loop is the same function either way. It asks its `WorkerContext` for rank,
world size and device, reports metrics and checkpoints through it, and asks it
for a checkpoint to resume from (Ray restores one after a worker failure, or
when the same run name is launched again on the same storage).

Multi-node: the job's input files travel through Ray's object store (the job
names them in `INPUTS`, see storage.py), checkpoints go to the run storage
(a local folder or `s3://...`), and a worker on another node than the driver
keeps its scratch (checkpoints before upload, outputs) on its own disk; rank 0
uploads the outputs named in `OUTPUTS` and the driver fetches them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist

from alignline.services.tracking import training_system_metrics

from . import sharding as sh
from . import storage as st

Sharding = Literal["none", "fsdp"]
Placement = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


@dataclass(frozen=True)
class LaunchOptions:
    use_ray: bool = False
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = ""     # Ray Train run storage: a folder or s3://bucket/prefix; required with use_ray
    name: str = "train"        # Ray Train run name
    max_failures: int = 0      # Ray restarts the workers from the last reported checkpoint this many times
    sharding: Sharding = "none"               # "fsdp": parameters, gradients and optimizer state sharded (FSDP2)
    placement_strategy: Placement = "PACK"    # STRICT_SPREAD: one worker per node
    storage_endpoint: str = ""                # S3-compatible endpoint for an s3:// storage_path ("" = AWS)
    ship_inputs: bool = True                  # send the job's INPUTS through the object store to other nodes


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    under_ray: bool = False
    last_metrics: dict[str, Any] = field(default_factory=dict)
    sharding: Sharding = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.sharding == "fsdp" and self.world_size > 1

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP: shard the model in place. Call before building the optimizer (it must see the sharded
        parameters); a no-op otherwise."""
        return sh.shard_model(model) if self.sharded else model

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP when there is more than one worker: gradients are averaged across ranks in backward.
        An FSDP-sharded model already reduces its gradients (averaged, as DDP does): returned as is."""
        if self.world_size == 1 or sh.is_sharded(model):
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def all_reduce_sum(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None) -> None:
        """Every rank calls this at the same steps (under Ray it is a barrier). Ranks that pass a checkpoint
        folder have it uploaded into the same checkpoint in run storage (rank 0 alone with DDP; every rank its
        own shards with FSDP)."""
        self.last_metrics = dict(metrics)
        if self.under_ray:
            import ray.train

            ckpt = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
            ray.train.report(metrics, checkpoint=ckpt)

    def restored_checkpoint(self) -> Path | None:
        """The checkpoint Ray hands back after restarting failed workers or relaunching a run of the same name
        (downloaded from run storage; None when starting fresh)."""
        if not self.under_ray:
            return None
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt is not None else None

    # Checkpoints and the final model, whole (rank 0) or sharded (every rank): recipes call these.
    def latest_checkpoint(self, root: str | Path | None) -> Path | None:
        return sh.latest_checkpoint(root)

    def save_checkpoint(self, root: str | Path, step: int, model: torch.nn.Module, optimizer, scheduler,
                        extra: dict[str, Any] | None = None) -> Path | None:
        """The folder this rank reports (None on ranks that hold nothing to upload)."""
        if sh.is_sharded(model):
            return sh.save_sharded_checkpoint(root, step, model, optimizer, scheduler, self.rank, extra)
        from .checkpoint import save_checkpoint

        return save_checkpoint(root, step, model, optimizer, scheduler, extra=extra) if self.is_main else None

    def load_checkpoint(self, folder: str | Path, model: torch.nn.Module, optimizer, scheduler) -> int:
        return sh.load_any_checkpoint(folder, model, optimizer, scheduler, self.rank)

    def checkpoint_extra(self, folder: str | Path | None) -> dict[str, Any]:
        return sh.checkpoint_extra(folder)

    def full_model(self, model: torch.nn.Module,
                   build: Callable[[], torch.nn.Module] | None = None) -> torch.nn.Module | None:
        """The whole model on rank 0 (gathered from the shards under FSDP: every rank must call; `build` makes the
        empty copy when the class cannot be built from `model.config`), else None."""
        if sh.is_sharded(model):
            return sh.gather_full_model(model, self.is_main, build)
        return model if self.is_main else None


def _ray_context(sharding: Sharding) -> WorkerContext:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    return WorkerContext(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                         device=ray.train.torch.get_device(), under_ray=True, sharding=sharding)


def _localize(job: Any, config: dict) -> tuple[Any, dict[str, str]]:
    """On a node other than the driver's: inputs landed from the object store, scratch folders on this node.
    Returns the job this worker runs and {output field: node-local folder} to upload."""
    import ray

    if ray.get_runtime_context().get_node_id() == config["driver_node"]:
        return job, {}
    cache = st.node_cache_root()
    if set(config["shipped"]) != set(_inputs(job)):
        raise RuntimeError(f"a worker of {config['name']} runs on another node than the driver, but the job's inputs "
                           "were not shipped (LaunchOptions.ship_inputs is off): it cannot read the driver's files")
    for name, item in config["shipped"].items():
        job = _replace(job, name, st.land(item, cache / "inputs"))
    outputs = {name: str(cache / "outputs" / config["name"] / name) for name in getattr(job, "OUTPUTS", ())}
    scratch = {"checkpoint_dir": str(cache / "checkpoints" / config["name"])} if getattr(job, "checkpoint_dir", None) else {}
    return dataclasses.replace(job, **scratch, **outputs), outputs


def _inputs(job: Any) -> dict[str, str]:
    """{name: path} of the job's INPUTS; a dotted name reaches into a field ('make_scorer.helpful_dir'), and one
    the job does not have (a scorer that is not built from folders) is skipped."""
    found = {}
    for name in getattr(job, "INPUTS", ()):
        value = job
        for part in name.split("."):
            value = getattr(value, part, None)
        if isinstance(value, str) and value:
            found[name] = value
    return found


def _replace(obj: Any, dotted: str, value: str) -> Any:
    head, _, rest = dotted.partition(".")
    return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value) if rest else value})


def _ray_entry(config: dict) -> None:
    import ray

    # Ray hands each worker its share of the node's CPUs; keep torch inside it so workers don't oversubscribe.
    torch.set_num_threads(config["threads"])
    ctx = _ray_context(config["sharding"])
    nodes = [ray.get_runtime_context().get_node_id()]
    if ctx.world_size > 1:  # where each rank ran, for the summary (placement is checked, not assumed)
        nodes = [None] * ctx.world_size
        dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    job, outputs = _localize(config["job"], config)
    with training_system_metrics(job, under_ray=True):  # MLflow system metrics on the job's run
        summary = config["fn"](job, ctx)
    if ctx.is_main:  # Result.metrics holds only checkpointed reports: hand the loop's return value over storage
        fs, base = st.run_filesystem(config["storage_path"], config["storage_endpoint"])
        for name, local in outputs.items():
            st.upload_dir(local, fs, f"{base}/{config['name']}/outputs/{name}")
        summary["worker_nodes"] = nodes
        summary["landed_inputs"] = sorted(config["shipped"]) if outputs else []
        summary["uploaded_outputs"] = sorted(outputs)
        st.write_text(fs, f"{base}/{config['name']}/summary.json", json.dumps(summary, default=str))


def launch(loop: Callable[[Any, WorkerContext], dict], job: Any, opts: LaunchOptions) -> dict[str, Any]:
    """Run `loop(job, ctx)` and return its final metrics (rank 0's)."""
    if not opts.use_ray:
        device = torch.device("cuda" if opts.use_gpu else "cpu")
        with training_system_metrics(job):
            return loop(job, WorkerContext(device=device))
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not opts.storage_path:
        raise ValueError("LaunchOptions.storage_path is required under Ray Train (the default is ~/ray_results)")
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(logging_level="WARNING")
    fs, base = st.run_filesystem(opts.storage_path, opts.storage_endpoint)
    summary_path = f"{base}/{opts.name}/summary.json"
    st.delete_file(fs, summary_path)
    # Inputs go into the object store only when another node may run a worker (a 7B folder is not copied for nothing).
    multi_node = sum(1 for n in ray.nodes() if n["Alive"]) > 1
    shipped = {name: st.ship(path) for name, path in _inputs(job).items()} if opts.ship_inputs and multi_node else {}
    resources = {"CPU": opts.cpus_per_worker, **({"GPU": 1} if opts.use_gpu else {})}
    trainer = TorchTrainer(
        _ray_entry,
        train_loop_config={"fn": loop, "job": job, "threads": max(1, int(opts.cpus_per_worker)),
                           "sharding": opts.sharding, "shipped": shipped, "name": opts.name,
                           "driver_node": ray.get_runtime_context().get_node_id(),
                           "storage_path": opts.storage_path, "storage_endpoint": opts.storage_endpoint},
        torch_config=TorchConfig(backend="nccl" if opts.use_gpu else "gloo"),
        # On a 2-CPU machine whole-CPU workers can starve Ray's own actors: cpus_per_worker may be fractional.
        scaling_config=ScalingConfig(num_workers=opts.num_workers, use_gpu=opts.use_gpu, resources_per_worker=resources,
                                     placement_strategy=opts.placement_strategy),
        run_config=RunConfig(storage_path=base, storage_filesystem=fs, name=opts.name,
                             failure_config=FailureConfig(max_failures=opts.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    trainer.fit()
    summary = json.loads(st.read_text(fs, summary_path))
    for name in summary.get("uploaded_outputs", []):  # written on another node: fetched into the asked-for path
        st.download_dir(fs, f"{base}/{opts.name}/outputs/{name}", getattr(job, name))
        if summary.get(name):
            summary[name] = getattr(job, name)
    return summary
