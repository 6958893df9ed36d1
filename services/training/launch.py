"""Run one recipe loop in this process or on N Ray Train workers (DDP: gloo on CPU, NCCL on GPUs).

The loop is the same function either way. It asks its `WorkerContext` for rank,
world size and device, reports metrics and checkpoints through it, and asks it
for a checkpoint to resume from (Ray restores one after a worker failure).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class LaunchOptions:
    use_ray: bool = False
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = ""     # Ray Train run folder (RunConfig.storage_path); required with use_ray
    name: str = "train"        # Ray Train run name
    max_failures: int = 0      # Ray restarts the workers from the last reported checkpoint this many times


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    under_ray: bool = False
    last_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP when there is more than one worker: gradients are averaged across ranks in backward."""
        if self.world_size == 1:
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
        """Every rank calls this at the same steps (under Ray it is a barrier); rank 0 passes the checkpoint."""
        self.last_metrics = dict(metrics)
        if self.under_ray:
            import ray.train

            ckpt = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint and self.is_main else None
            ray.train.report(metrics, checkpoint=ckpt)

    def restored_checkpoint(self) -> Path | None:
        """The checkpoint Ray hands back after restarting failed workers (None when starting fresh)."""
        if not self.under_ray:
            return None
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt is not None else None


def _ray_context() -> WorkerContext:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    return WorkerContext(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                         device=ray.train.torch.get_device(), under_ray=True)


def _ray_entry(config: dict) -> None:
    # Ray hands each worker its share of the node's CPUs; keep torch inside it so workers don't oversubscribe.
    torch.set_num_threads(config["threads"])
    ctx = _ray_context()
    summary = config["fn"](config["job"], ctx)
    if ctx.is_main:  # Result.metrics holds only checkpointed reports: hand the loop's return value over a file
        Path(config["summary_path"]).write_text(json.dumps(summary, default=str))


def launch(loop: Callable[[Any, WorkerContext], dict], job: Any, opts: LaunchOptions) -> dict[str, Any]:
    """Run `loop(job, ctx)` and return its final metrics (rank 0's)."""
    if not opts.use_ray:
        device = torch.device("cuda" if opts.use_gpu else "cpu")
        return loop(job, WorkerContext(device=device))
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not opts.storage_path:
        raise ValueError("LaunchOptions.storage_path is required under Ray Train (the default is ~/ray_results)")
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(logging_level="WARNING")
    summary_path = Path(opts.storage_path) / opts.name / "summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.unlink(missing_ok=True)
    resources = {"CPU": opts.cpus_per_worker, **({"GPU": 1} if opts.use_gpu else {})}
    trainer = TorchTrainer(
        _ray_entry,
        train_loop_config={"fn": loop, "job": job, "threads": max(1, int(opts.cpus_per_worker)),
                           "summary_path": str(summary_path)},
        torch_config=TorchConfig(backend="nccl" if opts.use_gpu else "gloo"),
        # On a 2-CPU machine whole-CPU workers can starve Ray's own actors: cpus_per_worker may be fractional.
        scaling_config=ScalingConfig(num_workers=opts.num_workers, use_gpu=opts.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(storage_path=str(opts.storage_path), name=opts.name,
                             failure_config=FailureConfig(max_failures=opts.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    trainer.fit()
    return json.loads(summary_path.read_text())
