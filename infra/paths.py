"""Where a data dir keeps server state, logs, secrets and virtualenvs.

Everything a run writes lives under one data dir, so two data dirs never share
a server: each has its own ports (from its config), databases and pid files.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def server_dir(home: Path, name: str) -> Path:
    path = home / "servers" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def pid_file(home: Path, name: str) -> Path:
    return server_dir(home, name) / "server.pid"


def log_file(home: Path, name: str) -> Path:
    return server_dir(home, name) / "server.log"


def venv_dir(home: Path, name: str) -> Path:
    return home / "venvs" / name


def ray_temp_dir(home: Path) -> Path:
    # Ray's unix sockets live under its temp dir and must fit in 107 characters,
    # so it cannot sit deep inside the data dir; one short folder per data dir.
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"alignline-ray-{digest}"


def secrets_dir(home: Path) -> Path:
    path = home / "secrets"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_secret(home: Path, name: str, values: dict[str, str]) -> Path:
    """Credentials as JSON with mode 0600 (created with that mode: never world-readable)."""
    path = secrets_dir(home) / f"{name}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    os.chmod(path, 0o600)
    return path


def read_secret(home: Path, name: str) -> dict[str, str]:
    path = secrets_dir(home) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no credentials at {path}: run `alignline up` first")
    return json.loads(path.read_text())
