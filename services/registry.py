"""The MLflow model registry as the platform uses it: the one owner of versions, downloads, reports and promotions.

Every version carries lineage tags (dataset versions, parent models, config
hash, git commit). Aliases: `candidate` is what a recipe produced last,
`champion` is what a reviewer promoted. Evaluation reports are JSON artifacts
of the evaluation run, versioned (`report_format`), pointed at by the
version's `eval.report_uri` tag with their SHA-256 in `eval.report_sha256`:
any length, checked on read. Each promotion is a run of the `promotions`
experiment holding the full record (reviewer, reason, every gate with value
and rule, the previous champion, the gate policy it was judged by); the
history is read back from those runs. A model's gate policy (the thresholds
`promote` applies) is a JSON artifact of a run of the `gate-policies`
experiment, one run per version, pointed at by registered-model tags
(`gates.policy_uri`, `gates.policy_sha256`, `gates.policy_version`).
MLflow's basic auth cannot tell "may create versions" from "may move aliases",
so `promote` is the platform's gate: it records who, when and why; with
`servers.auth` the MLflow server itself (alignline.infra.mlflow_rules) refuses
a `champion` move or a `promotion.*` / `gates.*` tag from any account but a
reviewer's, and `promote` / `set_gate_policy` act as the reviewer they record.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from alignline.storage.faults import fault_point
from alignline.storage.schemas import ModelRef

CANDIDATE = "candidate"
CHAMPION = "champion"
LATEST = "latest"                  # champion, else candidate
REPORT_URI_TAG = "eval.report_uri"
REPORT_DIGEST_TAG = "eval.report_sha256"
REPORT_FORMAT = 1
PROMOTIONS_EXPERIMENT = "promotions"
GATE_POLICY_EXPERIMENT = "gate-policies"
GATE_POLICY_URI_TAG = "gates.policy_uri"          # registered-model tags: the current gate policy's artifact,
GATE_POLICY_DIGEST_TAG = "gates.policy_sha256"    # its SHA-256
GATE_POLICY_VERSION_TAG = "gates.policy_version"  # and its version number (1, 2, ...)
STEP_KEY_TAG = "alignline.step_key"               # version tag: the flow step that registered it (once per step)


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
        return str(ModelRef(self.name, self.version))

    @property
    def parents(self) -> tuple[ModelRef, ...]:
        """The registered models this version was made from (lineage.parents; 'checkpoint:...' entries skipped)."""
        return tuple(ModelRef.parse(p) for p in self.tags.get("lineage.parents", "").split(",") if ModelRef.is_ref(p))

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(d for d in self.tags.get("lineage.datasets", "").split(",") if d)


class RegistryError(RuntimeError):
    pass


def step_key(name: str, step: str, lineage: Lineage) -> str:
    """SHA-256 of the model name, the step and its lineage (git commit aside: a rerun after a fix is the same step)."""
    tags = {k: v for k, v in lineage.tags().items() if k != "lineage.git_commit"}
    blob = json.dumps({"name": name, "step": str(step), "lineage": tags}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


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
                     alias: str | None = CANDIDATE, description: str = "", step: str | None = None) -> ModelVersionInfo:
        """Upload a model folder (HF format) to the run's artifacts and register it as a new version.

        With `step` (what identifies the flow step that made it, e.g. its output folder, keyed on its inputs), once
        per step: a rerun of a step killed after registering, before its ledger entry, gets the version it registered
        (alias set again) instead of a second one.

        A causal LM with a tokenizer is uploaded as an MLflow pyfunc with a chat signature (its HF folder under
        `artifacts/`), so `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` answers chat messages; `download`
        still returns the HF folder inside it. Other folders (reward models, ...) are uploaded as they are."""
        from alignline.services.models.pyfunc import is_chat_model_folder, save_chat_pyfunc
        from alignline.services.tracking import log_dataset_inputs

        key = step_key(name, step, lineage) if step else None
        if key and (found := self.find_step(name, key)) is not None:
            if alias:
                self.client.set_registered_model_alias(name, alias, found.version)
            return self.get(name, found.version)
        if not is_chat_model_folder(local_dir):
            self.client.log_artifacts(run_id, str(local_dir), artifact_path="model")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                packaged = save_chat_pyfunc(local_dir, Path(tmp) / "model")
                self.client.log_artifacts(run_id, str(packaged), artifact_path="model")
        # The catalog versions it was made from, as dataset inputs of the run that made it (MLflow UI: Datasets).
        log_dataset_inputs(self.tracking_uri, run_id, [d for d in lineage.datasets if "@" in d], context="training")
        return self.register_uri(name, f"runs:/{run_id}/model", lineage, run_id, alias, description, key=key)

    def find_step(self, name: str, key: str) -> ModelVersionInfo | None:
        """The version a step registered (its `alignline.step_key` tag), None when it registered none."""
        try:
            found = self.client.search_model_versions(f"name='{name}' and tags.`{STEP_KEY_TAG}` = '{key}'")
        except MlflowException:  # no such registered model yet
            return None
        if not found:
            return None
        first = min(found, key=lambda v: int(v.version))
        self._wait_ready(name, str(first.version))
        return self.get(name, first.version)

    def register_uri(self, name: str, source: str, lineage: Lineage, run_id: str | None,
                     alias: str | None = CANDIDATE, description: str = "", key: str | None = None) -> ModelVersionInfo:
        self._ensure_model(name)
        # MLflow 3 logged models ('models:/m-...') are registered by their model id.
        model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
        tags = {**lineage.tags(), **({STEP_KEY_TAG: key} if key else {})}  # in the create call: no window without it
        mv = self.client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                              description=description or None, model_id=model_id)
        self._wait_ready(name, mv.version)
        fault_point("registry.registered")  # a kill here: the step's rerun finds this version by its step key
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

    def resolve(self, ref: str | ModelRef) -> ModelVersionInfo:
        """'name/version', 'name/champion', 'name/latest' -> the version."""
        ref = ModelRef.parse(ref)
        return self.latest(ref.name) if ref.version == LATEST else self.get(ref.name, ref.version)

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of a registered model, oldest first."""
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted((self.get(name, v.version) for v in found), key=lambda v: int(v.version))

    def lineage(self, name: str, version: str) -> tuple[list[ModelVersionInfo], list[str]]:
        """The version and every registered ancestor (lineage.parents, recursively), and every dataset ref any of
        them records (lineage.datasets): what made this model, all the way down."""
        models, datasets, queue, seen = [], [], [ModelRef(name, str(version))], set()
        while queue:
            ref = queue.pop(0)
            if str(ref) in seen:
                continue
            seen.add(str(ref))
            info = self.get(ref.name, ref.version)
            models.append(info)
            datasets += [d for d in info.datasets if d not in datasets]
            queue += list(info.parents)
        return models, datasets

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models(max_results=1000))

    def describe(self, name: str, description: str, version: str | None = None) -> None:
        """The Markdown description the MLflow UI shows: of a version, or of the registered model."""
        if version is None:
            self.client.update_registered_model(name, description=description)
        else:
            self.client.update_model_version(name, str(version), description=description)

    def set_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))

    def latest(self, name: str, aliases: Iterable[str] = (CHAMPION, CANDIDATE)) -> ModelVersionInfo:
        """The first alias that exists: champion, else candidate (the latest policy)."""
        for alias in aliases:
            try:
                return self.get(name, alias)
            except RegistryError:
                continue
        raise RegistryError(f"model {name!r} has none of the aliases {list(aliases)}")

    def download(self, name: str, version_or_alias: str | int, dest: str | Path) -> tuple[Path, ModelVersionInfo]:
        """(local folder, version info): a version's files materialised once in `dest/<name>/<version>`; the
        folder is the Hugging Face model folder inside the artifacts when there is one. 'latest' = champion, else
        candidate. The one download path: the version's own source (runs:/... or models:/m-...), resolved against
        this registry's server rather than MLflow's process-global URI."""
        import mlflow.artifacts

        info = self.latest(name) if str(version_or_alias) == LATEST else self.get(name, version_or_alias)
        target = Path(dest) / name / info.version
        done = target / ".complete"
        if not done.exists():
            target.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=str(target),
                                                tracking_uri=self.tracking_uri)
            done.touch()
        hf = next((p.parent for p in sorted(target.rglob("config.json"))), target)
        return hf, info

    # -- evaluation reports ------------------------------------------------------------------------
    def store_report(self, name: str, version: str, report: dict[str, Any], run_id: str,
                     artifact_path: str = "report") -> str:
        """Store an evaluation report as a JSON artifact of `run_id` and point the version at it (URI + SHA-256)."""
        blob = json.dumps({"report_format": REPORT_FORMAT, **report}, indent=2, sort_keys=True, default=str).encode()
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "report.json").write_bytes(blob)
            self.client.log_artifact(run_id, str(Path(tmp) / "report.json"), artifact_path=artifact_path)
        uri = f"runs:/{run_id}/{artifact_path}/report.json"
        self.set_tags(name, version, {REPORT_URI_TAG: uri, REPORT_DIGEST_TAG: hashlib.sha256(blob).hexdigest()})
        return uri

    def load_report(self, name: str, version: str) -> dict[str, Any] | None:
        """The version's evaluation report, None when it has none; RegistryError when the artifact does not match
        its recorded digest (changed after it was stored)."""
        import mlflow.artifacts

        tags = self.get(name, version).tags
        if REPORT_URI_TAG not in tags:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(artifact_uri=tags[REPORT_URI_TAG], dst_path=tmp,
                                                       tracking_uri=self.tracking_uri)
            blob = Path(path).read_bytes()
        if hashlib.sha256(blob).hexdigest() != tags.get(REPORT_DIGEST_TAG):
            raise RegistryError(f"the evaluation report of {name}/{version} ({tags[REPORT_URI_TAG]}) does not match its "
                                f"recorded SHA-256: it changed after evaluation; run `alignline evaluate` again")
        report = json.loads(blob)
        report.pop("report_format", None)
        return report

    # -- promotion ---------------------------------------------------------------------
    def promote(self, name: str, version: str | int, reviewer: str, reason: str,
                gates: list[dict[str, Any]] | None = None, override: bool = False,
                gate_policy: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move `champion` to `version`, recording reviewer, reason, every gate, the gate policy they were judged by
        (version and thresholds) and the previous champion in full."""
        from alignline.services.tracking import as_reviewer, tracked_run

        if not reviewer.strip() or not reason.strip():
            raise RegistryError("promotion needs a reviewer and a reason")
        info = self.get(name, version)
        try:
            previous = self.get(name, CHAMPION).version
        except RegistryError:
            previous = None
        record = {"model": name, "version": info.version, "previous": previous, "reviewer": reviewer,
                  "reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "override": override, "gates": gates or [], "gate_policy": gate_policy}
        params = {k: record[k] for k in ("model", "version", "previous", "reviewer", "override")}
        if gate_policy is not None:
            params["gate_policy_version"] = gate_policy.get("version")
        # As the reviewer's own MLflow account when the servers use auth: only reviewers may move `champion`.
        with as_reviewer(reviewer), tracked_run(self.tracking_uri, PROMOTIONS_EXPERIMENT, f"promote {info.ref}",
                                                params) as run_id:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "promotion.json").write_text(json.dumps(record, indent=2, default=str))
                self.client.log_artifact(run_id, str(Path(tmp) / "promotion.json"))
            self.client.set_tag(run_id, "alignline.promoted_model", name)
            self.client.set_registered_model_alias(name, CHAMPION, info.version)
            fault_point("promote.alias_set")  # a kill here: `finish_interrupted_promotion` completes the record
            self.set_tags(name, info.version, {f"promotion.{k}": record[k]
                                               for k in ("reviewer", "reason", "at", "override", "previous")})
            self.set_tags(name, info.version, {"promotion.record_uri": f"runs:/{run_id}/promotion.json"})
        return record

    def finish_interrupted_promotion(self, name: str, version: str | int) -> dict[str, Any] | None:
        """The record of a promotion of `name/version` that moved `champion` but died before its run finished
        (so the history would lack it), completed now: version tags set, run marked FINISHED. None when there is
        none, and `promote` proceeds as usual."""
        exp = self.client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
        try:
            if exp is None or self.get(name, CHAMPION).version != str(version):
                return None
        except RegistryError:
            return None
        runs = self.client.search_runs([exp.experiment_id],
                                       filter_string=f"tags.`alignline.promoted_model` = '{name}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        if not runs or runs[0].info.status == "FINISHED":
            return None
        run_id = runs[0].info.run_id
        try:
            record = json.loads(self._artifact_bytes(f"runs:/{run_id}/promotion.json"))
        except (MlflowException, OSError, ValueError):
            return None  # died before its record was stored: the alias did not move in that run
        if str(record.get("version")) != str(version):
            return None
        self.set_tags(name, str(version), {f"promotion.{k}": record[k]
                                           for k in ("reviewer", "reason", "at", "override", "previous")})
        self.set_tags(name, str(version), {"promotion.record_uri": f"runs:/{run_id}/promotion.json"})
        self.client.set_terminated(run_id, "FINISHED")
        return record

    def promotion_history(self, name: str) -> list[dict[str, Any]]:
        """Every promotion of `name`, oldest first, each record in full."""
        import mlflow.artifacts

        exp = self.client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
        if exp is None:
            return []
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`alignline.promoted_model` = '{name}'",
                                       order_by=["attributes.start_time ASC"], max_results=10_000)
        history = []
        with tempfile.TemporaryDirectory() as tmp:
            for run in runs:
                if run.info.status != "FINISHED":  # a promotion that failed halfway moved nothing for good
                    continue
                path = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run.info.run_id}/promotion.json",
                                                           dst_path=str(Path(tmp) / run.info.run_id),
                                                           tracking_uri=self.tracking_uri)
                history.append(json.loads(Path(path).read_text()))
        return history

    # -- gate policies -------------------------------------------------------------------
    def set_gate_policy(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        """Store `policy` as the next version of `name`'s gate policy (the previous ones stay, each a run of
        `gate-policies`) and point the registered model at it; returns the stored record, `version` added."""
        from alignline.services.tracking import as_reviewer, tracked_run

        if not str(policy.get("set_by", "")).strip():
            raise RegistryError("a gate policy needs the reviewer who sets it")
        self._ensure_model(name)
        version = int(self.client.get_registered_model(name).tags.get(GATE_POLICY_VERSION_TAG, "0")) + 1
        record = {**policy, "model": name, "version": version, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        blob = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
        with as_reviewer(str(policy["set_by"])), tracked_run(self.tracking_uri, GATE_POLICY_EXPERIMENT, f"gates {name} v{version}",
                         {"model": name, "version": version, "set_by": record.get("set_by", "")}) as run_id:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "gate_policy.json").write_bytes(blob)
                self.client.log_artifact(run_id, str(Path(tmp) / "gate_policy.json"))
            self.client.set_tag(run_id, "alignline.gate_policy_model", name)
            tags = {GATE_POLICY_URI_TAG: f"runs:/{run_id}/gate_policy.json",
                    GATE_POLICY_DIGEST_TAG: hashlib.sha256(blob).hexdigest(), GATE_POLICY_VERSION_TAG: str(version)}
            for key, value in tags.items():
                self.client.set_registered_model_tag(name, key, value)
        return record

    def gate_policy(self, name: str) -> dict[str, Any] | None:
        """`name`'s current gate policy record, None when none was ever set; RegistryError when the artifact does not
        match the digest (or version) the registered model records."""
        try:
            tags = self.client.get_registered_model(name).tags
        except MlflowException as e:
            raise RegistryError(f"no registered model {name!r}") from e
        if GATE_POLICY_URI_TAG not in tags:
            return None
        blob = self._artifact_bytes(tags[GATE_POLICY_URI_TAG])
        record = json.loads(blob)
        if (hashlib.sha256(blob).hexdigest() != tags.get(GATE_POLICY_DIGEST_TAG)
                or str(record.get("version")) != tags.get(GATE_POLICY_VERSION_TAG)):
            raise RegistryError(f"the gate policy of {name} ({tags[GATE_POLICY_URI_TAG]}) does not match the SHA-256 "
                                "and version its registered model records: it changed after it was set; a reviewer "
                                "sets it again with `alignline gates set`")
        return record

    def gate_policy_history(self, name: str) -> list[dict[str, Any]]:
        """Every gate policy version of `name`, oldest first, each record in full."""
        exp = self.client.get_experiment_by_name(GATE_POLICY_EXPERIMENT)
        if exp is None:
            return []
        runs = self.client.search_runs([exp.experiment_id],
                                       filter_string=f"tags.`alignline.gate_policy_model` = '{name}'",
                                       order_by=["attributes.start_time ASC"], max_results=10_000)
        records = [json.loads(self._artifact_bytes(f"runs:/{run.info.run_id}/gate_policy.json"))
                   for run in runs if run.info.status == "FINISHED"]
        return sorted(records, key=lambda r: int(r["version"]))

    def fetch_artifact(self, uri: str, dest: str | Path) -> Path:
        """A run artifact (file or folder, 'runs:/...') downloaded under `dest`; RegistryError when it is missing."""
        import mlflow.artifacts

        Path(dest).mkdir(parents=True, exist_ok=True)
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest),
                                                            tracking_uri=self.tracking_uri))
        except (MlflowException, OSError) as e:
            raise RegistryError(f"artifact {uri} cannot be downloaded: {str(e).splitlines()[0][:200]}") from e

    def _artifact_bytes(self, uri: str) -> bytes:
        import mlflow.artifacts

        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=self.tracking_uri)
            return Path(path).read_bytes()
