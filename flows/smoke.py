"""`alignline smoke`: touch every real component once and print where to look."""
from __future__ import annotations

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from alignline.config import RunConfig
from alignline.flows.context import RunContext
from alignline.services.registry import Lineage

SMOKE_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="ok" toName="text"><Choice value="ok"/><Choice value="not ok"/></Choices>
</View>"""


@task
def publish_dataset(ctx: RunContext) -> str:
    table = pa.table({"id": ["smoke-1"], "text": ["The assembly line is running."]})
    return ctx.catalog.publish("smoke", table, flow_run=str(flow_run.get_id())).ref


@task
def ray_roundtrip(ctx: RunContext) -> int:
    import ray

    ctx.init_ray()

    @ray.remote
    def square(x: int) -> int:
        return x * x

    return sum(ray.get([square.remote(i) for i in range(4)]))


@task
def register_tiny_model(ctx: RunContext, dataset_ref: str) -> str:
    import mlflow
    import torch

    mlflow.set_tracking_uri(ctx.mlflow_uri)
    mlflow.set_experiment("smoke")
    model = torch.nn.Linear(4, 1)
    with mlflow.start_run(run_name="smoke") as run:
        mlflow.log_metric("smoke", 1.0)
        info = mlflow.pytorch.log_model(model, name="model", input_example=torch.zeros(1, 4).numpy())
        version = ctx.registry.register_uri(
            "smoke-model", info.model_uri, Lineage(datasets=(dataset_ref,), config_hash=ctx.cfg.digest(), method="smoke"),
            run_id=run.info.run_id)
    return version.ref


@task
def label_studio_roundtrip(ctx: RunContext) -> tuple[int, int]:
    from alignline.annotation import connect, ensure_project, import_tasks, iter_tasks

    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    project = ensure_project(client, "alignline smoke", SMOKE_CONFIG)
    import_tasks(client, project, [{"text": "The assembly line is running."}])
    return project, sum(1 for _ in iter_tasks(client, project))


@flow(name="smoke", log_prints=True)
def smoke_flow(cfg: RunConfig) -> dict[str, str]:
    logger = get_run_logger()
    ctx = RunContext(cfg)
    dataset = publish_dataset(ctx)
    ray_sum = ray_roundtrip(ctx)
    model = register_tiny_model(ctx, dataset)
    project, n_tasks = label_studio_roundtrip(ctx)
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
