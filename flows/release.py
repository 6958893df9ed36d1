"""Release flow: a registered policy version -> one release folder and archive (services/release.py).

CLI: `alignline release MODEL VERSION --dest DIR [--allow-candidate]` (plus --preset/--config/--set/--home);
`[release]` in the config names the license, the acceptable-use policy templates and the GGUF export.
"""
from __future__ import annotations

import tempfile

from prefect import flow, task

from alignline.config import RunConfig
from alignline.config.release import ReleaseConfig
from alignline.flows.context import RunContext
from alignline.services.registry import Registry
from alignline.services.release import ReleaseError, ReleaseInputs, build, gather, preflight

SERVER_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}


def _server_trouble(task, task_run, state) -> bool:
    """Retry what a server hiccup broke, never a refusal (not the champion, no report): it would only repeat."""
    return not isinstance(state.result(raise_on_failure=False), ReleaseError)


@task(**SERVER_RETRIES, retry_condition_fn=_server_trouble)
def gather_release(mlflow_uri: str, name: str, version: str, work: str, models_dir: str, allow_candidate: bool) -> ReleaseInputs:
    return gather(Registry(mlflow_uri), name, version, work, allow_candidate, models_dir)


@task
def build_release(inputs: ReleaseInputs, release: ReleaseConfig, dest: str, allow_candidate: bool) -> dict:
    return build(inputs, release, dest, allow_candidate)


@flow(name="release")
def release_flow(cfg: RunConfig, name: str, version: str, dest: str, allow_candidate: bool = False) -> dict:
    ctx = RunContext(cfg)
    with tempfile.TemporaryDirectory(dir=ctx.data.work("release")) as work:
        inputs = gather_release(ctx.mlflow_uri, name, version, work, str(ctx.data.models), allow_candidate)
        out = build_release(inputs, cfg.release, dest, allow_candidate)
    manifest = out["manifest"]
    return {"model": manifest["model"], "folder": out["folder"], "archive": out["archive"],
            "files": len(manifest["files"]), "champion": manifest["champion"], "gguf": manifest["gguf"],
            "reused": out["reused"]}


def run_release(cfg: RunConfig, name: str, version: str, dest: str, allow_candidate: bool = False) -> dict:
    """What `alignline release` calls: the folder, archive, file count and GGUF outcome. A version that cannot be
    released is refused (ReleaseError, one line with the fix) before the flow starts."""
    preflight(RunContext(cfg).registry, name, str(version), allow_candidate)
    return release_flow(cfg, name, str(version), dest, allow_candidate)
