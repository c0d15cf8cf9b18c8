"""Live progress a person can read, on a terminal and in logs, with Ray's own noise kept out of the way."""

from __future__ import annotations

import io
import logging
import re
import time

import yaml

from pipeline.progress import Progress, RunClock
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


def test_the_bar_says_loading_model_until_the_first_result():
    screen = Terminal()
    progress = Progress(total=3, stream=screen, tick=0.05)
    time.sleep(0.2)  # no result yet: the bar still moves on
    waiting = screen.getvalue()
    progress.update(_rows(1, 0))
    after = screen.getvalue()[len(waiting) :]
    progress.close()
    assert "loading model" in waiting and "0/3" in waiting, waiting
    assert "loading model" not in after and "1/3" in after and "videos/s" in after, after


def test_logs_say_loading_model_while_no_result_has_arrived(caplog):
    caplog.set_level("INFO", logger="fastav.progress")
    progress = Progress(total=4, interval=0.05, stream=io.StringIO(), tick=0.05)
    assert "loading model" in progress.line()
    time.sleep(0.3)  # nothing arrives, yet lines come
    while_loading = [r.getMessage() for r in caplog.records]
    progress.update(_rows(4, 0))
    progress.close()
    assert while_loading and all(
        re.fullmatch(r"progress: 0/4 videos \(0%\), loading model \(0m00s since start\)", m) for m in while_loading
    ), while_loading
    assert "loading model" not in caplog.records[-1].getMessage()


def test_log_lines_print_above_the_bar_not_through_it():
    screen = Terminal()
    handler = logging.StreamHandler(screen)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = Progress(total=4, stream=screen)
        progress.update(_rows(1, 0))
        logging.getLogger("pipeline.ray").warning("inference actor restarted after a crash")
        progress.update(_rows(1, 0))
        progress.close()
    finally:
        root.removeHandler(handler)
    assert not any(type(h).__name__ == "_AboveBar" for h in root.handlers)  # the console handler is back
    lines = [line.split("\r")[-1] for line in screen.getvalue().split("\n")]
    assert "inference actor restarted after a crash" in lines  # a line of its own, no bar fragment in it


def test_the_final_line_reports_the_wall_time_it_is_given():
    clock = RunClock()
    progress = Progress(total=2, interval=1e9, stream=io.StringIO(), clock=clock)
    progress.update(_rows(2, 0))
    assert "4.00 videos/s" in progress.line(seconds=0.5) and "done in 0m00s" in progress.line(seconds=0.5)
    progress.close()


def _final_rates(log: str) -> tuple[str, str]:
    """The videos/s of the progress's last line and of the summary table."""
    progress = re.findall(r"progress: \d+/\d+ videos .*?, (\d+\.\d\d) videos/s, done in", log)
    summary = re.findall(r"this run +\d+ in [\d.]+s \((\d+\.\d\d) videos/s\)", log)
    assert progress and summary, log[-3000:]
    return progress[-1], summary[-1]


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
    rate_in_progress, rate_in_summary = _final_rates(log)
    assert rate_in_progress == rate_in_summary  # one throughput figure
