"""The batch job as its own process, started the way an operator starts it (`python -m jobs.batch_infer`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

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


def config_file(cfg, directory: Path) -> Path:
    """A PipelineConfig written as the YAML file an operator would pass with --config."""
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def clip_corpus(directory: Path, clips: dict, count: int) -> Path:
    """`count` videos in `directory / "videos"`, cycling through the good clips of the `clips` fixture."""
    good = [v for k, v in sorted(clips.items()) if k.startswith("clip_")]
    (directory / "videos").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (directory / "videos" / f"video_{i:02d}.mp4").write_bytes(good[i % len(good)])
    return directory / "videos"


def wait_for(predicate, job: subprocess.Popen, timeout: float, step: float = 0.05):
    """`predicate()`'s first truthy value while the job runs, or None if it ends or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None
