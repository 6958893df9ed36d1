"""`alignline smoke` end to end against the real servers."""
import pytest
import requests

from alignline.flows.cli import main
from tests.conftest import TEST_SERVER_OVERRIDES, prefect_api_auth

pytestmark = pytest.mark.integration


def test_smoke_flow_touches_everything(prefect_server):
    from alignline.flows.smoke import smoke_flow

    result = smoke_flow(prefect_server)
    assert result["dataset"].startswith("smoke@")
    assert result["ray_task_result"] == "14"
    assert result["registered_model"].startswith("smoke-model/")
    assert int(result["label_studio_tasks"]) == 1  # a rerun imports nothing new
    for key in ("label_studio_ui", "mlflow_ui", "prefect_ui", "ray_dashboard"):
        assert result[key].startswith("http://127.0.0.1:")
    # the flow run is recorded by the real Prefect server
    run_id = result["prefect_ui"].rsplit("/", 1)[1]
    api = f"{prefect_server.servers.url(prefect_server.servers.prefect_port)}/api/flow_runs/{run_id}"
    assert requests.get(api, timeout=10, auth=prefect_api_auth(prefect_server)).json()["state"]["type"] == "COMPLETED"


def test_cli_status_reports_four_healthy(servers, capsys, monkeypatch):
    monkeypatch.setenv("ALIGNLINE_HOME", str(servers.home))
    args = [f"--set={o}" for o in TEST_SERVER_OVERRIDES]
    assert main(["status", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["label-studio", "mlflow", "prefect", "ray"]
    assert all(" healthy " in line for line in lines[:4]) and lines[4] == ""  # then datasets, models, iterations


def test_cli_config_error_is_one_clear_line(capsys):
    assert main(["config", "--set", "sft.learning_rate=-1"]) == 2
    assert "sft.learning_rate = -1.0 is not allowed; allowed: > 0" in capsys.readouterr().err


@pytest.mark.integration
def test_attaching_to_another_data_dirs_ray_cluster_is_refused(ray_cluster, tmp_path):
    """A process attached to one cluster must not quietly run another config's Ray work there."""
    import os

    import ray

    from alignline.config import load_config
    from alignline.flows.context import RunContext

    RunContext(ray_cluster).init_ray()  # the same head again: fine
    address = os.environ["RAY_ADDRESS"]
    other = load_config(overrides=["servers.ray_port=26999"], home=tmp_path)
    with pytest.raises(RuntimeError, match=r"attached to the Ray cluster at 127\.0\.0\.1:\d+, but the config's head is "
                                           r"127\.0\.0\.1:26999"):
        RunContext(other).init_ray()
    assert ray.is_initialized() and os.environ["RAY_ADDRESS"] == address  # nothing switched
