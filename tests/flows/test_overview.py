"""`alignline status`: servers, datasets with rows and lineage, models with aliases, iteration steps."""
import json

import pyarrow as pa

from alignline.config import load_config
from alignline.flows.cli import main
from alignline.services.registry import Lineage, Registry
from alignline.services.tracking import tracked_run
from alignline.storage import Catalog, DataDir
from alignline.storage.ledger import StepLedger
from tests.conftest import TEST_SERVER_OVERRIDES


def test_status_json_lists_datasets_models_and_iterations(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    home = tmp_path / "home"
    catalog = Catalog(DataDir(home).lake)
    parent = catalog.publish("prompts-default", pa.table({"x": [1, 2, 3]})).ref
    catalog.publish("preference-tasks-safety", pa.table({"y": [1]}), parents=[parent])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    registry = Registry(uri)
    with tracked_run(uri, "sft", "x") as run_id:
        registry.register_dir("policy", tmp_path / "m", Lineage(method="sft"), run_id)
    ledger = StepLedger(DataDir(home).iteration_ledger(1), ("collect", "annotate"), iteration=1)
    ledger.record("collect", {"imported": 4})
    demo = StepLedger(DataDir(home).iteration_ledger("demo-smollm2-135m"), ("corpus", "sft"), iteration="demo-smollm2-135m")
    demo.record("corpus", {"documents": 9, "stage_seconds": 52.0})

    args = [f"--set={o}" for o in (*TEST_SERVER_OVERRIDES, f"servers.mlflow_uri={uri}")]
    rc = main(["status", "--json", "--home", str(home), *args])
    seen = json.loads(capsys.readouterr().out)
    assert rc == 1 and {s["name"] for s in seen["servers"]} == {"label-studio", "mlflow", "prefect", "ray"}
    tasks = next(d for d in seen["datasets"] if d["name"] == "preference-tasks-safety")
    assert tasks["rows"] == 1 and tasks["parents"] == [parent] and tasks["versions"] == 1
    assert seen["models"] == [{"name": "policy", "versions": 1, "aliases": {"candidate": "1"}, "latest": "policy/1",
                               "latest_method": "sft"}]
    it, chat_demo = sorted(seen["iterations"], key=lambda i: str(i["iteration"]))
    assert it["iteration"] == 1 and it["steps"]["collect"] == "done" and it["steps"]["wait"] == "pending"
    # a demo's ledger shows the demo's stages and their seconds, not an iteration's steps
    assert chat_demo["steps"] == {"corpus": "done"} and chat_demo["seconds"] == {"corpus": 52}
    assert load_config().servers.mlflow_uri == ""  # the default still means this data dir's own server
