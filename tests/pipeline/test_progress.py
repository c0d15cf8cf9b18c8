"""Live progress a person can read, on a terminal and in logs, with Ray's own noise kept out of the way."""

from __future__ import annotations

import io
import re

import yaml

from pipeline.progress import Progress
from tests.jobrun import batch_infer
from tests.pipeline.conftest import write_local
from tests.pipeline.test_graph import config


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _rows(ok: int, errors: int) -> list[dict]:
    good = [{"status": "ok", "flops_unpruned": 4e12, "flops_pruned": 1e12}] * ok
    return good + [{"status": "error", "flops_unpruned": None, "flops_pruned": None}] * errors


def test_a_terminal_gets_a_progress_bar():
    screen = Terminal()
    progress = Progress(total=5, stream=screen)
    progress.update(_rows(2, 1))
    progress.update(_rows(2, 0))
    progress.close()
    shown = screen.getvalue()
    assert "5/5" in shown and "video" in shown and "1 errors" in shown and "12.00 TFLOPs saved (75%)" in shown


def test_logs_get_a_line_with_counts_rate_eta_and_savings(caplog):
    caplog.set_level("INFO", logger="fastav.progress")
    progress = Progress(total=10, interval=0.0, stream=io.StringIO())
    progress.update(_rows(3, 1))
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(
        r"progress: 4/10 videos \(40%\), \d+\.\d\d videos/s, \d+m\d\ds left, 1 errors, 9\.00 TFLOPs saved \(75%\)",
        lines[0],
    ), lines[0]


def test_the_job_log_shows_progress_lines_and_no_ray_noise(ray_cluster, omni_checkpoint, clips, tmp_path):
    videos = {f"video_{i}.mp4": clips["clip_0000.mp4"] for i in range(6)}
    videos.update({"truncated.mp4": clips["truncated.mp4"], "not_a_video.mp4": clips["not_a_video.mp4"]})
    source = write_local(tmp_path / "videos", videos)
    cfg = config(
        str(source),
        str(tmp_path / "out"),
        str(omni_checkpoint),
        decode={"batch_size": 1},
        infer={"batch_size": 1, "max_new_tokens": 24},
        progress_seconds=0.2,
    )
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = batch_infer("--config", str(config_file), env={"RAY_ADDRESS": ray_cluster}, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    progress = re.findall(r"progress: (\d+)/8 videos .* videos/s, .*, (\d+) errors, .* saved", log)
    assert len(progress) >= 2 and progress[-1] == ("8", "2"), log[-3000:]
    assert any(int(done) < 8 for done, _ in progress)  # lines while the job runs, not only at the end
    for noise in ("Total Progress", "Execution plan", "Running Dataset", "(MapWorker", "(pid=", "decord"):
        assert noise not in log, noise
    assert "videos          8 (6 success, 2 error)" in proc.stdout
    assert "error           DecodeError: 2 (permanent: a rerun skips it)" in proc.stdout
