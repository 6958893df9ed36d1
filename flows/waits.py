"""Waiting for people without holding a worker: a flow run hands the wait to the Prefect server.

A run started from a deployment (`alignline serve`) is *suspended*: its process
exits, the slot frees, and the run shows as Suspended in the UI; once resumed,
the runner starts it again from the top and the step ledger skips what is done.
Any other run (the CLI, a subflow) is *paused*: Paused in the UI, its own
process blocked in Prefect's wait (the terminal of whoever started it), until
resumed. Either way the flow has no polling loop of its own.

The resumer looks at this server's paused runs whose pause key names what they
wait for (`annotations-iteration-N-...`), asks Label Studio whether that batch is
complete, and resumes those that are. `alignline serve` runs it every
`annotation.poll_interval_s`; `alignline iterate` runs it beside its own run. Label
Studio webhooks are not used: its SSRF protection blocks loopback targets by
default and it sends them synchronously with a 1 s timeout, so polling a
count is the dependable signal on one machine. An engineer may also resume a run
by hand in the UI: the step then continues with what is annotated so far.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
import threading
import uuid
from typing import Callable, Iterator

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run, suspend_flow_run
from prefect.logging import get_logger

from alignline.config import RunConfig

ANNOTATIONS = "annotations-iteration-"
_KEY = re.compile(rf"^{ANNOTATIONS}(\d+)-[0-9a-f]+$")
logger = get_logger("alignline.waits")


class WaitTimedOut(TimeoutError):
    """Nobody resumed the run before its timeout."""


def annotation_wait_key(iteration: int) -> str:
    """A fresh pause key per wait (Prefect refuses a key twice): the iteration, then a nonce."""
    return f"{ANNOTATIONS}{iteration}-{uuid.uuid4().hex[:12]}"


def waited_iteration(key: str | None) -> int | None:
    m = _KEY.match(key or "")
    return int(m.group(1)) if m else None


def hand_off(key: str, timeout_s: float, poll_s: float, what: str) -> str:
    """Leave the wait to the Prefect server. Returns 'paused' once resumed; a suspended run does not return
    (Prefect's Pause signal ends this process; the runner starts the run again when it is resumed)."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError(f"{what}: only a flow run can wait in the Prefect server")
    run = ctx.flow_run
    logger.info("%s: handing the wait to the Prefect server (key %s, timeout %.0fs)", what, key, timeout_s)
    if run.deployment_id is not None and run.parent_task_run_id is None:
        suspend_flow_run(timeout=int(timeout_s), key=key)
        return "resumed"  # only when Prefect says this suspend already fired and the run was resumed
    try:
        pause_flow_run(timeout=int(timeout_s), poll_interval=max(1, int(poll_s)), key=key)
    except FlowPauseTimeout:
        raise WaitTimedOut(f"{what}: not resumed within {timeout_s:.0f}s; run the command again to keep waiting") from None
    return "paused"


def paused_waits(prefix: str = ANNOTATIONS) -> list[tuple[str, str]]:
    """(flow run id, pause key) of this Prefect server's paused or suspended runs waiting on `prefix`."""
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=paused, limit=200)
    out = []
    for run in runs:
        key = run.state.state_details.pause_key if run.state else None
        if key and key.startswith(prefix):
            out.append((str(run.id), key))
    return out


def resume_ready(is_ready: Callable[[str], bool], prefix: str = ANNOTATIONS) -> list[str]:
    """Resume every paused run on `prefix` whose wait is over; returns the resumed run ids."""
    resumed = []
    for run_id, key in paused_waits(prefix):
        try:
            if not is_ready(key):
                continue
            resume_flow_run(uuid.UUID(run_id))
            resumed.append(run_id)
            logger.info("resumed flow run %s (%s)", run_id, key)
        except Exception as e:  # resumed meanwhile by someone else, timed out, or Label Studio briefly away
            logger.warning("could not resume %s (%s): %s", run_id, key, e)
    return resumed


def annotations_complete(cfg: RunConfig) -> Callable[[str], bool]:
    """is_ready for annotation waits: every task of the key's iteration has an annotation in Label Studio."""
    from alignline.annotation import connect, iteration_progress
    from alignline.flows.context import RunContext

    ctx, ac = RunContext(cfg), cfg.annotation

    def ready(key: str) -> bool:
        iteration = waited_iteration(key)
        if iteration is None:
            return False
        client = connect(ctx.label_studio_url, ctx.label_studio_token())
        annotated, total = iteration_progress(client, (ac.helpfulness_project, ac.safety_project), iteration)
        return total > 0 and annotated == total
    return ready


def resume_loop(is_ready: Callable[[str], bool], every_s: float, stop: threading.Event) -> None:
    """The resumer: `resume_ready` every `every_s` seconds until `stop` is set (errors logged, never fatal)."""
    while not stop.wait(every_s):
        try:
            resume_ready(is_ready)
        except Exception as e:  # Prefect or Label Studio restarting: try again next round
            logger.warning("resumer: %s", e)


@contextlib.contextmanager
def resumer(is_ready: Callable[[str], bool], every_s: float) -> Iterator[threading.Thread]:
    """Run the resumer in a thread for the block, with this context's Prefect settings (which server)."""
    stop = threading.Event()
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(resume_loop, is_ready, every_s, stop),
                              name="alignline-resumer", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=every_s + 30)
