"""`fastav calibrate` and `fastav rollout` end to end: on tiny Qwen2 / LLaMA checkpoints with a token file, and
on the tiny Qwen2.5-Omni thinker through a job config (real mp4 clips, the job's decode and prompt settings)."""

import json

import pytest
import torch
import yaml

from jobs.cli import main
from pipeline.config import PipelineConfig
from tests.pipeline.conftest import write_local

PNG = b"\x89PNG\r\n\x1a\n"


def _token_file(tmp_path, count=2):
    g = torch.Generator().manual_seed(0)
    spans = [[4, 40, "video"], [40, 64, "audio"]]
    entries = [
        {"name": f"p{i}", "input_ids": torch.randint(3, 200, (70,), generator=g).tolist(), "spans": spans}
        for i in range(count)
    ]
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(entries))
    return path


def _job(tmp_path, clips, omni_checkpoint):
    config = {
        "source": {"uri": str(write_local(tmp_path / "videos", {"a.mp4": clips["clip_0000.mp4"]}))},
        "output": str(tmp_path / "output"),
        "model": {"checkpoint": str(omni_checkpoint)},
        "decode": {"num_frames": 4},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_calibrate_on_a_text_decoder(checkpoints, tmp_path, capsys, family):
    out = tmp_path / "cal"
    argv = ["calibrate", "--checkpoint", str(checkpoints[family]), "--tokens", str(_token_file(tmp_path))]
    argv += ["--strategies", "fastav", "low_attentive", "fastv", "--steps", "3", "--max-flops", "0.8"]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "calibration.json").read_text())
    assert result["inputs"] == ["p0", "p1"] and len(result["points"]) >= 6
    assert all(0 <= p["top1"] <= 1 and 0 < p["flops_ratio"] < 1 and p["steps"] == 6 for p in result["points"])
    flops = [p["flops_ratio"] for p in result["frontier"]]
    assert flops == sorted(flops) and [p["top1"] for p in result["frontier"]] == sorted(
        p["top1"] for p in result["frontier"]
    )
    best = result["best"]
    assert best["flops_ratio"] <= 0.8
    assert best["top1"] == max(p["top1"] for p in result["points"] if p["flops_ratio"] <= 0.8)
    assert (out / "frontier.png").read_bytes().startswith(PNG)
    # the written block is accepted by the job and is the best setting
    block = yaml.safe_load((out / "fastav.yaml").read_text())
    job = PipelineConfig.model_validate(
        {"source": {"uri": "/v"}, "output": "/o", "model": {"checkpoint": "/m"}, **block}
    )
    assert job.fastav.pruning().summary() == best["settings"]
    assert "frontier" in capsys.readouterr().out


def test_calibrate_says_when_nothing_fits(checkpoints, tmp_path, capsys):
    argv = ["calibrate", "--checkpoint", str(checkpoints["qwen2"]), "--tokens", str(_token_file(tmp_path, 1))]
    assert main([*argv, "--strategies", "fastv", "--steps", "2", "--max-flops", "0.01", "--out", str(tmp_path)]) == 1
    assert "no setting within --max-flops 0.01" in capsys.readouterr().err
    assert not (tmp_path / "fastav.yaml").exists() and (tmp_path / "calibration.json").exists()


def test_bad_inputs_are_one_line(checkpoints, tmp_path, capsys):
    assert main(["calibrate", "--checkpoint", str(checkpoints["qwen2"])]) == 2
    assert "--checkpoint needs --tokens" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"input_ids": [1, 2, 3], "spans": [[0, 9, "video"]]}]))
    assert main(["rollout", "--checkpoint", str(checkpoints["qwen2"]), "--tokens", str(bad)]) == 2
    assert "within the 3 input ids" in capsys.readouterr().err


def test_calibrate_and_rollout_on_the_omni_thinker_from_a_job_config(tmp_path, clips, omni_checkpoint, capsys):
    job, _ = _job(tmp_path, clips, omni_checkpoint)
    argv = ["calibrate", "--config", str(job), "--inputs", "1", "--steps", "2", "--strategies", "fastav"]
    assert main([*argv, "--max-flops", "0.9", "--out", str(tmp_path / "cal")]) == 0
    result = json.loads((tmp_path / "cal/calibration.json").read_text())
    assert result["inputs"] == [str(tmp_path / "videos/a.mp4")] and len(result["points"]) == 8

    assert main(["rollout", "--config", str(job), "--out", str(tmp_path / "ro")]) == 0
    report = json.loads((tmp_path / "ro/rollout.json").read_text())
    assert report["num_layers"] == 6 and report["tokens"]["video"] > 0 and report["tokens"]["audio"] > 0
    last = report["layers"][-1]
    assert last["video"] > 0 and last["audio"] > 0
    assert last["av_early"] + last["av_late"] == pytest.approx(last["video"] + last["audio"], abs=1e-5)
    assert (tmp_path / "ro/rollout.png").read_bytes().startswith(PNG)
    assert "AV early" in capsys.readouterr().out


def test_rollout_on_a_text_decoder(checkpoints, tmp_path):
    argv = [
        "rollout",
        "--checkpoint",
        str(checkpoints["llama"]),
        "--tokens",
        str(_token_file(tmp_path)),
        "--index",
        "1",
    ]
    assert main([*argv, "--out", str(tmp_path / "ro")]) == 0
    report = json.loads((tmp_path / "ro/rollout.json").read_text())
    assert report["input"] == "p1" and len(report["layers"]) == 6 and len(report["binned"][0]) == 64
    assert all(
        sum(row[k] for k in ("text", "video", "audio")) == pytest.approx(1, abs=1e-4) for row in report["layers"]
    )
