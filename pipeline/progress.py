"""Live progress of a run, from the result rows as they reach the driver: videos done of total, errors,
videos/s, time left and FLOPs saved so far.

On a terminal it is a tqdm bar; in logs (a Ray job, a pod, a redirected stream) it is one line every
`interval` seconds and a last one at the end, so a log stays readable and grep-able.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pipeline.rows import OK

log = logging.getLogger("fastav.progress")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _flops(value: float) -> str:
    for unit, scale in (("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} FLOPs"


class Progress:
    def __init__(self, total: int, interval: float = 30.0, stream: TextIO | None = None) -> None:
        self.total, self.interval = total, interval
        self.done = self.errors = 0
        self.flops_unpruned = self.flops_pruned = 0.0
        self.start = self._last_line = time.monotonic()
        stream = stream if stream is not None else sys.stderr
        self._bar = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="video", file=stream, dynamic_ncols=True, smoothing=0.1)

    def update(self, rows: list[dict]) -> None:
        for row in rows:
            self.done += 1
            if row.get("status") != OK:
                self.errors += 1
            elif row.get("flops_unpruned") is not None:
                self.flops_unpruned += row["flops_unpruned"]
                self.flops_pruned += row["flops_pruned"]
        if self._bar is not None:
            self._bar.update(len(rows))
            self._bar.set_postfix_str(self._extras(), refresh=False)
        elif time.monotonic() - self._last_line >= self.interval:
            self._log()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _extras(self) -> str:
        saved = self.flops_unpruned - self.flops_pruned
        share = f" ({saved / self.flops_unpruned:.0%})" if self.flops_unpruned else ""
        return f"{self.errors} errors, {_flops(saved)} saved{share}"

    def line(self) -> str:
        rate = self.rate
        if self.done >= self.total:
            left = f"done in {_duration(time.monotonic() - self.start)}"
        else:
            left = f"{_duration((self.total - self.done) / rate)} left" if rate > 0 else "time left unknown"
        percent = self.done / self.total if self.total else 1.0
        return f"{self.done}/{self.total} videos ({percent:.0%}), {rate:.2f} videos/s, {left}, {self._extras()}"

    def _log(self) -> None:
        self._last_line = time.monotonic()
        log.info("progress: %s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._log()
