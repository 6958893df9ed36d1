"""Faults a trusted line survives (issue 14.3): a real SIGKILL at each write boundary, then a rerun in a fresh
process that loses and duplicates nothing; torn and truncated files; a full disk (a 1 MiB tmpfs).

Each kill runs the real code in a subprocess with `ALIGNLINE_FAULT=<point>` (storage/faults.py), so no `finally`
or buffered write gets to run. Boundaries that need a server (model registration, the champion alias) are in the
`integration` part at the end. `pytest -s tests/test_faults.py` prints the tally: faults injected by kind and the
reruns that found 0 lost / 0 duplicated rows, annotations and model versions.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from alignline.storage import Catalog, CatalogError
from alignline.storage.faults import ENV, POINTS, fault_point
from alignline.storage.ledger import LedgerError, StepLedger

REPO = Path(__file__).resolve().parents[1]
TALLY: Counter[str] = Counter()   # "<kind>" -> faults injected; "clean rerun" -> reruns with 0 lost / 0 duplicated


@pytest.fixture(scope="module", autouse=True)
def print_tally():
    yield
    faults = {k: v for k, v in TALLY.items() if k != "clean rerun"}
    print(f"\n[faults] injected {sum(faults.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(faults.items()))}); "
          f"reruns after a fault with 0 lost / 0 duplicated: {TALLY['clean rerun']}")


def run_py(code: str, fault: str = "", timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter at the repo root, `ALIGNLINE_FAULT=fault` when given."""
    full_env = {k: v for k, v in os.environ.items() if k != ENV}
    full_env.update(env)
    if fault:
        full_env[ENV] = fault
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def killed(proc: subprocess.CompletedProcess, kind: str) -> None:
    assert proc.returncode == -signal.SIGKILL, f"no SIGKILL at the fault point: rc {proc.returncode}\n{proc.stderr[-2000:]}"
    TALLY[kind] += 1


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def first_line(out: str) -> str:
    """What the code printed first (MLflow prints its run links after it)."""
    return out.strip().splitlines()[0]


# -- the hook itself ----------------------------------------------------------------------------------------
def test_fault_points_do_nothing_unless_named(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    for point in POINTS:
        fault_point(point)  # still alive
    monkeypatch.setenv(ENV, "some.other.point")
    fault_point("catalog.renamed")


def test_a_fault_fires_on_the_named_hit_only():
    out = run_py("""
        from alignline.storage.faults import fault_point
        fault_point("x"); print("first", flush=True); fault_point("x"); print("second", flush=True)""", fault="x@2")
    assert out.returncode == -signal.SIGKILL and out.stdout.split() == ["first"]


# -- Parquet renamed into place -> catalog row ------------------------------------------------------------
PUBLISH = """
    import pyarrow as pa
    from alignline.storage import Catalog
    table = pa.table({{"id": list(range({n})), "text": [f"row {{i}}" for i in range({n})]}})
    print(Catalog({lake!r}).publish("docs", table).ref)"""


def test_kill_between_parquet_rename_and_catalog_row(tmp_path):
    lake = str(tmp_path / "lake")
    killed(run_py(PUBLISH.format(lake=lake, n=500), fault="catalog.renamed"), "SIGKILL catalog.renamed")
    catalog = Catalog(lake)
    assert catalog.find("docs") is None  # the file was renamed into place, but nothing names it yet
    assert len(list((tmp_path / "lake" / "datasets" / "docs").glob("*.parquet"))) == 1
    ref = ok(run_py(PUBLISH.format(lake=lake, n=500))).strip()  # the rerun publishes the same content once
    assert [v.ref for v in catalog.versions("docs")] == [ref]
    assert catalog.read("docs").column("id").to_pylist() == list(range(500))  # 0 lost, 0 duplicated
    assert not list((tmp_path / "lake").rglob("*.tmp"))
    TALLY["clean rerun"] += 1


# -- step ledger: temp file written -> renamed over the ledger ---------------------------------------------
def test_kill_between_ledger_temp_file_and_rename(tmp_path):
    path = tmp_path / "iteration-1.json"
    StepLedger(path, ("collect", "harvest"), iteration=1).record("collect", {"tasks": 8})
    code = f"""
        from alignline.storage.ledger import StepLedger
        StepLedger({str(path)!r}, ("collect", "harvest")).record("harvest", {{"rows": 8}})"""
    killed(run_py(code, fault="ledger.written"), "SIGKILL ledger.written")
    ledger = StepLedger(path, ("collect", "harvest"))
    assert ledger.done("collect") and not ledger.done("harvest")  # the old ledger is whole: harvest reruns
    ok(run_py(code))
    assert StepLedger(path, ("collect", "harvest")).data["steps"] == {"collect": {"tasks": 8}, "harvest": {"rows": 8}}
    TALLY["clean rerun"] += 1


# -- checkpoint state written -> renamed into place -----------------------------------------------------
CHECKPOINT = """
    import importlib.util, torch
    # the module alone (torch + storage.faults), not the training package with Ray and transformers
    spec = importlib.util.spec_from_file_location("checkpoint", "services/training/checkpoint.py")
    checkpoint = importlib.util.module_from_spec(spec); spec.loader.exec_module(checkpoint)
    save_checkpoint = checkpoint.save_checkpoint
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ConstantLR(opt)
    for step in (1, 2):
        with torch.no_grad():
            model.weight.fill_(step)
        save_checkpoint({root!r}, step, model, opt, sched)"""


def checkpoint_module():
    """services/training/checkpoint.py alone (torch only): the training package would pull in Ray and transformers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("checkpoint_alone", REPO / "services/training/checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kill_between_checkpoint_write_and_rename(tmp_path):
    ck = checkpoint_module()
    _load_state, latest_checkpoint = ck._load_state, ck.latest_checkpoint

    root = str(tmp_path / "ckpt")
    killed(run_py(CHECKPOINT.format(root=root), fault="checkpoint.written@2"), "SIGKILL checkpoint.written")
    assert latest_checkpoint(root).name == "step_0000001"  # step 2 never became visible; step 1 verifies
    ok(run_py(CHECKPOINT.format(root=root)))
    newest = latest_checkpoint(root)
    assert newest.name == "step_0000002" and float(_load_state(newest)["model"]["weight"][0, 0]) == 2.0
    TALLY["clean rerun"] += 1


# -- torn and truncated files ------------------------------------------------------------------------------
def test_a_truncated_dataset_file_is_one_clear_error(tmp_path):
    catalog = Catalog(tmp_path / "lake")
    version = catalog.publish("docs", pa.table({"id": list(range(1000))}))
    size = version.path.stat().st_size
    os.chmod(version.path, 0o644)
    with open(version.path, "r+b") as fh:
        fh.truncate(size // 2)
    TALLY["truncated Parquet"] += 1
    with pytest.raises(CatalogError, match=rf"docs@{version.version} cannot be read from .*truncated or corrupt"):
        catalog.read("docs")


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    latest_checkpoint = checkpoint_module().latest_checkpoint

    root = tmp_path / "ckpt"
    ok(run_py(CHECKPOINT.format(root=str(root))))
    state = root / "step_0000002" / "state.pt"
    with open(state, "r+b") as fh:
        fh.truncate(state.stat().st_size - 100)
    TALLY["truncated checkpoint"] += 1
    assert latest_checkpoint(root).name == "step_0000001"


@pytest.mark.parametrize("torn", [b'{"steps": {"collect": {"tas', b"", b"\x00\x00\x00", b'["steps"]', b"\xff\xfe{"])
def test_a_torn_step_ledger_names_its_file(tmp_path, torn):
    path = tmp_path / "iteration-1.json"
    path.write_bytes(torn)
    TALLY["torn ledger"] += 1
    with pytest.raises(LedgerError, match=rf"step ledger {path} .*move it aside"):
        StepLedger(path, ("collect",))


def test_a_torn_harvest_ledger_starts_from_the_published_ids(tmp_path):
    from alignline.annotation.harvest import Ledger

    path = tmp_path / "harvest-ledger-safety-3.json"
    Ledger({1, 2, 3}, "2026-01-01T00:00:00", "3@x").save(path)
    path.write_bytes(path.read_bytes()[:9])
    TALLY["torn ledger"] += 1
    ledger = Ledger.load(path, "3@x")  # harvest() adds the ids the published version records; ids are the keys
    assert ledger.ids == set() and ledger.since is None and ledger.project == "3@x"


# -- a full disk -----------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (we run as root in CI); skipped with the reason where mounting is refused."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        import gc

        gc.collect()  # a table read from the mount may still hold its file
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)  # detached now, freed when the last file closes


def test_a_full_disk_leaves_no_dataset_half_published(tiny_disk):
    catalog = Catalog(tiny_disk / "lake")
    small = catalog.publish("docs", pa.table({"id": [1, 2, 3]}))
    big = pa.table({"blob": [os.urandom(1024) for _ in range(2048)]})  # 2 MiB of incompressible bytes
    TALLY["ENOSPC"] += 1
    with pytest.raises(CatalogError) as err:
        catalog.publish("docs", big)
    message = str(err.value)
    assert "\n" not in message and "no space left on device" in message and "'docs'" in message
    assert [v.ref for v in catalog.versions("docs")] == [small.ref] and catalog.get("docs").ref == small.ref
    assert sorted(p.name for p in (tiny_disk / "lake" / "datasets" / "docs").iterdir()) == [small.path.name]
    assert catalog.read("docs").num_rows == 3
    TALLY["clean rerun"] += 1


def test_a_full_disk_leaves_no_checkpoint_half_written(tiny_disk):
    import torch

    ck = checkpoint_module()
    latest_checkpoint, save_checkpoint = ck.latest_checkpoint, ck.save_checkpoint

    model = torch.nn.Linear(600, 600)  # 1.4 MiB of weights
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    TALLY["ENOSPC"] += 1
    with pytest.raises(OSError, match=r"cannot save checkpoint step 1 to .*"):
        save_checkpoint(tiny_disk / "ckpt", 1, model, opt, torch.optim.lr_scheduler.ConstantLR(opt))
    assert list((tiny_disk / "ckpt").iterdir()) == [] and latest_checkpoint(tiny_disk / "ckpt") is None


# == boundaries that need the real servers (integration) ====================================================
REGISTER = """
    from tests.conftest import make_test_config
    from alignline.flows.context import RunContext
    from alignline.services.registry import Lineage
    from alignline.services.tracking import tracked_run
    registry = RunContext(make_test_config()).registry
    with tracked_run(registry.tracking_uri, "fault-tests", "register") as run_id:
        lineage = Lineage(datasets=("corpus@abc",), parents=("base/1",), method="sft")
        print(registry.register_dir({name!r}, {folder!r}, lineage, run_id, step={folder!r}).ref)"""
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def model_folder(tmp_path: Path) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"marker": "%s"}' % uuid.uuid4().hex)
    return str(folder)


@pytest.mark.integration
def test_kill_between_registering_and_the_alias_registers_once(servers, tmp_path):
    from alignline.flows.context import RunContext
    from alignline.services.registry import CANDIDATE

    registry, name, folder = RunContext(servers).registry, f"policy-{uuid.uuid4().hex[:6]}", model_folder(tmp_path)
    code = REGISTER.format(name=name, folder=folder)
    killed(run_py(code, fault="registry.registered"), "SIGKILL registry.registered")
    assert [(v.version, v.aliases) for v in registry.versions(name)] == [("1", ())]  # registered, no alias yet
    assert first_line(ok(run_py(REGISTER.format(name=name, folder=folder)))) == f"{name}/1"  # the step's rerun
    assert [(v.version, v.aliases) for v in registry.versions(name)] == [("1", (CANDIDATE,))]  # 0 duplicated
    TALLY["clean rerun"] += 1
    other = tmp_path / "other"  # another step (another output) is another version
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert first_line(ok(run_py(REGISTER.format(name=name, folder=str(other))))) == f"{name}/2"


@pytest.mark.integration
def test_mlflow_killed_mid_step_then_up_then_rerun_registers_once(servers, tmp_path):
    from alignline.flows.context import RunContext
    from alignline.infra import up
    from alignline.infra.servers import _read_pid

    registry, name, folder = RunContext(servers).registry, f"policy-{uuid.uuid4().hex[:6]}", model_folder(tmp_path)
    code = REGISTER.format(name=name, folder=folder)
    step = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, text=True,
                            env={**os.environ, **FAST_FAIL, ENV: "registry.registered:stop"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300  # frozen with its version created, the alias not yet set
        while Path(f"/proc/{step.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert step.poll() is None and time.monotonic() < deadline, step.stderr.read()[-2000:]
            time.sleep(0.2)
        pid = _read_pid(servers.home, "mlflow")
        os.killpg(pid, signal.SIGKILL)  # MLflow dies in the middle of the step
        TALLY["MLflow killed mid-step"] += 1
        os.kill(step.pid, signal.SIGCONT)
        _, err = step.communicate(timeout=300)
        assert step.returncode not in (0, -signal.SIGKILL), err[-2000:]  # the step failed (no server), not hung
    finally:
        if step.poll() is None:
            step.kill()
    up(servers, say=lambda m: None, names=["mlflow"])
    assert _read_pid(servers.home, "mlflow") not in (None, pid)
    assert first_line(ok(run_py(code))) == f"{name}/1"
    assert [(v.version, v.aliases) for v in registry.versions(name)] == [("1", ("candidate",))]
    TALLY["clean rerun"] += 1


@pytest.mark.integration
def test_kill_between_moving_champion_and_the_promotion_record(servers, tmp_path):
    from alignline.flows.context import RunContext
    from alignline.services.registry import CHAMPION, Lineage
    from alignline.services.tracking import tracked_run
    from tests.flows.test_promote import _eval_set, _report

    registry, name = RunContext(servers).registry, f"policy-{uuid.uuid4().hex[:6]}"
    eval_set = _eval_set(servers)
    for version, baseline, win, rows in (("1", "1", 0.5, 3), ("2", "1", 0.8, 500)):
        with tracked_run(registry.tracking_uri, "fault-tests", f"register and evaluate {version}") as run_id:
            folder = tmp_path / version
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps({"marker": version}))
            registry.register_dir(name, folder, Lineage(method="sft"), run_id)
            report = _report(f"{name}/{version}", f"{name}/{baseline}", win, rows, eval_set)
            registry.store_report(name, version, report, run_id)
    registry.promote(name, "1", reviewer="ada", reason="first", override=True)
    promote = f"""
        from tests.conftest import make_test_config
        from alignline.flows.promote import run_promote
        print(run_promote(make_test_config(), {name!r}, "2", reviewer="grace", reason="wins 80%"))"""
    killed(run_py(promote, fault="promote.alias_set"), "SIGKILL promote.alias_set")
    assert registry.get(name, CHAMPION).version == "2"  # the alias moved ...
    assert [h["version"] for h in registry.promotion_history(name)] == ["1"]  # ... but its record is not done
    out = ok(run_py(promote))  # the reviewer runs the same command again
    assert "'resumed': True" in out and "'previous_champion': '1'" in out
    history = registry.promotion_history(name)
    assert [(h["version"], h["previous"], h["reviewer"]) for h in history] == [("1", None, "ada"), ("2", "1", "grace")]
    assert registry.get(name, "2").tags["promotion.reviewer"] == "grace"
    assert "grace" in registry.client.get_registered_model(name).description
    TALLY["clean rerun"] += 1


# -- harvest: comparisons published -> harvest ledger file; two harvests at once (real Label Studio) ------------
@pytest.fixture(scope="module")
def annotated(servers, tmp_path_factory):
    """A data dir of its own with one collected, bot-annotated batch in fresh Label Studio projects."""
    import shutil

    from alignline.config import load_config
    from alignline.flows.annotate import run_bot
    from alignline.flows.collect import run_collect
    from alignline.infra import prefect_server
    from tests.conftest import TEST_HOME, TEST_SERVER_OVERRIDES

    home = tmp_path_factory.mktemp("harvest-faults")
    (home / "secrets").mkdir(mode=0o700)
    shutil.copy(TEST_HOME / "secrets" / "label-studio.json", home / "secrets" / "label-studio.json")
    run = uuid.uuid4().hex[:8]
    overrides = [*TEST_SERVER_OVERRIDES, f"annotation.helpfulness_project=help {run}",
                 f"annotation.safety_project=safety {run}", "annotation.prompts_per_batch=8",
                 "annotation.stdlib_prompts=40", "annotation.overlap_share=0.5"]
    cfg = load_config(overrides=overrides, home=home)

    def sample(dialogues, temperature, seed):  # distinct answers without a model: harvest is what is under test
        return [f"answer {seed} {i} at {temperature}" for i, _ in enumerate(dialogues)], "policy/1"

    with prefect_server(cfg):
        run_collect(cfg, iteration=1, batch=1, sampler=sample)
        run_bot(cfg)
    return cfg, overrides


HARVEST = """
    from alignline.config import load_config
    from alignline.flows.harvest import run_harvest
    from alignline.infra import prefect_server
    cfg = load_config(overrides={overrides!r}, home={home!r})
    with prefect_server(cfg):
        print({{k: v["new_comparisons"] for k, v in run_harvest(cfg).items()}})"""


@pytest.mark.integration
def test_harvest_killed_after_publishing_then_two_harvests_at_once(annotated):
    cfg, overrides = annotated
    code = HARVEST.format(overrides=overrides, home=str(cfg.home))
    killed(run_py(code, fault="harvest.published", timeout=600), "SIGKILL harvest.published")
    both = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, text=True,
                             env={k: v for k, v in os.environ.items() if k != ENV},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outs]
    TALLY["two harvests at once"] += 1
    assert_every_annotation_once(cfg)
    TALLY["clean rerun"] += 1


def assert_every_annotation_once(cfg) -> None:
    """Every Label Studio annotation is exactly one comparison row or one quarantine row: 0 lost, 0 duplicated."""
    from alignline.annotation import connect, find_project
    from alignline.flows.context import RunContext

    ctx = RunContext(cfg)
    client = connect(ctx.label_studio_url, ctx.label_studio_token())
    for kind, project_name in (("helpfulness", cfg.annotation.helpfulness_project),
                               ("safety", cfg.annotation.safety_project)):
        project = find_project(client, project_name)
        submitted = sorted(a["id"] for t in client.tasks.list(project=project, fields="all")
                           for a in (t.annotations or []))  # skipped ones too: they go to the quarantine
        rows = ctx.catalog.read(f"comparisons-{kind}").column("annotation_id").to_pylist()
        quarantined = []
        if ctx.catalog.find(f"comparisons-{kind}-quarantine") is not None:
            quarantined = [int(r) for r in ctx.catalog.read(f"comparisons-{kind}-quarantine").column("record_id")
                           .to_pylist() if str(r).isdigit()]
        assert len(rows) == len(set(rows)) and not set(rows) & set(quarantined)  # 0 duplicated
        assert sorted(rows + quarantined) == submitted  # 0 lost: every annotation is a row or a quarantine row


@pytest.mark.integration
def test_label_studio_killed_mid_harvest_then_up_then_rerun(servers, annotated):
    from alignline.flows.annotate import run_bot
    from alignline.flows.collect import run_collect
    from alignline.infra import prefect_server, up
    from alignline.infra.servers import _read_pid

    cfg, overrides = annotated

    def sample(dialogues, temperature, seed):
        return [f"second batch {seed} {i} at {temperature}" for i, _ in enumerate(dialogues)], "policy/1"

    with prefect_server(cfg):  # new annotations that no harvest has read yet
        run_collect(cfg, iteration=1, batch=2, sampler=sample)
        run_bot(cfg)
    code = HARVEST.format(overrides=overrides, home=str(cfg.home))
    harvest = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, text=True,
                               env={**os.environ, ENV: "harvest.locked:stop"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300  # frozen holding the harvest lock, about to read Label Studio
        while Path(f"/proc/{harvest.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert harvest.poll() is None and time.monotonic() < deadline, harvest.stderr.read()[-2000:]
            time.sleep(0.2)
        pid = _read_pid(servers.home, "label-studio")
        os.killpg(pid, signal.SIGKILL)  # Label Studio dies in the middle of the harvest
        TALLY["Label Studio killed mid-step"] += 1
        os.kill(harvest.pid, signal.SIGCONT)
        _, err = harvest.communicate(timeout=600)
        assert harvest.returncode not in (0, -signal.SIGKILL), err[-2000:]  # failed (no server), not hung
    finally:
        if harvest.poll() is None:
            harvest.kill()
    up(servers, say=lambda m: None, names=["label-studio"])
    assert _read_pid(servers.home, "label-studio") not in (None, pid)
    ok(run_py(code, timeout=600))
    assert_every_annotation_once(cfg)
    TALLY["clean rerun"] += 1
