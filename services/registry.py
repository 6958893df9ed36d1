"""The MLflow model registry as the platform uses it.

Every version carries lineage tags (dataset versions, parent models, config
hash, git commit). Aliases: `candidate` is what a recipe produced last,
`champion` is what a reviewer promoted; the previous champion is kept in the
promotion history (a registered-model tag) and on the version's own tags.
MLflow's basic auth cannot tell "may create versions" from "may move aliases",
so `promote` is the platform's gate: it records who, when and why.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CANDIDATE = "candidate"
CHAMPION = "champion"
_HISTORY_TAG = "alignline.promotion_history"


@dataclass(frozen=True)
class Lineage:
    """What a model version was made from; stored as `lineage.*` tags."""
    datasets: tuple[str, ...] = ()        # 'name@version' catalog refs
    parents: tuple[str, ...] = ()         # 'model/version' registry refs
    config_hash: str = ""
    method: str = ""                      # pretrain, sft, reward, rejection_sampling, ppo, ...
    extra: dict[str, str] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        tags = {"lineage.datasets": ",".join(self.datasets), "lineage.parents": ",".join(self.parents),
                "lineage.config_hash": self.config_hash, "lineage.method": self.method,
                "lineage.git_commit": git_commit()}
        tags.update({f"lineage.{k}": str(v) for k, v in self.extra.items()})
        return tags


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


class RegistryError(RuntimeError):
    pass


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


class Registry:
    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- registering -------------------------------------------------------------
    def register_dir(self, name: str, local_dir: str | Path, lineage: Lineage, run_id: str,
                     alias: str | None = CANDIDATE, description: str = "") -> ModelVersionInfo:
        """Upload a model folder (HF format) to the run's artifacts and register it as a new version."""
        self.client.log_artifacts(run_id, str(local_dir), artifact_path="model")
        return self.register_uri(name, f"runs:/{run_id}/model", lineage, run_id, alias, description)

    def register_uri(self, name: str, source: str, lineage: Lineage, run_id: str | None,
                     alias: str | None = CANDIDATE, description: str = "") -> ModelVersionInfo:
        self._ensure_model(name)
        # MLflow 3 logged models ('models:/m-...') are registered by their model id.
        model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
        mv = self.client.create_model_version(name, source=source, run_id=run_id, tags=lineage.tags(),
                                              description=description or None, model_id=model_id)
        self._wait_ready(name, mv.version)
        if alias:
            self.client.set_registered_model_alias(name, alias, mv.version)
        return self.get(name, mv.version)

    def _ensure_model(self, name: str) -> None:
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name)
            except MlflowException as e:  # created concurrently
                if "already exists" not in str(e).lower():
                    raise

    def _wait_ready(self, name: str, version: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.client.get_model_version(name, version).status == "READY":
                return
            time.sleep(0.2)
        raise RegistryError(f"model {name}/{version} did not become READY in {timeout_s}s")

    # -- reading -------------------------------------------------------------------
    def get(self, name: str, version_or_alias: str | int) -> ModelVersionInfo:
        key = str(version_or_alias)
        try:
            mv = (self.client.get_model_version(name, key) if key.isdigit()
                  else self.client.get_model_version_by_alias(name, key))
        except MlflowException as e:
            raise RegistryError(f"model {name!r} has no version or alias {key!r}") from e
        return ModelVersionInfo(name=mv.name, version=str(mv.version), source=mv.source, run_id=mv.run_id,
                                tags=dict(mv.tags), aliases=tuple(getattr(mv, "aliases", ()) or ()))

    def latest(self, name: str, aliases: Iterable[str] = (CHAMPION, CANDIDATE)) -> ModelVersionInfo:
        """The first alias that exists: champion, else candidate (the latest policy)."""
        for alias in aliases:
            try:
                return self.get(name, alias)
            except RegistryError:
                continue
        raise RegistryError(f"model {name!r} has none of the aliases {list(aliases)}")

    def download(self, name: str, version_or_alias: str | int, dest: str | Path) -> Path:
        """Materialise a version's files in `dest/<name>/<version>` (cached)."""
        import mlflow.artifacts

        info = self.get(name, version_or_alias)
        target = Path(dest) / name / info.version
        done = target / ".complete"
        if not done.exists():
            target.mkdir(parents=True, exist_ok=True)
            # The version's own source (runs:/... or models:/m-...), resolved against
            # this registry's server rather than the process-global registry URI.
            mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=str(target),
                                                tracking_uri=self.tracking_uri)
            done.touch()
        return target

    # -- promotion ---------------------------------------------------------------------
    def promote(self, name: str, version: str | int, reviewer: str, reason: str,
                gates: dict[str, Any] | None = None, override: bool = False) -> dict[str, Any]:
        """Move `champion` to `version`, recording reviewer, reason, gate results and the previous champion."""
        if not reviewer.strip() or not reason.strip():
            raise RegistryError("promotion needs a reviewer and a reason")
        info = self.get(name, version)
        try:
            previous = self.get(name, CHAMPION).version
        except RegistryError:
            previous = None
        record = {"version": info.version, "previous": previous, "reviewer": reviewer, "reason": reason,
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "override": override,
                  "gates": gates or {}}
        self.client.set_registered_model_alias(name, CHAMPION, info.version)
        for key in ("reviewer", "reason", "at", "override", "previous"):
            self.client.set_model_version_tag(name, info.version, f"promotion.{key}", str(record[key]))
        if gates:
            self.client.set_model_version_tag(name, info.version, "promotion.gates", json.dumps(gates)[:4900])
        history = self.promotion_history(name) + [record]
        # MLflow tag values are capped (5000 chars): keep the newest records that fit.
        while history and len(json.dumps(history)) > 4900:
            history.pop(0)
        self.client.set_registered_model_tag(name, _HISTORY_TAG, json.dumps(history))
        return record

    def promotion_history(self, name: str) -> list[dict[str, Any]]:
        tags = self.client.get_registered_model(name).tags or {}
        return json.loads(tags.get(_HISTORY_TAG, "[]"))
