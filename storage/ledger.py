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


class StepLedger:
    def __init__(self, path: Path, steps: Sequence[str], **header: Any):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.steps = tuple(steps)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {**header, "steps": {}}

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def result(self, step: str) -> dict[str, Any]:
        return self.data["steps"][step]

    def record(self, step: str, result: dict[str, Any]) -> None:
        self.data["steps"][step] = result
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.data, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    @property
    def complete(self) -> bool:
        return all(self.done(s) for s in self.steps)
