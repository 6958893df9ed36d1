"""Credentials a data dir keeps (folders are named by `alignline.storage.DataDir`).

Secrets are JSON files created with mode 0600 in the data dir's 0700 `secrets/` folder: never world-readable,
never in argv or logs.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from alignline.storage import DataDir


def write_secret(home: Path, name: str, values: dict[str, str]) -> Path:
    """Credentials as JSON with mode 0600, written atomically: a temp file created 0600, fsynced, renamed over."""
    folder = DataDir(home).secrets
    path = folder / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_secret(home: Path, name: str) -> dict[str, str]:
    path = DataDir(home).secrets / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no credentials at {path}: run `alignline up` first")
    return json.loads(path.read_text())
