"""Generated evaluation answers kept on disk, so a version's seeded answers to one prompt set are made once.

Every evaluation compares a candidate with the champion on the same held-out prompts with the same seeded sampling,
so the champion's answers do not change between evaluations; on a CPU they are most of an evaluation's time. The
key covers what fixes the answers: the model name, version and the run that made it (a recreated registry with the
same version number has another run), the dialogues and the sampling parameters. A torn or mismatched file is a miss.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence


class AnswerCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @staticmethod
    def key(info: Any, dialogues: Sequence[Sequence[dict]], params: Any) -> str:
        """`info`: the registry's ModelVersionInfo; `params`: the SamplingParams dataclass."""
        body = json.dumps({"model": info.name, "version": info.version, "run_id": info.run_id, "source": info.source,
                           "dialogues": dialogues, "params": dataclasses.asdict(params)}, sort_keys=True)
        return f"{info.name}-{info.version}-{hashlib.sha256(body.encode()).hexdigest()[:32]}"

    def get(self, key: str, count: int) -> list[str] | None:
        try:
            answers = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(answers, list) and len(answers) == count and all(isinstance(a, str) for a in answers)
        return answers if ok else None

    def put(self, key: str, answers: Sequence[str]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.json"
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(list(answers)), encoding="utf-8")
        os.replace(tmp, path)
        return path
