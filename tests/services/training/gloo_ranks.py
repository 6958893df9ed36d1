"""Local torch.distributed ranks for the FSDP tests: `world` spawned processes on gloo over loopback.

`target(rank, world, port, plan, queue)` runs in each process (a module-level function, so spawn can import it) and
puts `(rank, results)` on the queue; `run_ranks` returns rank 0's results after every rank exited cleanly.
"""
from __future__ import annotations

import multiprocessing as mp
import socket
from typing import Any, Callable


def run_ranks(target: Callable[..., None], plan: list, world: int = 2) -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, world, port, plan, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results[0]


class KilledAt(Exception):
    """Raised by `kill_after`'s hook: a run stopped after a given step, as a killed worker would."""


def kill_after(step: int) -> Callable[[int], None]:
    """A recipe's on_step hook that stops the run once `step` steps are done."""
    def hook(done: int) -> None:
        if done == step:
            raise KilledAt(step)
    return hook
