"""FSDP for the recipes (`*.sharding = "fsdp"`): torch FSDP2 `fully_shard`, sharded checkpoints that resume exactly.

Each decoder layer is one FSDP unit, then the root (embeddings, final norm, head):
a rank keeps 1/world of every parameter, gradient and AdamW moment; a layer's
parameters are all-gathered just before its forward and backward and freed
after, and gradients are reduce-scattered (averaged over ranks, as DDP does).
Works on CPU with gloo (checked with torch 2.13) and on GPUs with NCCL.

Checkpoints are torch.distributed.checkpoint (DCP) folders: every rank writes its
own shards (`__<rank>_0.distcp`), rank 0 the `.metadata`, and every rank its small
state (step, scheduler, RNG, extra) as `rank_<r>.pt` with a digest of its files.
Written under `.tmp-step_N`, promoted to `step_N` under a file lock (so ranks
sharing a filesystem promote once), older ones pruned. Under Ray every rank
reports its folder and Ray Train merges them into one checkpoint in run storage.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.fsdp import FSDPModule, fully_shard

from . import checkpoint as whole

METADATA = ".metadata"


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def refuse_lora(section: str, lora_rank: int, sharding: str) -> None:
    """FSDP shards full training only: LoRA adapters inside sharded blocks would need their own merge on the gathered
    model, so `<section>.sharding = "fsdp"` with `model.lora_rank > 0` is a ConfigError (SFT, reward model, PPO)."""
    from alignline.config.fields import ConfigError

    if sharding == "fsdp" and lora_rank:
        raise ConfigError(f"{section}.sharding = 'fsdp' is not allowed with model.lora_rank = {lora_rank}; "
                          f"allowed: model.lora_rank = 0 (full training), or {section}.sharding = 'none' with LoRA")


def shard_model(model: torch.nn.Module, frozen: bool = False) -> torch.nn.Module:
    """Shard in place: every `*DecoderLayer` is its own unit, the root holds the rest (embeddings, final norm, the
    LM, value or scalar head). Build the optimizer after. FSDP2 keeps a root's parameters gathered from forward to
    backward; a `frozen` model (PPO's reference policy, the reward models) has no backward, so its root reshards
    right after each forward too. Every rank must then make the same number of forward calls (collectives)."""
    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module)
    fully_shard(model, reshard_after_forward=True if frozen else None)
    return model


def _digest(folder: Path, rank: int) -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.name.startswith((f"__{rank}_", f"rank_{rank}."))
                       and not p.name.endswith(".sha256")):
        with open(folder / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def is_sharded_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / METADATA).is_file()


def verified(folder: str | Path) -> bool:
    """Complete: the DCP metadata is there and every rank's files match the digest that rank recorded."""
    folder = Path(folder)
    digests = sorted(folder.glob("rank_*.sha256"))
    return (folder / METADATA).is_file() and bool(digests) and all(
        d.read_text().strip() == _digest(folder, int(d.stem.split("_")[1])) for d in digests)


def latest_checkpoint(root: str | Path | None) -> Path | None:
    """The newest checkpoint in `root` that verifies, whole (checkpoint.py) or sharded."""
    if root is None or not Path(root).is_dir():
        return None
    for folder in sorted(Path(root).glob("step_*"), reverse=True):
        if verified(folder) if is_sharded_checkpoint(folder) else whole.verified(folder):
            return folder
        whole.log.warning("checkpoint %s is incomplete or corrupt: falling back to an older one", folder)
    return None


def save_sharded_checkpoint(root: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                            scheduler: Any, rank: int, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Every rank calls this (collective). Returns this rank's view of `root/step_XXXXXXX`."""
    root = Path(root)
    final, tmp = root / f"step_{step:07d}", root / f".tmp-step_{step:07d}"
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)    # a half-written copy from a killed run
    dist.barrier()                            # ... removed everywhere before anyone writes
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save({"step": step, "scheduler": scheduler.state_dict(), "rng": whole._rng_state(), "extra": extra or {}},
               tmp / f"rank_{rank}.pt")
    (tmp / f"rank_{rank}.sha256").write_text(_digest(tmp, rank))
    dist.barrier()                            # every rank's files are in
    with open(root / ".promote.lock", "w") as lock:  # ranks sharing this filesystem promote once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tmp.exists():
            if final.exists():
                old = root / f".old-{final.name}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        for stale in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    dist.barrier()
    return final


def load_sharded_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                            scheduler: Any, rank: int) -> int:
    """Every rank calls this (collective). DCP reshards on load, so a different world size also loads; the
    RNG state is restored only when this rank saved one."""
    folder = Path(folder)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    own = folder / f"rank_{rank}.pt"
    small = torch.load(own if own.exists() else folder / "rank_0.pt", map_location="cpu", weights_only=True)
    scheduler.load_state_dict(small["scheduler"])
    if own.exists():
        whole._set_rng_state(small["rng"])
    return int(small["step"])


def load_any_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                        rank: int) -> int:
    """A sharded checkpoint into a sharded model; a whole one (checkpoint.py) into a whole model."""
    sharded_ckpt, sharded_model = is_sharded_checkpoint(folder), is_sharded(model)
    if sharded_ckpt != sharded_model:
        raise ValueError(f"checkpoint {folder} is {'sharded' if sharded_ckpt else 'whole'} but the model is "
                         f"{'sharded' if sharded_model else 'whole'}: resume with the sharding the run was started with")
    if sharded_ckpt:
        return load_sharded_checkpoint(folder, model, optimizer, scheduler, rank)
    return whole.load_checkpoint(folder, model, optimizer, scheduler)


def checkpoint_extra(folder: str | Path | None) -> dict[str, Any]:
    if folder is not None and is_sharded_checkpoint(folder):
        return torch.load(Path(folder) / "rank_0.pt", map_location="cpu", weights_only=True).get("extra", {})
    return whole.checkpoint_extra(folder)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every rank calls this (collective all-gather): the whole state dict on CPU, on rank 0 only (empty elsewhere)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gather_full_model(model: torch.nn.Module, is_main: bool,
                      build: Callable[[], torch.nn.Module] | None = None) -> torch.nn.Module | None:
    """Every rank calls this (collective all-gather). Rank 0 gets an unsharded copy of the module (full weights on
    CPU; built by `build`, else the same class from `model.config`) to save; the others None."""
    full = full_state_dict(model)
    if not is_main:
        return None
    if build is None:
        cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))  # FSDP2 subclasses the class
        copy = cls(model.config)
    else:
        copy = build()
    copy.load_state_dict(full)
    return copy
