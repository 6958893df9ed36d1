"""Resumable training state: weights, optimizer, scheduler, RNG and data position in one folder per step.

The data order is a pure function of (seed, step) (see packing.step_rows), so the
optimizer step counter is the data position: a resumed run reads exactly the
batches the killed run would have read next.

Durable: the state is written to a temp folder with its SHA-256 beside it,
fsynced, renamed into place, and only then are older checkpoints removed. On
read the digest is checked, and `latest_checkpoint` falls back to the newest
checkpoint that verifies (a torn or corrupt newest one is skipped, not fatal).
Loads are `weights_only` (tensors and plain values, no pickled code).
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignline.storage.faults import fault_point

STATE_FILE = "state.pt"
DIGEST_FILE = "state.sha256"
log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verified(folder: Path) -> bool:
    """True when the checkpoint's state file is complete and matches its recorded digest."""
    state, digest = folder / STATE_FILE, folder / DIGEST_FILE
    return state.is_file() and digest.is_file() and digest.read_text().strip() == _sha256(state)


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write `root/step_XXXXXXX/state.pt` atomically (temp folder, then rename); keep the newest `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    state = {"step": step, "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": _rng_state(), "extra": extra or {}}
    try:
        torch.save(state, tmp / STATE_FILE)
        (tmp / DIGEST_FILE).write_text(_sha256(tmp / STATE_FILE))
        for path in (tmp / STATE_FILE, tmp / DIGEST_FILE, tmp):
            _fsync(path)
    except (OSError, RuntimeError) as e:  # disk full: torch raises RuntimeError from its writer; leave no temp folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"cannot save checkpoint step {step} to {root}: {str(e).splitlines()[0][:200]}") from e
    fault_point("checkpoint.written")  # a kill here leaves only a temp folder: the newest verified step is kept
    if final.exists():  # the same step saved again (a rerun): the old copy goes only once the new one is complete
        old = root / f".old-{final.name}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync(root)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path | None) -> Path | None:
    """The newest checkpoint whose state verifies against its digest; a corrupt newer one is skipped (logged)."""
    if root is None or not Path(root).is_dir():
        return None
    for folder in sorted(Path(root).glob("step_*"), reverse=True):
        if verified(folder):
            return folder
        log.warning("checkpoint %s is incomplete or corrupt (digest mismatch): falling back to an older one", folder)
    return None


def _load_state(folder: str | Path) -> dict[str, Any]:
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> int:
    """Restore everything in place; returns the number of optimizer steps already taken."""
    state = _load_state(folder)
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
    return _load_state(folder).get("extra", {})


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def _rng_state() -> dict[str, Any]:
    # numpy's state holds an ndarray, which a weights_only load refuses: stored as a tensor and plain values.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
