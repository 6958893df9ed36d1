"""Prefect as the engineers' console: deployments with typed forms, the `serve` process, waits handed to the
Prefect server, artifacts on flow runs.

The unit tests need no server. The integration tests use the session's real Prefect server: one starts the
`serve` managed process and a deployment through the Prefect API and sees the run COMPLETED with its artifact;
one shows the annotation wait leaves the flow paused in the server until the resumer resumes it.
"""
from __future__ import annotations

import contextvars
import threading
import time
import uuid

import pytest
from prefect import flow as flow_decorator

from alignline.config import load_config
from alignline.config.dump import dump_toml
from tests.conftest import make_test_config


# -- unit: config hand-over, forms, keys ------------------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "llama2-7b"])
def test_dumped_config_loads_back_to_the_same_config(tmp_path, preset):
    cfg = load_config(preset=preset, home=tmp_path, overrides=[
        "servers.prefect_port=24999", "reward.margin=large", "servers.collect_schedule=0 6 * * 1",
        "annotation.temperatures=[0.5, 1.5]", "corpus.sources=['local', '/data/x y.jsonl']"])
    path = tmp_path / "cfg.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(file=path, home=tmp_path) == cfg


def test_a_ui_run_starts_from_serves_config_and_a_new_preset_keeps_only_its_servers(tmp_path, monkeypatch):
    from alignline.flows import deployments

    cfg = load_config(home=tmp_path, overrides=["servers.mlflow_port=25999", "reward.margin=large"])
    deployments.write_config_files(cfg)
    monkeypatch.setenv(deployments.HOME_ENV, str(tmp_path))
    same = deployments.console_config(None, ["sft.epochs=3"])
    assert (same.preset, same.servers.mlflow_port, same.reward.margin, same.sft.epochs) == ("tiny", 25999, "large", 3)
    assert deployments.console_config("tiny", None) == cfg
    other = deployments.console_config("llama2-7b", [])
    assert other.servers == cfg.servers and other.home == cfg.home
    assert other.sft == load_config(preset="llama2-7b").sft and other.reward.margin != "large"


def test_every_stage_is_a_deployment_with_a_typed_form(tmp_path):
    from alignline.config import PRESET_NAMES
    from alignline.flows.deployments import CONSOLE, deployments

    made = {d.name: d for d in deployments(load_config(home=tmp_path))}
    assert set(made) == {"corpus", "pretrain", "sft", "collect", "harvest", "reward", "rlhf", "evaluate", "iterate",
                         "promote-request"} == set(CONSOLE)
    for name, dep in made.items():
        props = dep._parameter_openapi_schema.properties
        assert props["preset"]["anyOf"][0]["enum"] == list(PRESET_NAMES), name
        assert props["overrides"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}, name
        assert all(p.get("description") for p in props.values()), name  # the form explains each field
        assert dep.entrypoint == f"alignline.flows.deployments.{CONSOLE[name].fn.__name__}"
        assert not dep.schedules
    assert made["iterate"]._parameter_openapi_schema.properties["iteration"]["anyOf"][0]["type"] == "integer"
    assert made["rlhf"]._parameter_openapi_schema.required == ["iteration"]


def test_collect_runs_weekly_when_a_schedule_is_set(tmp_path):
    from alignline.flows.deployments import deployments, week_batch
    import datetime as dt

    made = {d.name: d for d in deployments(load_config(home=tmp_path, overrides=["servers.collect_schedule=0 6 * * 1"]))}
    assert [s.schedule.cron for s in made["collect"].schedules] == ["0 6 * * 1"]
    assert all(not d.schedules for n, d in made.items() if n != "collect")
    assert week_batch(dt.date(2026, 12, 1)) == 202649
    with pytest.raises(Exception, match="5-field cron"):
        load_config(overrides=["servers.collect_schedule=weekly"])


def test_server_retries_pad_the_last_delay():
    from alignline.config.servers import ServersConfig
    from alignline.flows.retries import server_retries

    assert server_retries(ServersConfig(task_retries=4, task_retry_delays_s=(1.0, 5.0))) == \
        {"retries": 4, "retry_delay_seconds": [1.0, 5.0, 5.0, 5.0]}
    assert server_retries(ServersConfig(task_retries=0)) == {"retries": 0, "retry_delay_seconds": 0}
    from alignline.flows import harvest, iteration

    assert harvest.harvest_kind.retries == 2 and iteration.annotation_progress.retries == 2


def test_wait_keys_name_their_iteration():
    from alignline.flows.waits import annotation_wait_key, waited_iteration

    a, b = annotation_wait_key(12), annotation_wait_key(12)
    assert a != b and waited_iteration(a) == waited_iteration(b) == 12
    assert waited_iteration("annotations-iteration-x-00") is None and waited_iteration(None) is None


def test_serve_is_a_fifth_managed_process_when_enabled(tmp_path):
    from alignline.infra.servers import _serve_command, servers

    on = load_config(home=tmp_path)
    assert [s.name for s in servers(on)][-1] == "serve"
    assert "serve" not in [s.name for s in servers(load_config(home=tmp_path, overrides=["servers.prefect_serve=false"]))]
    cmd = _serve_command(on)
    assert cmd[1:5] == ["-m", "alignline.flows.cli", "serve", "--config"] and "--set" not in cmd


def test_artifact_keys_and_mlflow_links():
    from alignline.flows.artifacts import artifact_key, mlflow_model_url, mlflow_run_url

    assert artifact_key("Iteration 3: policy@5") == "iteration-3-policy-5"
    assert mlflow_model_url("http://127.0.0.1:5000/", "policy/5") == "http://127.0.0.1:5000/#/models/policy/versions/5"
    assert mlflow_run_url("http://h:1", "abc") == "http://h:1/#/runs/abc"
    assert mlflow_run_url("sqlite:///x.db", "abc") is None


# -- integration: the real Prefect server -------------------------------------------------------------

def _in_thread(fn, *args):
    """Run fn in a thread with this context's Prefect settings; returns (thread, result box)."""
    box: dict = {}
    ctx = contextvars.copy_context()

    def target():
        try:
            box["result"] = ctx.run(fn, *args)
        except BaseException as e:  # surfaced by the test
            box["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@pytest.mark.integration
def test_annotation_wait_pauses_in_the_server_until_the_resumer_sees_the_batch_done(prefect_server, monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client

    import alignline.flows.iteration as it
    from alignline.flows.context import RunContext
    from alignline.flows.waits import paused_waits, resume_ready, waited_iteration

    iteration = 900 + uuid.uuid4().int % 1000  # a fresh iteration number: other paused runs are not ours
    done = {"annotated": 1}
    monkeypatch.setattr(it, "annotation_progress", lambda *a: {"tasks": 4, "annotated": done["annotated"]})
    cfg = make_test_config("annotation.poll_interval_s=1", "annotation.wait_timeout_s=120")

    @flow(name="wait-under-test")
    def waiting() -> dict:
        return it.await_annotations(RunContext(cfg), iteration)

    thread, box = _in_thread(waiting)
    deadline = time.monotonic() + 60
    ours: list = []
    while not ours and time.monotonic() < deadline:
        ours = [(rid, key) for rid, key in paused_waits() if waited_iteration(key) == iteration]
        time.sleep(0.5)
    assert ours, f"no paused run for iteration {iteration}: {box}"
    run_id = ours[0][0]

    def ready(key: str) -> bool:
        return waited_iteration(key) == iteration and done["annotated"] == 4

    assert run_id not in resume_ready(ready)  # 1/4 annotated: stays paused
    time.sleep(2)
    assert thread.is_alive()
    done["annotated"] = 4
    assert run_id in resume_ready(ready)
    thread.join(60)
    assert not thread.is_alive() and "error" not in box, box
    assert box["result"] == {"tasks": 4, "annotated": 4, "timed_out": False}
    with get_client(sync_client=True) as client:
        states = [s.name for s in client.read_flow_run_states(uuid.UUID(run_id))]
    assert "Paused" in states and states[-1] == "Completed", states


@pytest.fixture()
def serve_process(servers):
    """The `serve` managed process for the session's servers, started through `up` and stopped by `down`."""
    from alignline.infra import down, status, up

    cfg = make_test_config("servers.prefect_serve=true")
    try:
        up(cfg, names=("serve",), say=lambda msg: print(f"[serve] {msg}"))
        assert [s.healthy for s in status(cfg) if s.name == "serve"] == [True]
        yield cfg
    finally:
        down(cfg, names=("serve",), say=lambda msg: print(f"[serve] {msg}"))


@pytest.mark.integration
def test_a_deployment_started_through_the_api_completes_with_its_artifacts(serve_process):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter,
                                                FlowRunFilterParentFlowRunId)

    from tests.conftest import real_prefect

    with real_prefect(serve_process), get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments()}
        assert {"corpus", "iterate", "harvest", "promote-request"} <= names
        deployment = client.read_deployment_by_name("alignline-harvest/harvest")
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"overrides": ["annotation.seed=1"]})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state and run.state.is_final():
                break
            time.sleep(2)
        assert run.state is not None and run.state.type.value == "COMPLETED", run.state
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
        ids = [run.id, *(c.id for c in children)]
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
        assert "harvest-report" in {a.key for a in found}
        table = next(a for a in found if a.key == "harvest-report")
        assert table.type == "table" and "helpfulness" in str(table.data)


# A deployment's run suspends (its process exits) and the resumer brings it back; the run starts again from the
# top, so, like `iterate`, it first checks whether its wait is over (here: a marker file; there: Label Studio).
@flow_decorator(name="suspend-under-test")
def suspending(iteration: int, marker: str) -> str:
    from pathlib import Path

    from alignline.flows.waits import annotation_wait_key, hand_off

    if not Path(marker).exists():
        hand_off(annotation_wait_key(iteration), 300, 1, f"test iteration {iteration}")
    return "done"


@pytest.mark.integration
def test_a_deployment_run_is_suspended_not_held_and_the_resumer_resumes_it(prefect_server, tmp_path):
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client

    from alignline.flows.waits import resume_ready, waited_iteration
    from alignline.infra import prefect_env
    from tests.conftest import REPO

    iteration = 2000 + uuid.uuid4().int % 1000
    marker = tmp_path / "annotated"
    env = {**os.environ, **prefect_env(prefect_server), "PYTHONPATH": str(REPO)}
    script = ("from prefect import serve\nfrom prefect.deployments.runner import EntrypointType\n"
              "from tests.flows.test_deployments import suspending\n"
              "serve(suspending.to_deployment('t', entrypoint_type=EntrypointType.MODULE_PATH), limit=1)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=open(tmp_path / "serve.log", "wb"), stderr=subprocess.STDOUT)
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 180
            deployment = None
            while deployment is None and time.monotonic() < deadline:
                try:
                    deployment = client.read_deployment_by_name("suspend-under-test/t")
                except Exception:
                    time.sleep(1)
            assert deployment is not None, (tmp_path / "serve.log").read_text()[-2000:]
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"iteration": iteration, "marker": str(marker)})

            def state_of() -> str:
                return client.read_flow_run(run.id).state.name

            while state_of() != "Suspended" and time.monotonic() < deadline:
                time.sleep(1)
            assert state_of() == "Suspended", (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(3)
            assert state_of() == "Suspended"  # nobody resumed it: it waits in the server, not in a process
            assert resume_ready(lambda key: waited_iteration(key) == iteration and marker.exists()) == []
            marker.touch()
            assert resume_ready(lambda key: waited_iteration(key) == iteration and marker.exists()) == [str(run.id)]
            while state_of() != "Completed" and time.monotonic() < deadline:
                time.sleep(1)
            states = [s.name for s in client.read_flow_run_states(run.id)]
        assert "Suspended" in states and states[-1] == "Completed", states
        assert states.count("Running") == 2  # two executions: before the suspension and after the resume
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def test_a_report_that_cannot_be_rendered_never_fails_its_stage():
    from alignline.flows.artifacts import publish_evaluation, publish_reward

    publish_evaluation({"no": "policy"}, "http://127.0.0.1:1")  # KeyError inside: logged, not raised
    publish_reward({"models": None}, "http://127.0.0.1:1")


@pytest.mark.integration
def test_reports_appear_on_the_flow_run_with_links_to_mlflow(prefect_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    from alignline.flows import artifacts as art

    mlflow = "http://127.0.0.1:25999"
    evaluation = {"policy": "policy/7", "baseline": "policy/6", "judges": "rm-helpfulness,rm-safety",
                  "eval_set": "prompts-eval@3", "overlap": 0, "win_rate": 0.61, "win_rate_95ci": [0.52, 0.69],
                  "n": 120, "oracle_win_rate": 0.58, "mean_oracle": 0.41, "safety_violation_rate": 0.02,
                  "false_refusal_rate": 0.05, "gates": "win_rate=pass", "model_card": "/x/model_card.html",
                  "model_card_mlflow": "runs:/abc123/model_card.html"}
    reward = {"models": {"rm-helpfulness": "rm-helpfulness/4"}, "run_ids": {"rm-helpfulness": "r1"},
              "metrics": {"rm-helpfulness.helpfulness.accuracy": 0.7}, "skipped": {"rm-safety": "no pairs"},
              "data": ["comparisons-helpfulness@2"], "heldout_pairs": 30, "drift_alert": False}
    corpus = {"corpus": "corpus@5", "documents": 1200, "dropped_by_reason": {"too_short": 30, "dup": 12},
              "rejects_by_reason": {"not utf-8": 1}, "validation": "/x/validation.json", "report": "/tmp/report.html"}

    @flow(name="reports-under-test")
    def reports() -> str:
        art.publish_evaluation(evaluation, mlflow)
        art.publish_reward(reward, mlflow)
        art.publish_corpus(corpus)
        art.publish_iteration(3, {"collect": {"prompts": "p@1"}, "evaluate": evaluation}, mlflow)
        return str(flow_run.get_id())

    run_id = uuid.UUID(reports())
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))}
    assert {"evaluation-report", "evaluation-summary", "model-card", "reward-report", "reward-summary",
            "corpus-report", "corpus-drops", "corpus-report-file", "iteration-3", "iteration-3-candidate"} <= set(found)
    assert (found["evaluation-report"].type, found["evaluation-summary"].type) == ("table", "markdown")
    assert f"{mlflow}/#/models/policy/versions/7" in found["evaluation-summary"].data
    assert f"]({mlflow}/#/runs/abc123)" in found["model-card"].data  # Prefect 3.9 stores a link as Markdown
    assert f"{mlflow}/#/runs/r1" in found["reward-summary"].data
    assert "too_short" in str(found["corpus-drops"].data)
