"""What a run read and what it ran on, against the real MLflow server: catalog versions as dataset inputs (from
params and from a registered model's lineage) and MLflow system metrics on training runs (issue 17.2)."""
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pytest

from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import dataset_refs_in, log_dataset_inputs, tracked_run
from alignline.services.training.launch import LaunchOptions, launch
from alignline.storage import Catalog

REF = "sft-default@0123456789abcdef"


def test_only_content_addressed_catalog_refs_count_as_inputs():
    params = {"data": REF, "parent": "base/3", "sets": [REF, "prompts-eval@fedcba9876543210"], "lr": 1e-5,
              "latest": "sft@latest", "url": "http://x@0123456789abcdef/"}
    assert dataset_refs_in(params) == [REF, "prompts-eval@fedcba9876543210"]


def _inputs(uri, run_id):
    run = Registry(uri).client.get_run(run_id)
    return {(d.dataset.name, d.dataset.digest): {t.key: t.value for t in d.tags} for d in run.inputs.dataset_inputs}


@pytest.mark.integration
def test_runs_record_the_catalog_versions_they_read(servers, tmp_path):
    uri = servers.servers.url(servers.servers.mlflow_port)
    # fresh content: MLflow keeps one dataset per experiment, name and digest (the first source logged)
    version = Catalog(tmp_path / "lake").publish("sft-tiny", pa.table({"x": [uuid.uuid4().hex] * 3}))
    with tracked_run(uri, "tracking-tests", "reads", {"data": REF}) as run_id:
        assert log_dataset_inputs(uri, run_id, [version], context="evaluation") == 1
    seen = _inputs(uri, run_id)
    assert seen[("sft-default", "0123456789abcdef")]["mlflow.data.context"] == "input"
    assert seen[("sft-tiny", version.version)]["alignline.dataset_ref"] == version.ref
    dataset = next(d.dataset for d in Registry(uri).client.get_run(run_id).inputs.dataset_inputs if d.dataset.name == "sft-tiny")
    assert str(version.path) in dataset.source and '"num_rows": 3' in dataset.profile
    # a registered model's lineage datasets become inputs of the run that made it
    folder = tmp_path / "rm"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with tracked_run(uri, "tracking-tests", "register") as run_id:
        Registry(uri).register_dir(f"rm-{uuid.uuid4().hex[:6]}", folder,
                                   Lineage(datasets=(version.ref, "comparisons@89abcdef01234567"), method="reward"), run_id)
    assert set(_inputs(uri, run_id)) == {("sft-tiny", version.version), ("comparisons", "89abcdef01234567")}


@dataclass(frozen=True)
class _Job:
    tracking_uri: str
    run_id: str


@pytest.mark.integration
def test_training_launches_log_system_metrics(servers):
    uri = servers.servers.url(servers.servers.mlflow_port)
    with tracked_run(uri, "tracking-tests", "train") as run_id:
        out = launch(lambda job, ctx: {"rank": ctx.rank}, _Job(uri, run_id), LaunchOptions())
    metrics = Registry(uri).client.get_run(run_id).data.metrics
    assert out == {"rank": 0}
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
