"""Progress: one line per logged step in plain mode (also under Ray Train, which echoed printed lines twice), lines
throttled for long loops, a rich bar on a terminal (issue 17.4)."""
import io
import re
import time

import pytest

from alignline.services import progress
from alignline.services.progress import Progress, track
from alignline.services.tracking import MetricsLogger


def test_each_logged_training_step_is_one_line(capsys):
    logger = MetricsLogger(None, "run", "sft")
    for step in (1, 5, 10):
        logger.log(step, {"loss": 2.0 / step}, total_steps=10)
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r" \(.*s\)$", "", line) for line in lines] == [
        "[sft] step 1/10 loss=2", "[sft] step 5/10 loss=0.4", "[sft] step 10/10 loss=0.2"]
    MetricsLogger(None, None, "sft").log(1, {"loss": 1.0})  # other ranks stay quiet
    assert capsys.readouterr().out == ""


def test_long_loops_print_a_line_per_tenth_and_the_end(capsys):
    assert list(track(range(1000), "import x.jsonl", unit="record")) == list(range(1000))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11 and lines[-1].startswith("[import x.jsonl] record 1000/1000")


def test_without_a_total_lines_are_throttled_and_the_end_is_shown(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 3600.0)
    assert sum(1 for _ in track(iter(range(500)), "import", unit="record")) == 500
    assert [line.split(" (")[0] for line in capsys.readouterr().out.splitlines()] == [
        "[import] record 1", "[import] record 500"]


def test_a_terminal_gets_a_rich_bar():
    out = io.StringIO()
    with Progress("sft", 4, "step", stream=out, bar=True) as bar:
        for step in range(1, 5):
            bar.update(step, loss=1.0 / step)
    text = out.getvalue()
    assert "sft" in text and "4/4" in text and "loss=0.25" in text and "[sft] step" not in text


def _train_loop(job, ctx):
    logger = MetricsLogger(None, "run", "ray-progress") if ctx.is_main else MetricsLogger(None, None)
    for step in (1, 2, 3):
        logger.log(step, {"loss": float(step)}, total_steps=3)
    return {}


@pytest.mark.integration
def test_under_ray_train_each_step_shows_once(ray_cluster, capfd, tmp_path):
    from alignline.services.training.launch import LaunchOptions, launch

    launch(_train_loop, object(), LaunchOptions(use_ray=True, num_workers=1, cpus_per_worker=0.5,
                                                storage_path=str(tmp_path), name="progress"))
    seen, deadline = "", time.monotonic() + 20
    while seen.count("[ray-progress] step 3/3") < 1 and time.monotonic() < deadline:  # Ray forwards worker logs async
        time.sleep(0.5)
        out, err = capfd.readouterr()
        seen += out + err
    time.sleep(2)
    out, err = capfd.readouterr()
    seen += out + err
    assert [seen.count(f"[ray-progress] step {s}/3") for s in (1, 2, 3)] == [1, 1, 1]
