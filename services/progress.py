"""See what runs: one progress display for training, generation, data import and harvest.

On a terminal it is a rich progress bar (on stderr, so stdout keeps a command's
result); anywhere else (a log file, CI, a Ray worker whose output Ray forwards
to the driver) it is one plain line per update, at most one per
`PLAIN_EVERY_SHARE` of the total unless the update carries metrics (a training
step's loss is always worth a line). Every line goes out once: it is written to
stdout directly (not through `print`, which Ray Train's workers echo to a logger).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")
PLAIN_EVERY_SHARE = 0.1   # plain mode: a line each time another 10% of the total is done (and at the end)
PLAIN_EVERY_S = 10.0      # plain mode without a total: a line at most this often (and at the end)


def interactive(stream: TextIO | None = None) -> bool:
    """A person is watching a terminal: not a pipe, not a Ray worker, not asked to be plain (ALIGNLINE_PLAIN=1)."""
    stream = stream or sys.stderr
    if os.environ.get("ALIGNLINE_PLAIN") or _in_ray_worker():
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        return ray.is_initialized() and ray.get_runtime_context().worker.mode == 1  # WORKER_MODE (not the driver)
    except Exception:  # noqa: BLE001 (an old or half-initialised Ray: treat as not a worker)
        return False


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in metrics.items())


class Progress:
    """`update(done, **metrics)` with the absolute count done, or `advance(n)`; `close()` (or `with`) at the end."""

    def __init__(self, label: str, total: int | None = None, unit: str = "step", *, enabled: bool = True,
                 stream: TextIO | None = None, bar: bool | None = None):
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.done, self._shown_share, self._t0 = 0, -1.0, time.monotonic()
        self._shown_at, self._shown_done = -PLAIN_EVERY_S, -1
        self._stream = stream
        self._rich = None
        if enabled and (interactive() if bar is None else bar):
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._rich = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(),
                                      TextColumn("{task.fields[metrics]}"),
                                      console=Console(file=stream or sys.stderr), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(label, total=total, metrics="")

    def update(self, done: int, **metrics: float) -> None:
        self.done = done
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=done, total=self.total, metrics=_fmt(metrics))
            return
        share = done / self.total if self.total else 0.0
        last = bool(self.total) and done >= self.total
        due = (share - self._shown_share >= PLAIN_EVERY_SHARE if self.total
               else time.monotonic() - self._shown_at >= PLAIN_EVERY_S)
        if metrics or last or due:
            self._shown_share, self._shown_at, self._shown_done = share, time.monotonic(), done
            self._line(metrics)

    def advance(self, n: int = 1, **metrics: float) -> None:
        self.update(self.done + n, **metrics)

    def _line(self, metrics: dict[str, float]) -> None:
        of = f"/{self.total}" if self.total else ""
        elapsed = time.monotonic() - self._t0
        text = f"[{self.label}] {self.unit} {self.done}{of} {_fmt(metrics)}".rstrip() + f" ({elapsed:.1f}s)"
        # Written to the stream, not print(): Ray Train patches print in its workers to also log each line to the
        # root logger, and Ray forwards both, so every printed line showed twice on the driver.
        stream = self._stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.enabled and self._shown_done != self.done and self.done:  # plain: where it ended
            self._shown_done = self.done
            self._line({})

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], label: str, total: int | None = None, unit: str = "item", enabled: bool = True) -> Iterator[T]:
    """Iterate `items`, showing progress (total from len() when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(label, total, unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
