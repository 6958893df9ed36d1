"""Credentials a data dir keeps (folders are named by `alignline.storage.DataDir`).

Secrets are JSON files created with mode 0600 in the data dir's 0700 `secrets/` folder: never world-readable,
never in argv or logs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from alignline.storage import DataDir


def write_secret(home: Path, name: str, values: dict[str, str]) -> Path:
    """Credentials as JSON with mode 0600 (created with that mode: never world-readable)."""
    path = DataDir(home).secrets / f"{name}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    os.chmod(path, 0o600)
    return path


def read_secret(home: Path, name: str) -> dict[str, str]:
    path = DataDir(home).secrets / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no credentials at {path}: run `alignline up` first")
    return json.loads(path.read_text())
