"""`alignline smoke`: touch every real component once and print where to look."""
from __future__ import annotations

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from alignline.config import RunConfig
from alignline.flows.context import RunContext, label_studio_token
from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import log_metrics, tracked_run
from alignline.storage import Catalog

SMOKE_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="ok" toName="text"><Choice value="ok"/><Choice value="not ok"/></Choices>
</View>"""


@task
def publish_dataset(lake: str) -> str:
    table = pa.table({"id": ["smoke-1"], "text": ["The assembly line is running."]})
    return Catalog(lake).publish("smoke", table, flow_run=str(flow_run.get_id())).ref


@task
def ray_roundtrip() -> int:
    import ray

    @ray.remote
    def square(x: int) -> int:
        return x * x

    return sum(ray.get([square.remote(i) for i in range(4)]))


@task
def register_tiny_model(mlflow_uri: str, dataset_ref: str, config_hash: str) -> str:
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as folder, tracked_run(mlflow_uri, "smoke", "smoke") as run_id:
        log_metrics(mlflow_uri, run_id, {"smoke": 1.0})
        torch.save(torch.nn.Linear(4, 1).state_dict(), f"{folder}/linear.pt")
        version = Registry(mlflow_uri).register_dir(
            "smoke-model", folder, Lineage(datasets=(dataset_ref,), config_hash=config_hash, method="smoke"), run_id)
    return version.ref


@task
def label_studio_roundtrip(ls_url: str, home: str) -> tuple[int, int]:
    from alignline.annotation import connect, ensure_project, import_tasks, iter_tasks

    client = connect(ls_url, label_studio_token(home))
    project = ensure_project(client, "alignline smoke", SMOKE_CONFIG)
    import_tasks(client, project, [{"text": "The assembly line is running."}])
    return project, sum(1 for _ in iter_tasks(client, project))


@flow(name="smoke", log_prints=True)
def smoke_flow(cfg: RunConfig) -> dict[str, str]:
    logger = get_run_logger()
    ctx = RunContext(cfg)
    dataset = publish_dataset(str(ctx.data.lake))
    ctx.init_ray()
    ray_sum = ray_roundtrip()
    model = register_tiny_model(ctx.mlflow_uri, dataset, cfg.digest())
    project, n_tasks = label_studio_roundtrip(ctx.label_studio_url, str(cfg.home))
    s = cfg.servers
    result = {
        "dataset": dataset, "ray_task_result": str(ray_sum), "registered_model": f"{model} (alias candidate)",
        "label_studio_tasks": str(n_tasks),
        "label_studio_ui": f"{ctx.label_studio_url}/projects/{project}",
        "mlflow_ui": f"{ctx.mlflow_uri}/#/models/smoke-model",
        "prefect_ui": f"{s.url(s.prefect_port)}/runs/flow-run/{flow_run.get_id()}",
        "ray_dashboard": s.url(s.ray_dashboard_port),
    }
    logger.info("smoke: %s", result)
    return result
