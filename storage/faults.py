"""Fault points: named write boundaries where a test can kill (or freeze) the process for real.

`fault_point("catalog.renamed")` sits in the real code between two writes that
must both happen (a Parquet file renamed into place, then its catalog row). It
does nothing unless `$ALIGNLINE_FAULT` names it, so the cost on the main path is
one dict lookup. Tests run the real code in a subprocess with, for example,

    ALIGNLINE_FAULT=catalog.renamed            # SIGKILL the first time the point is reached
    ALIGNLINE_FAULT=catalog.renamed@2          # ... the second time
    ALIGNLINE_FAULT=iterate.locked:stop        # SIGSTOP (hold whatever it holds until the test kills it)
    ALIGNLINE_FAULT=a,b@3                      # several points

then rerun in a fresh process and check what is on disk and in the registry.
SIGKILL, not an exception: no `finally`, no `atexit`, no buffered write gets to
run, exactly as when the machine loses power or the OOM killer strikes.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "ALIGNLINE_FAULT"
POINTS = (  # every boundary the real code marks (tests/test_faults.py injects a fault at each)
    "catalog.renamed",        # dataset Parquet renamed into place -> its catalog row
    "ledger.written",         # step ledger temp file written -> renamed over the ledger
    "harvest.published",      # comparisons (and quarantine) published -> harvest ledger file
    "checkpoint.written",     # checkpoint state + digest written to a temp folder -> renamed into place
    "registry.registered",    # model version created -> alias set (and the step's ledger entry)
    "promote.alias_set",      # champion alias moved -> promotion record finished (history)
    "iterate.step_done",      # an iteration step returned -> recorded in the iteration ledger
    "iterate.locked", "harvest.locked", "promote.locked",  # a long job holds its data-dir lock
)
_hits: Counter[str] = Counter()


def _armed() -> dict[str, tuple[int, str]]:
    """{point: (hit number, action)} from $ALIGNLINE_FAULT."""
    armed = {}
    for entry in filter(None, (e.strip() for e in os.environ.get(ENV, "").split(","))):
        entry, _, action = entry.partition(":")
        name, _, nth = entry.partition("@")
        armed[name] = (int(nth) if nth.isdigit() else 1, action or "kill")
    return armed


def fault_point(name: str) -> None:
    """Kill (SIGKILL) or freeze (SIGSTOP) this process here when $ALIGNLINE_FAULT names this point."""
    if ENV not in os.environ:
        return
    armed = _armed().get(name)
    if armed is None:
        return
    _hits[name] += 1
    if _hits[name] == armed[0]:
        os.kill(os.getpid(), signal.SIGSTOP if armed[1] == "stop" else signal.SIGKILL)
