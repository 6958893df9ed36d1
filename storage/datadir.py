"""The data dir's layout: the one place its folders are named.

Everything a run writes lives under one data dir, so two data dirs never share
a server or a file:

| folder | holds | written by |
|---|---|---|
| `lake/` | the catalog (DuckDB) and dataset versions (Parquet) | `Catalog` |
| `work/<stage>/<key>/` | a stage's scratch: encoded rows, checkpoints, models before registering | flows |
| `work/models/<name>/<version>/` | registered model versions, downloaded once | the registry |
| `work/ray/` | Ray Train run folders | training launches |
| `work/prefect-results/` | persisted Prefect task results (cache across runs) | flows |
| `reports/<kind>/` | corpus, annotation and evaluation reports | flows |
| `iterations/iteration-N.json` | the iterate flow's step ledger | iterate |
| `annotation/` | harvest ledgers | harvest |
| `checkpoints/<name>/` | converted real checkpoints | `alignline checkpoint` |
| `servers/<name>/` | a server's state, pid file and log | `alignline up` |
| `secrets/` (0700) | generated credentials (0600) | `alignline up`, bots |
| `venvs/<name>/` | a server's own virtualenv (Label Studio) | `alignline up` |
| `locks/<name>.lock` | who holds `up`/`down`, harvest, iterate, promote right now | `DataDir.lock` |
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class LockHeld(RuntimeError):
    """Another process holds this data dir's lock for the same work; the message names it."""


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def _dir(self, *parts: str) -> Path:
        if not self.root.exists():
            # 0700: the Label Studio database (with its token) and the catalog (annotator e-mails) live here.
            self.root.mkdir(parents=True, mode=0o700)
            os.chmod(self.root, 0o700)
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def lake(self) -> Path:
        return self._dir("lake")

    def work(self, stage: str, *parts: str) -> Path:
        """Scratch space for a stage (checkpoints, encoded rows, outputs before registering)."""
        return self._dir("work", stage, *parts)

    @property
    def models(self) -> Path:
        """Where registered model versions are downloaded (`<name>/<version>/`)."""
        return self.work("models")

    @property
    def ray_storage(self) -> Path:
        return self.work("ray")

    @property
    def prefect_results(self) -> Path:
        return self.work("prefect-results")

    def reports(self, kind: str) -> Path:
        return self._dir("reports", kind)

    @property
    def iterations(self) -> Path:
        return self._dir("iterations")

    def iteration_ledger(self, iteration: int | str) -> Path:
        return self.iterations / f"iteration-{iteration}.json"

    def harvest_ledger(self, kind: str, project_id: int) -> Path:
        return self._dir("annotation") / f"harvest-ledger-{kind}-{project_id}.json"

    def checkpoint(self, name: str) -> Path:
        """Folder of a converted real checkpoint (not created: the converter writes it)."""
        return self.root / "checkpoints" / name

    def server(self, name: str) -> Path:
        return self._dir("servers", name)

    def pid_file(self, name: str) -> Path:
        return self.server(name) / "server.pid"

    def log_file(self, name: str) -> Path:
        return self.server(name) / "server.log"

    def venv(self, name: str) -> Path:
        return self.root / "venvs" / name

    @property
    def secrets(self) -> Path:
        path = self._dir("secrets")
        os.chmod(path, 0o700)
        return path

    @contextlib.contextmanager
    def lock(self, name: str, wait_s: float = 0.0, poll_s: float = 0.2) -> Iterator[None]:
        """Hold `<home>/locks/<name>.lock` (fcntl, released by the kernel if the holder dies) for the block.

        A second caller waits up to `wait_s`, then gets LockHeld naming the holder (pid, command, since when)."""
        path = self._dir("locks") / f"{name}.lock"
        fh = open(path, "a+")
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        fh.seek(0)
                        holder = fh.read().strip() or "another process"
                        raise LockHeld(f"{name} is already running for {self.root} ({holder}); wait for it to "
                                       "finish, or stop that process") from None
                    time.sleep(poll_s)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]} since "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
            fh.flush()
            yield
        finally:
            fh.close()  # closing releases the lock

    @property
    def ray_temp(self) -> Path:
        # Ray's unix sockets live under its temp dir and must fit in 107 characters,
        # so it cannot sit deep inside the data dir; one short folder per data dir.
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"alignline-ray-{digest}"
