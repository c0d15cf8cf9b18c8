"""Ray's own output stays off the operator's terminal: it goes to a log file in the Ray session's log directory,
and the operator gets one line of ours (logger `pipeline.ray`) per event.

Ray reaches a driver's terminal three ways: its C++ core worker writes to file descriptor 2 directly (the
`core_worker.cc ... E` line at every start); the `ray` and `ray.data` loggers have console handlers (Ray Data's
multi-line memory warning from its issue detector); and the driver's error listener prints what the raylet
publishes to sys.stdout (the "A worker died" paragraph after an actor crash). While a run holds `RayOutput`:
fd 2 is that log file, and our own logging and progress write to a copy of the terminal's descriptor; Ray's
loggers write to the file, each warning with a one-line note of ours; the raylet's messages go to the file, and
those about one crash (arriving within a second or two) become one line, e.g. "inference actor restarted after a
crash (worker pid 123, SYSTEM_ERROR); its 1 unfinished batch runs again".

Until Ray is up the file is a temporary one; `attach()` moves it to `<session>/logs/fastav-driver.log`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import TextIO

log = logging.getLogger("pipeline.ray")
LOG_NAME = "fastav-driver.log"
RAY_LOGGERS = ("ray", "ray.data")
EVENT_WINDOW_SECONDS = 1.5

_MEMORY = re.compile(
    r"Operator '(?P<op>[^']+)' (?:uses \S+ of memory per worker on average \(up to (?P<peak>[^)]+)\)|used up to "
    r"(?P<final>\S+) of memory per worker).*?memory=(?P<bytes>\d+)"
)
_RETRY = re.compile(r"Task (?P<task>\S+) failed\. There are (?P<left>\S+) retries remaining")


def _one_line(message: str, limit: int = 200) -> str:
    text = " ".join(message.split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _stage(name: str) -> str:
    if "InferActor" in name:
        return "inference actor"
    if "DecodeStage" in name or "PreprocessStage" in name:
        return "decode/preprocess"
    return name


def ray_note(message: str) -> tuple[str, str] | None:
    """A warning of Ray's Python loggers as (key, one line for the operator); None: for the log file only.
    The key tells repeats apart (Ray repeats its memory warning every 30 s)."""
    text = " ".join(message.split())
    if not text or (text.startswith("Found ") and "To disable issue detection" in text):
        return None
    memory = _MEMORY.search(text)
    if memory:
        op, peak = memory["op"], memory["peak"] or memory["final"]
        need = math.ceil(int(memory["bytes"]) / 2**20)
        if _stage(op) == "decode/preprocess":
            return f"memory:{op}", (
                f"decode/preprocess workers used up to {peak} of memory each, more than decode.memory_mb reserves: "
                f"set decode.memory_mb to {need} or more"
            )
        return f"memory:{op}", f"Ray Data: {op} used up to {peak} of memory per worker (Ray suggests {need} MiB)"
    return text, f"Ray: {_one_line(text)}"


def raylet_events(messages: list[str], restarted: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """What the raylet published within one short window, as one line per event for the operator. A crash comes
    as "A worker died ..." plus one "Task ... failed ... will be retried" per batch the worker held (none when it
    was between batches); `restarted`: the stages whose actors Ray restarted meanwhile (from the actor table),
    which names the dead worker when no task message does."""
    died = [m for m in messages if m.startswith("A worker died")]
    retried = [r for r in (_RETRY.search(m) for m in messages) if r]
    others = [m for m in messages if m not in died and not _RETRY.search(m)]
    joined = " ".join(died)
    pids = re.findall(r"Worker PID: (\d+)", joined)
    kinds = sorted(set(re.findall(r"Worker exit type: (\w+)", joined)))
    who = ", ".join(filter(None, [f"worker pid {', '.join(pids)}" if pids else "", ", ".join(kinds)]))
    who = f" ({who})" if who else ""
    batches: dict[str, int] = dict.fromkeys(sorted(restarted) if died else [], 0)
    for match in retried:
        batches[_stage(match["task"])] = batches.get(_stage(match["task"]), 0) + 1
    lines = []
    for stage, count in batches.items():
        again = f"; its {count} unfinished batch{'es run' if count > 1 else ' runs'} again" if count else ""
        if stage == "inference actor":
            lines.append(f"inference actor restarted after a crash{who}{again}")
        else:
            lines.append(f"a {stage} worker died{who}{again}")
    if died and not batches:
        lines.append(f"a Ray worker died{who}; Ray restarts what it was running")
    return lines + [f"Ray: {_one_line(m)}" for m in others]


def _restarts(job_id: str) -> dict[str, tuple[str, int]]:
    """This job's actors in Ray's actor table: id -> (stage, restarts); {} when the table cannot be read."""
    try:
        import ray
        from ray._private import state

        actors = state.actors(job_id=ray.JobID.from_hex(job_id))
        return {key: (_stage(info["ActorClassName"]), int(info["NumRestarts"])) for key, info in actors.items()}
    except Exception:
        return {}


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


class _Notes(logging.Handler):
    """Each warning of Ray's loggers (already in the log file) as one line of ours, repeats once."""

    def __init__(self, output: RayOutput) -> None:
        super().__init__(logging.WARNING)
        self.output, self.seen = output, set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            note = ray_note(record.getMessage())
        except Exception:
            return
        if note and note[0] not in self.seen:
            self.seen.add(note[0])
            log.warning("%s (details: %s)", note[1], self.output.path)


class RayOutput:
    """Context manager for the part of a run that drives Ray; see the module's docstring."""

    def __init__(self, window: float = EVENT_WINDOW_SECONDS) -> None:
        self.window = window
        self.path: Path | None = None
        self.terminal: TextIO | None = None
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._timer: threading.Timer | None = None
        self._job_id: str | None = None
        self._restart_counts: dict[str, int] = {}

    # -- entering and leaving ------------------------------------------------------------------------------
    def __enter__(self) -> RayOutput:
        import ray._private.worker as worker  # first: importing Ray Data sets up its logger
        import ray.data._internal.logging as data_logging

        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        fd, name = tempfile.mkstemp(prefix="fastav-ray-", suffix=".log")
        self.path, self._temporary = Path(name), True
        self._saved = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        self.terminal = open(self._saved, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False)
        self._file = open(2, "a", buffering=1, errors="backslashreplace", closefd=False)
        self._old_stderr = sys.stderr
        if _writes_to_fd2(sys.stderr):
            sys.stderr = self.terminal
        self._swapped: list[tuple[logging.StreamHandler, TextIO]] = []
        for handler in _our_console_handlers():
            if handler.stream is not self.terminal and (
                handler.stream is self._old_stderr or _writes_to_fd2(handler.stream)
            ):
                self._swapped.append((handler, handler.setStream(self.terminal)))
        self._removed: list[tuple[logging.Logger, logging.Handler]] = []
        self._file_handler = logging.StreamHandler(self._file)
        self._file_handler.setLevel(logging.INFO)
        self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._notes = _Notes(self)
        self._route_ray_loggers()
        self._worker, self._print = worker, worker.print_to_stdstream
        worker.print_to_stdstream = self._raylet_message
        # Ray Data configures its logger afresh when a dataset starts executing: route it again each time.
        self._data_logging, self._configure = data_logging, data_logging.configure_logging

        def configure_logging() -> None:
            self._configure()
            self._route_ray_loggers()

        data_logging.configure_logging = configure_logging
        return self

    def attach(self, logs_dir: str | os.PathLike | None) -> None:
        """Ray is up: move the log file into its session's log directory and route its loggers again (ray.init
        may add handlers)."""
        self._route_ray_loggers()
        try:
            import ray

            self._job_id = ray.get_runtime_context().get_job_id()
        except Exception:
            self._job_id = None
        if logs_dir is None or not self._temporary:
            return
        target = Path(logs_dir) / LOG_NAME
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._file.flush()
            with open(target, "ab") as out:
                out.write(self.path.read_bytes())
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            return  # the temporary file serves
        os.dup2(fd, 2)
        os.close(fd)
        self.path.unlink(missing_ok=True)
        self.path, self._temporary = target, False

    def __exit__(self, *exc: object) -> None:
        self._flush_events()
        self._worker.print_to_stdstream = self._print
        self._data_logging.configure_logging = self._configure
        for name in RAY_LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self._file_handler)
            logger.removeHandler(self._notes)
            removed = [h for owner, h in self._removed if owner is logger]
            if removed and not any(_is_console(h) for h in logger.handlers):
                handler = removed[-1]  # Ray's console handler as Ray last set it, on the stderr it had
                if handler.stream is self.terminal:
                    handler.setStream(self._old_stderr)
                logger.addHandler(handler)
        for handler, stream in self._swapped:
            handler.setStream(stream)
        sys.stderr = self._old_stderr
        self._file.close()  # closefd=False: these leave the descriptors open; a stray write now fails loudly
        self.terminal.close()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if self._temporary and self.path.stat().st_size == 0:
            self.path.unlink(missing_ok=True)

    # -- routing -------------------------------------------------------------------------------------------
    def _route_ray_loggers(self) -> None:
        for name in RAY_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if handler in (self._file_handler, self._notes):
                    continue
                if _is_console(handler):
                    logger.removeHandler(handler)
                    self._removed.append((logger, handler))
            if self._file_handler not in logger.handlers:
                logger.addHandler(self._file_handler)
                logger.addHandler(self._notes)

    def _raylet_message(self, data: dict, ignore_prefix: bool = False) -> None:
        lines = [str(line) for line in data.get("lines", [])]
        for line in lines:
            self._file.write(f"({data.get('pid')}) {line}\n")
        with self._lock:
            self._pending += lines
            if self._timer is None:
                self._timer = threading.Timer(self.window, self._flush_events)
                self._timer.daemon = True
                self._timer.start()

    def _flush_events(self) -> None:
        with self._lock:
            messages, self._pending = self._pending, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        restarted: set[str] = set()
        if any(m.startswith("A worker died") for m in messages) and self._job_id:
            for key, (stage, count) in (now := _restarts(self._job_id)).items():
                if count > self._restart_counts.get(key, 0):
                    restarted.add(stage)
            self._restart_counts.update({key: count for key, (_, count) in now.items()})
        for line in raylet_events(messages, restarted):
            log.warning("%s (details: %s)", line, self.path)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _our_console_handlers() -> list[logging.StreamHandler]:
    """Stream handlers of every logger but Ray's (those are routed to the file instead)."""
    loggers = [logging.getLogger()] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and not (name == "ray" or name.startswith("ray."))
    ]
    return [h for logger in loggers for h in logger.handlers if _is_console(h)]
