"""Live progress of a run, from the result rows as they reach the driver: videos done of total, errors,
videos/s, time left and FLOPs saved so far, and "loading model" until the first result arrives.

On a terminal it is a tqdm bar, and log lines printed while it shows go above it instead of through it; in logs
(a Ray job, a pod, a redirected stream) it is one line every `interval` seconds, while the model loads too, and a
last one at the end, so a log stays readable and grep-able.

Wall time and videos/s are defined here, once, and the summary uses the same two: wall time runs from the job's
start (`RunClock`, started before the preflight) to the summary's writing, reading the parts back included;
videos/s (`throughput`) is the rows finished in this run over that wall time.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

from pipeline.rows import OK

log = logging.getLogger("fastav.progress")
LOADING = "loading model"


class RunClock:
    """Wall time of a job, from its start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start


def throughput(rows: int, seconds: float) -> float:
    """Videos per second: rows finished in this run over the run's wall seconds."""
    return rows / seconds if seconds > 0 else 0.0


def format_rate(rate: float) -> str:
    return f"{rate:.2f} videos/s"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _flops(value: float) -> str:
    for unit, scale in (("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} FLOPs"


class _AboveBar(logging.Handler):
    """Stands in for a console handler while a bar shows: each record is written above the bar (tqdm.write)."""

    def __init__(self, original: logging.StreamHandler) -> None:
        super().__init__(original.level)
        self.setFormatter(original.formatter)
        self.filters = list(original.filters)
        self.stream = original.stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


class Progress:
    def __init__(
        self,
        total: int,
        interval: float = 30.0,
        stream: TextIO | None = None,
        clock: RunClock | None = None,
        tick: float = 1.0,
    ) -> None:
        self.total, self.interval = total, interval
        self.clock = clock or RunClock()
        self.done = self.errors = 0
        self.flops_unpruned = self.flops_pruned = 0.0
        self.first_result: float | None = None  # clock seconds when the first rows arrived
        self._first_rows = 0
        self._last_line = time.monotonic()
        self._lock = threading.RLock()
        self._closed = False
        self._swapped: list[tuple[logging.Handler, logging.Handler]] = []
        stream = stream if stream is not None else sys.stderr
        self._bar = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                file=stream,
                dynamic_ncols=True,
                bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} videos{postfix}",
            )
            self._bar.set_postfix_str(self._status())
            self._redirect_logging(stream)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, args=(tick,), name="progress", daemon=True)
        self._ticker.start()

    @property
    def loading(self) -> bool:
        """No result has arrived yet: the actors are loading the model (or the first batch is on its way)."""
        return self.first_result is None and self.done < self.total

    def update(self, rows: list[dict]) -> None:
        with self._lock:
            if self.first_result is None and rows:
                self.first_result, self._first_rows = self.clock.seconds(), len(rows)
            for row in rows:
                self.done += 1
                if row.get("status") != OK:
                    self.errors += 1
                elif row.get("flops_unpruned") is not None:
                    self.flops_unpruned += row["flops_unpruned"]
                    self.flops_pruned += row["flops_pruned"]
            if self._bar is not None:
                self._bar.set_postfix_str(self._status(), refresh=False)
                self._bar.update(len(rows))
            elif time.monotonic() - self._last_line >= self.interval:
                self._log()

    @property
    def rate(self) -> float:
        return throughput(self.done, self.clock.seconds())

    def _extras(self) -> str:
        saved = self.flops_unpruned - self.flops_pruned
        share = f" ({saved / self.flops_unpruned:.0%})" if self.flops_unpruned else ""
        return f"{self.errors} errors, {_flops(saved)} saved{share}"

    def _left(self, seconds: float) -> str:
        """Time left from the pace since the first result (the model's loading is behind by then)."""
        if self.done >= self.total:
            return f"done in {_duration(seconds)}"
        since = seconds - (self.first_result or 0.0)
        rows = self.done - self._first_rows
        pace = rows / since if since > 0 and rows > 0 else throughput(self.done, seconds)
        return f"{_duration((self.total - self.done) / pace)} left" if pace > 0 else "time left unknown"

    def _status(self, seconds: float | None = None) -> str:
        seconds = self.clock.seconds() if seconds is None else seconds
        if self.loading:
            return f"{LOADING} ({_duration(seconds)} since start)"
        return f"{format_rate(throughput(self.done, seconds))}, {self._left(seconds)}, {self._extras()}"

    def line(self, seconds: float | None = None) -> str:
        """The progress line; `seconds`: the run's wall time to report (default: the clock's now)."""
        percent = self.done / self.total if self.total else 1.0
        return f"{self.done}/{self.total} videos ({percent:.0%}), {self._status(seconds)}"

    def _log(self, seconds: float | None = None) -> None:
        self._last_line = time.monotonic()
        log.info("progress: %s", self.line(seconds))

    def _tick(self, period: float) -> None:
        """Between results: the bar's clock moves on, and in logs a line comes every `interval` all the same."""
        while not self._stop.wait(period):
            with self._lock:
                if self._closed:
                    return
                if self._bar is not None:
                    self._bar.set_postfix_str(self._status())
                elif time.monotonic() - self._last_line >= self.interval:
                    self._log()

    def _redirect_logging(self, stream: TextIO) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                above = _AboveBar(handler)
                root.removeHandler(handler)
                root.addHandler(above)
                self._swapped.append((handler, above))

    def close(self, seconds: float | None = None) -> None:
        """The last line, with `seconds` as the run's wall time when given (the summary's); once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._bar is not None:
                self._bar.set_postfix_str(self._status(seconds), refresh=False)
                self._bar.close()
                root = logging.getLogger()
                for handler, above in self._swapped:
                    root.removeHandler(above)
                    root.addHandler(handler)
            self._log(seconds)
