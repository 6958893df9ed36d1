"""MLflow runs, the one way the platform opens, logs to and closes them (any tracking URI: http://, sqlite:///).

`tracked_run` is the block every flow step that trains or evaluates runs in: it
creates the run with its params and ends it FINISHED, or FAILED when the block
raises (then re-raises). Workers log per-step metrics with `MetricsLogger` to a
run the flow created. Nothing here touches MLflow's process-global tracking URI.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class MetricsLogger:
    """Logs to an existing run (created by the caller, who also registers the model on it)."""

    def __init__(self, tracking_uri: str | None, run_id: str | None, label: str = "train"):
        self.label = label
        self.client = None
        self.run_id = run_id
        if tracking_uri and run_id:
            self.client = _client(tracking_uri)

    def log(self, step: int, metrics: dict[str, float], total_steps: int | None = None) -> None:
        # One progress line per logged step: Ray forwards worker stdout to the driver,
        # so long recipes show where they are without opening MLflow.
        if self.run_id is None:  # other DDP ranks and untracked runs stay quiet
            return
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"[{self.label}] step {step}{f'/{total_steps}' if total_steps else ''} {shown}", flush=True)
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])


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
    """An MLflow run around a block: yields its id; FINISHED when the block returns, FAILED when it raises."""
    run_id = start_run(tracking_uri, experiment, run_name, params or {})
    try:
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
