"""Two of the same long job on one data dir at once, as real processes (issue 14.3).

The first process runs the real entry point (`run_iterate`, `run_harvest`, `run_promote`) and is frozen by
`ALIGNLINE_FAULT=<job>.locked:stop` right after it took its data-dir lock, so it holds the lock for as long as
the test likes. The second process then runs the same entry point: `iterate` exits at once naming the holder's pid;
`harvest` and `promote` wait. When the holder is SIGKILLed the kernel frees the lock, and the waiting process
goes on (its own fault point kills it the moment it holds the lock, so no server is needed to prove it).
Two `alignline up` at once against running servers are in the integration part at the end.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alignline.storage.faults import ENV

REPO = Path(__file__).resolve().parents[1]
CALLS = {
    "iterate": "from alignline.flows.iteration import run_iterate as run; run(cfg)",
    "harvest": "from alignline.flows.harvest import run_harvest as run; run(cfg)",
    "promote": "from alignline.flows.promote import run_promote as run; run(cfg, 'policy', '1', 'ada', 'why')",
}


def start(home: Path, job: str, fault: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        from alignline.config import load_config
        from alignline.storage import LockHeld
        cfg = load_config(home={str(home)!r})
        try:
            {CALLS[job]}
        except LockHeld as e:
            print(f"refused: {{e}}", flush=True)
            raise SystemExit(3)""")
    env = {**{k: v for k, v in os.environ.items() if k != ENV}, ENV: fault}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(predicate, proc: subprocess.Popen, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        time.sleep(0.2)


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def has_open(pid: int, path: Path) -> bool:
    """The process holds `path` open (it opens its lock file just before it tries, and keeps trying, to take it)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.fixture()
def holder(tmp_path):
    procs: list[subprocess.Popen] = []

    def hold(job: str) -> subprocess.Popen:
        proc = start(tmp_path / "home", job, f"{job}.locked:stop")
        procs.append(proc)
        wait_until(lambda: stopped(proc.pid), proc, f"the first {job} to take its lock")
        return proc

    yield hold
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_iterate_exits_naming_the_one_that_runs(tmp_path, holder):
    first = holder("iterate")
    second = start(tmp_path / "home", "iterate", "")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 3, err[-2000:]
    assert f"iterate is already running for {tmp_path / 'home'} (pid {first.pid}" in out
    first.kill()
    first.wait()
    third = start(tmp_path / "home", "iterate", "iterate.locked")  # the dead holder's lock is free
    third.communicate(timeout=300)
    assert third.returncode == -signal.SIGKILL


@pytest.mark.parametrize("job", ["harvest", "promote"])
def test_a_second_harvest_or_promote_waits_for_the_first(tmp_path, holder, job):
    first = holder(job)
    second = start(tmp_path / "home", job, f"{job}.locked")  # killed by its fault point once it holds the lock
    lock = tmp_path / "home" / "locks" / f"{job}.lock"
    wait_until(lambda: has_open(second.pid, lock), second, f"the second {job} to reach the lock")
    time.sleep(1.0)
    assert second.poll() is None, f"the second {job} did not wait: {second.stderr.read()[-2000:]}"
    assert f"pid {first.pid}:" in lock.read_text()  # the lock file names the holder
    first.kill()
    first.wait()
    second.communicate(timeout=120)
    assert second.returncode == -signal.SIGKILL  # it took the lock as soon as the holder died


@pytest.mark.integration
def test_two_ups_at_once_start_nothing_twice(servers):
    from alignline.infra import status, up
    from tests.conftest import TEST_SERVER_OVERRIDES

    up(servers, say=lambda m: None)  # whatever died meanwhile (another test kills MLflow) is back first
    before = {s.name: s.pid for s in status(servers)}
    assert all(before.values())
    argv = [sys.executable, "-m", "alignline.flows.cli", "up", "--home", str(servers.home)]
    for override in TEST_SERVER_OVERRIDES:
        argv += ["--set", override]
    ups = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in ups]
    assert [p.returncode for p in ups] == [0, 0], [err[-2000:] for _, err in outs]
    after = status(servers)
    assert {s.name: s.pid for s in after} == before and all(s.healthy for s in after)  # nothing started twice
