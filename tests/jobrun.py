"""The batch job as its own process, started the way an operator starts it (`python -m jobs.batch_infer`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _environment(env: dict[str, str | None]) -> dict[str, str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


def batch_infer(*args: str, env: dict[str, str | None], timeout: float) -> subprocess.CompletedProcess:
    """Run the job from the repository root with this environment plus `env` (a None value removes a variable);
    stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "jobs.batch_infer", *args],
        cwd=ROOT,
        env=_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_batch_infer(*args: str, env: dict[str, str | None], stdout, stderr) -> subprocess.Popen:
    """The job started the same way, not waited for (to watch it, or kill it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.batch_infer", *args], cwd=ROOT, env=_environment(env), stdout=stdout, stderr=stderr
    )
