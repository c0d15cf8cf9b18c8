"""A local run owns its Ray: when its driver dies, even by SIGKILL, the Ray processes it started go too.

`ray.init(address="local")` starts the GCS, raylet, dashboard, agents and workers as descendants of the driver.
A driver that ends normally stops them (`ray.shutdown`); one killed by a signal leaves them running for a minute
or more (they notice through timeouts), holding the cores and memory a rerun needs. `RayOwner` starts a watchdog
before `ray.init`: a small process of our own in a session of its own (so a signal to the driver's process group
does not take it down first) that notes the driver's descendants every half second and, as soon as the driver is
gone (its end of a pipe closes, or its pid is gone), stops the ones it noted (SIGTERM, SIGKILL after a grace
period) and exits. `close()` after `ray.shutdown` ends the watchdog the same way. Only for a Ray the run started
itself, never for a cluster named by RAY_ADDRESS.

The watchdog imports nothing but the standard library and psutil: `python pipeline/ray_owner.py DRIVER_PID
[PID ...]` (the pids are the driver's children from before Ray, which are not Ray's).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time

import psutil

REFRESH_SECONDS = 0.5
GRACE_SECONDS = 2.0


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop(processes: list[psutil.Process], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to every live process (and what they started since last noted), SIGKILL to those left after `grace`."""
    live = {p.pid: p for p in processes if _alive(p)}
    for process in list(live.values()):
        with contextlib.suppress(psutil.Error):
            live.update({c.pid: c for c in process.children(recursive=True)})
    for process in live.values():
        with contextlib.suppress(psutil.Error):
            process.terminate()  # psutil refuses a pid that was reused by another process
    left = _wait(list(live.values()), grace)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _wait(left, grace)


def _wait(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still alive after up to `timeout` seconds (a zombie counts as gone: it holds nothing)."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in processes if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def watch(driver_pid: int, exclude: set[int], pipe: int | None = None) -> None:
    """Note the driver's descendants until the driver is gone or `pipe` (its end held by the driver) closes, then
    stop them."""
    me = os.getpid()
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    noted: dict[int, psutil.Process] = {}
    while _alive(driver):
        try:
            for child in driver.children(recursive=True):
                if child.pid != me and child.pid not in exclude:
                    noted.setdefault(child.pid, child)
        except psutil.Error:
            pass
        if pipe is None:
            time.sleep(REFRESH_SECONDS)
        elif select.select([pipe], [], [], REFRESH_SECONDS)[0] and not os.read(pipe, 4096):
            break  # the driver closed its end (close()) or died
    stop(list(noted.values()))


class RayOwner:
    """The watchdog of a Ray this process starts: create it before `ray.init`, `close()` it after `ray.shutdown`."""

    def __init__(self) -> None:
        before = [str(child.pid) for child in psutil.Process().children(recursive=True)]
        self.process = subprocess.Popen(
            [sys.executable, "-P", os.path.abspath(__file__), str(os.getpid()), *before],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def close(self) -> None:
        """End the watchdog: whatever is left of this Ray is stopped, then it exits."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=GRACE_SECONDS * 3)
        except subprocess.TimeoutExpired:
            self.process.kill()


if __name__ == "__main__":
    watch(int(sys.argv[1]), {int(pid) for pid in sys.argv[2:]}, pipe=sys.stdin.fileno())
