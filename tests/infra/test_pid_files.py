"""`down` signals only the process `up` started: a pid file naming another process (a recycled pid) is stale."""
import json
import subprocess

import psutil

from alignline.config import load_config
from alignline.infra import down
from alignline.infra.servers import _read_pid
from alignline.storage import DataDir


def test_down_leaves_alone_a_process_whose_start_time_differs(tmp_path):
    cfg = load_config(home=tmp_path / "home")
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = psutil.Process(stranger.pid).create_time()
        pid_file = DataDir(cfg.home).pid_file("mlflow")
        pid_file.write_text(json.dumps({"pid": stranger.pid, "create_time": started}))
        assert _read_pid(cfg.home, "mlflow") == stranger.pid  # the very process: ours
        pid_file.write_text(json.dumps({"pid": stranger.pid, "create_time": started - 3600}))
        assert _read_pid(cfg.home, "mlflow") is None  # same pid, another start time: not ours
        pid_file.write_text(str(stranger.pid))  # an old plain-pid file cannot be vouched for either
        assert _read_pid(cfg.home, "mlflow") is None
        down(cfg, say=lambda msg: None)
        assert stranger.poll() is None and not pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_secrets_are_written_atomically_with_mode_0600(tmp_path):
    import stat

    from alignline.infra.paths import read_secret, write_secret

    path = write_secret(tmp_path, "svc", {"token": "t1"})
    write_secret(tmp_path, "svc", {"token": "t2"})
    assert read_secret(tmp_path, "svc") == {"token": "t2"} and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["svc.json"]  # no temp file left behind
