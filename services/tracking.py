"""MLflow runs, the one way the platform opens, logs to and closes them (any tracking URI: http://, sqlite:///).

`tracked_run` is the block every flow step that trains or evaluates runs in: it
creates the run with its params and ends it FINISHED, or FAILED when the block
raises (then re-raises). Workers log per-step metrics with `MetricsLogger` to a
run the flow created. Nothing here touches MLflow's process-global tracking URI.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

DATASET_SOURCE_TYPE = "alignline-catalog"
_CONTENT_REF = re.compile(r"^[A-Za-z0-9][\w.\-]*@[0-9a-f]{16}$")  # 'name@version': catalog versions are content ids
# MLflow's own default; its MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL environment variable overrides it.
SYSTEM_METRICS_INTERVAL_S = 10.0


def _client(tracking_uri: str):
    # Credentials: MLflow reads MLFLOW_TRACKING_USERNAME / _PASSWORD on every request (set for the pipeline by
    # `alignline.infra.auth`, inherited by Ray workers from the head node); never in the URI, params or tags.
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


_CRED_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_identity_lock = threading.RLock()
_reviewer_login: Callable[[str], tuple[str, str] | None] | None = None


@contextlib.contextmanager
def acting_as(username: str, password: str) -> Iterator[str]:
    """MLflow calls of this process inside the block authenticate as `username` (the previous identity after).

    Process-wide (MLflow reads the environment per request): promotions hold the promote lock and run alone."""
    with _identity_lock:
        before = {k: os.environ.get(k) for k in _CRED_VARS}
        os.environ.update(dict(zip(_CRED_VARS, (username, password))))
        try:
            yield username
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def set_reviewer_login(resolve: Callable[[str], tuple[str, str] | None] | None) -> None:
    """How `as_reviewer` finds a reviewer's credentials (registered by the flows when the servers use auth)."""
    global _reviewer_login
    _reviewer_login = resolve


@contextlib.contextmanager
def as_reviewer(reviewer: str) -> Iterator[None]:
    """Act as the named reviewer when this process can log in as them (already does, or the registered lookup
    knows their password); else as the process's own identity, and the server decides (mlflow_rules)."""
    if os.environ.get(_CRED_VARS[0]) == reviewer or _reviewer_login is None:
        yield
        return
    creds = _reviewer_login(reviewer)
    if creds is None:
        yield
        return
    with acting_as(*creds):
        yield


class MetricsLogger:
    """Logs to an existing run (created by the caller, who also registers the model on it)."""

    def __init__(self, tracking_uri: str | None, run_id: str | None, label: str = "train"):
        self.label = label
        self.client = None
        self.run_id = run_id
        self.progress = None
        if tracking_uri and run_id:
            self.client = _client(tracking_uri)

    def log(self, step: int, metrics: dict[str, float], total_steps: int | None = None) -> None:
        # Progress (services/progress.py): a bar on a terminal, else one line per logged step, so long recipes
        # show where they are without opening MLflow. Only the rank that logs shows it.
        if self.run_id is None:  # other DDP ranks and untracked runs stay quiet
            return
        self.show(step, metrics, total_steps)
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def show(self, step: int, metrics: dict[str, float], total_steps: int | None = None) -> None:
        from alignline.services.progress import Progress

        if self.progress is None:
            self.progress = Progress(self.label, total_steps, "step")
        self.progress.total = total_steps or self.progress.total
        self.progress.update(step, **metrics)
        if self.progress.total and step >= self.progress.total:  # the last step: the bar is done
            self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None


def start_run(tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any]) -> str:
    """Create an MLflow run and log its params; returns the run id (workers log metrics to it)."""
    from mlflow.entities import Param

    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name)
    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(tracking_uri).set_terminated(run_id, status=status)


@contextlib.contextmanager
def tracked_run(tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any] | None = None) -> Iterator[str]:
    """An MLflow run around a block: yields its id; FINISHED when the block returns, FAILED when it raises.

    Every catalog version named in `params` (a 'name@<content id>' value, or a list of them) is logged as a dataset
    input of the run (see `log_dataset_inputs`), so the MLflow UI shows what each run read."""
    run_id = start_run(tracking_uri, experiment, run_name, params or {})
    try:
        log_dataset_inputs(tracking_uri, run_id, dataset_refs_in(params or {}), context="input")
        yield run_id
    except BaseException:
        end_run(tracking_uri, run_id, "FAILED")
        raise
    end_run(tracking_uri, run_id)


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Numeric values only (None and non-numbers are skipped: MLflow metrics are floats)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    client = _client(tracking_uri)
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])


def log_artifact(tracking_uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    _client(tracking_uri).log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_artifacts(tracking_uri: str, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
    _client(tracking_uri).log_artifacts(run_id, str(folder), artifact_path=artifact_path)


def dataset_refs_in(params: dict[str, Any]) -> list[str]:
    """The catalog refs ('name@<16-hex content id>') among param values, alone or in lists, in order, once each."""
    found: list[str] = []
    for value in params.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and _CONTENT_REF.match(item.strip()) and item.strip() not in found:
                found.append(item.strip())
    return found


def log_dataset_inputs(tracking_uri: str, run_id: str, datasets: Iterable[Any], context: str = "training") -> int:
    """Record catalog versions as MLflow dataset inputs of a run: name, digest (the content id), source, and with a
    `DatasetVersion` its Parquet path, rows and schema. `datasets`: refs ('name@version') or DatasetVersions.
    Returns how many were logged."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from alignline.storage.schemas import DatasetRef

    inputs = []
    for d in datasets:
        if isinstance(d, str):
            try:
                ref = DatasetRef.parse(d)
            except ValueError:  # not a catalog ref (lineage may name other things): nothing to record
                continue
            source, schema, profile = {"catalog_ref": str(ref)}, None, None
        else:  # a catalog DatasetVersion
            ref = DatasetRef(d.name, d.version)
            source = {"catalog_ref": str(ref), "uri": str(d.path)}
            schema, profile = json.dumps({"arrow": d.schema}), json.dumps({"num_rows": d.num_rows})
        dataset = Dataset(name=ref.name, digest=ref.version, source_type=DATASET_SOURCE_TYPE,
                          source=json.dumps(source), schema=schema, profile=profile)
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context),
                                                  InputTag("alignline.dataset_ref", str(ref))]))
    if inputs:
        _client(tracking_uri).log_inputs(run_id, datasets=inputs)
    return len(inputs)


@contextlib.contextmanager
def system_metrics(tracking_uri: str | None, run_id: str | None, node_id: str | None = None,
                   interval_s: float = SYSTEM_METRICS_INTERVAL_S) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network, GPU: `system/...`) on `run_id` while the block runs,
    sampled every `interval_s`, plus one sample at the end so even a short run has them. No-op without a run."""
    if not tracking_uri or not run_id:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, node_id=node_id, tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        try:  # the loop drops a partial interval on shutdown: log where the run ended
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception:  # noqa: BLE001 (metrics about the machine must never fail a training run)
            pass


def training_system_metrics(job: Any, under_ray: bool = False):
    """`system_metrics` for a training job (anything with `tracking_uri` and `run_id`): from one worker per node (its
    first); across several nodes each logs under `system/node<N>/...`. A job without a run logs none."""
    uri, run_id, node = getattr(job, "tracking_uri", None), getattr(job, "run_id", None), None
    if under_ray:
        import ray.train

        tc = ray.train.get_context()
        if tc.get_local_rank() != 0:
            uri = run_id = None
        elif tc.get_world_size() > tc.get_local_world_size():
            node = f"node{tc.get_node_rank()}"
    return system_metrics(uri, run_id, node_id=node)
