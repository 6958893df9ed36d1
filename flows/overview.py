"""What ran, in one place (`alignline status`): servers, the latest datasets with rows and lineage, the
registered models with aliases, and each iteration's steps. Reads only; starts nothing."""
from __future__ import annotations

import json
from typing import Any

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.flows.iteration import STEPS


def overview(cfg: RunConfig) -> dict[str, Any]:
    from alignline.infra import status

    ctx = RunContext(cfg)
    servers = [{"name": s.name, "url": s.url, "healthy": s.healthy, "pid": s.pid} for s in status(cfg)]
    out: dict[str, Any] = {"home": str(cfg.home), "servers": servers, "datasets": [], "models": [], "iterations": []}
    if (cfg.home / "lake" / "catalog.duckdb").exists():
        catalog = ctx.catalog
        for name in catalog.names():
            latest = catalog.get(name)
            out["datasets"].append({"name": name, "latest": latest.ref, "rows": latest.num_rows,
                                    "versions": len(catalog.versions(name)), "parents": list(latest.parents),
                                    "created_at": latest.created_at})
    if next((s for s in servers if s["name"] == "mlflow"), {}).get("healthy") or cfg.servers.mlflow_uri:
        registry = ctx.registry
        for name in registry.model_names():
            versions = registry.versions(name)
            out["models"].append({"name": name, "versions": len(versions),
                                  "aliases": {a: v.version for v in versions for a in v.aliases},
                                  "latest": versions[-1].ref if versions else None,
                                  "latest_method": versions[-1].tags.get("lineage.method") if versions else None})
    folder = cfg.home / "iterations"
    for path in sorted(folder.glob("iteration-*.json")) if folder.is_dir() else []:
        data = json.loads(path.read_text())
        steps = data.get("steps", {})
        # A demo's ledger (iteration-demo, iteration-demo-<model>) records the demo's own stages, not an iteration's
        names = tuple(steps) if path.stem.startswith("iteration-demo") else STEPS
        out["iterations"].append({"iteration": data.get("iteration", path.stem.removeprefix("iteration-")),
                                  "steps": {s: ("done" if s in steps else "pending") for s in names},
                                  "seconds": {s: round(r.get("stage_seconds", 0.0)) for s, r in steps.items()
                                              if isinstance(r, dict) and "stage_seconds" in r}})
    return out
