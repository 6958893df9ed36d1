"""A resolved run config written back as TOML that `load_config(file=...)` reads to the same config.

`alignline up` hands its config to the `serve` process this way, and `serve` to the flow runs it starts from the
Prefect UI, so a run started from the UI uses the same servers, data dir and settings as the command line.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable

from . import SECTIONS, RunConfig


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else "nan" if math.isnan(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def dump_toml(cfg: RunConfig, sections: Iterable[str] | None = None, with_preset: bool = True) -> str:
    """`sections` (default: all) with every field; fields set to None are left out (their default is None)."""
    plain = cfg.to_dict()
    lines = [f"preset = {_literal(cfg.preset)}"] if with_preset else []
    for name in sections or SECTIONS:
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_literal(value)}" for key, value in plain[name].items() if value is not None]
    return "\n".join(lines) + "\n"
