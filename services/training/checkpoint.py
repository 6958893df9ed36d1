"""Resumable training state: weights, optimizer, scheduler, RNG and data position in one folder per step.

The data order is a pure function of (seed, step) (see packing.step_rows), so the
optimizer step counter is the data position: a resumed run reads exactly the
batches the killed run would have read next.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write `root/step_XXXXXXX/state.pt` atomically (temp folder, then rename); keep the newest `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    state = {"step": step, "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": _rng_state(), "extra": extra or {}}
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path | None) -> Path | None:
    if root is None or not Path(root).is_dir():
        return None
    done = [p for p in sorted(Path(root).glob("step_*")) if (p / STATE_FILE).is_file()]
    return done[-1] if done else None


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> int:
    """Restore everything in place; returns the number of optimizer steps already taken."""
    state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def checkpoint_extra(folder: str | Path | None) -> dict[str, Any]:
    """The `extra` a checkpoint was saved with (recipes keep their running summary there, so a
    rerun of a finished job still reports its final metrics)."""
    if folder is None:
        return {}
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False).get("extra", {})


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
