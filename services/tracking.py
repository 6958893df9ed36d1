"""Per-step metrics to an MLflow run (any tracking URI: http://, sqlite:///, file:)."""
from __future__ import annotations

import time
from typing import Any


class MetricsLogger:
    """Logs to an existing run (created by the caller, who also registers the model on it)."""

    def __init__(self, tracking_uri: str | None, run_id: str | None, label: str = "train"):
        self.label = label
        self.client = None
        self.run_id = run_id
        if tracking_uri and run_id:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri=tracking_uri)

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
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def start_run(tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any]) -> str:
    """Create an MLflow run and log its params; returns the run id (workers log metrics to it)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name)
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status=status)
