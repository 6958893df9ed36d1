"""A step ledger: which steps of a long job finished and what they returned, in one JSON file written atomically.

The iterate flow keeps one per iteration and the demo one for its stages, so a
rerun after a crash continues at the step that failed.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .faults import fault_point


class LedgerError(ValueError):
    """A ledger file that is not a ledger (torn by a disk fault, edited by hand): the message names the file."""


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LedgerError(f"step ledger {path} is unreadable ({type(e).__name__}: {str(e)[:120]}); move it "
                          "aside to rerun every step (finished steps reuse their datasets and models)") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
        raise LedgerError(f"step ledger {path} has no 'steps' object; move it aside to rerun every step")
    return data


class StepLedger:
    def __init__(self, path: Path, steps: Sequence[str], **header: Any):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.steps = tuple(steps)
        self.data = _load(self.path) if self.path.exists() else {**header, "steps": {}}

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def result(self, step: str) -> dict[str, Any]:
        return self.data["steps"][step]

    def record(self, step: str, result: dict[str, Any]) -> None:
        self.data["steps"][step] = result
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.data, fh, indent=2, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            fault_point("ledger.written")  # a kill here keeps the old ledger whole: the step reruns
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @property
    def complete(self) -> bool:
        return all(self.done(s) for s in self.steps)
