"""Per-data-dir locks: a second holder is refused naming the first; a dead holder's lock is free again."""
import subprocess
import sys
import time

import pytest

from alignline.storage import DataDir, LockHeld


def test_a_second_holder_is_refused_with_the_holders_name(tmp_path):
    data = DataDir(tmp_path / "home")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path[:0] = ['.']\n"
        "from alignline.storage import DataDir\n"
        f"with DataDir({str(tmp_path / 'home')!r}).lock('harvest'):\n"
        "    print('held', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(LockHeld, match=rf"harvest is already running .*pid {holder.pid}"):
            with data.lock("harvest", wait_s=0.5):
                pass
        assert time.monotonic() - t0 >= 0.5  # it waited before giving up
        with data.lock("iterate"):  # other work on the same data dir is not blocked
            pass
    finally:
        holder.kill()
        holder.wait()
    with data.lock("harvest"):  # the killed holder's lock went with it
        pass
