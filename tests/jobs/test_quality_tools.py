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
    # every point carries its spread over the two inputs
    for p in result["points"]:
        spread = p["top1_spread"]
        assert p["inputs"] == 2 and len(spread["per_input"]) == len(p["kl_spread"]["per_input"]) == 2
        assert spread["min"] <= p["top1"] <= spread["max"] and spread["se"] >= 0 and p["kl_spread"]["se"] >= 0
    # each strategy's FLOPs-matched setting is in the sweep, at the budget
    matched = [p for p in result["points"] if p["matched"]]
    assert sorted(p["settings"]["strategy"] for p in matched) == ["fastav", "fastv", "low_attentive"]
    assert [p["settings"] for p in matched] == result["matched"] and not result["unmatched"]
    assert all(0.79 <= p["flops_ratio"] <= 0.8 for p in matched)
    # the pick: the lowest KL among the settings tied (within noise) with the top-1 leader
    best, chosen = result["best"], result["pick"]
    fitting = [p for p in result["points"] if p["flops_ratio"] <= 0.8]
    leader = max(p["top1"] for p in fitting)
    tied = [p for p in fitting if p["settings"] in chosen["tied"]]
    assert best["flops_ratio"] <= 0.8 and chosen["best"] == best["settings"] and best in tied
    assert any(p["top1"] == leader for p in tied) and best["kl"] == min(p["kl"] for p in tied)
    assert chosen["tie"] == (len(tied) > 1) and chosen["noise"] >= 1 / 6  # at least one of the 6 steps
    assert (out / "frontier.png").read_bytes().startswith(PNG)
    # the written block is accepted by the job and is the best setting
    block = yaml.safe_load((out / "fastav.yaml").read_text())
    job = PipelineConfig.model_validate(
        {"source": {"uri": "/v"}, "output": "/o", "model": {"checkpoint": "/m"}, **block}
    )
    assert job.fastav.pruning().summary() == best["settings"]
    printed = capsys.readouterr().out
    assert "frontier" in printed and "pick: highest mean top-1 agreement" in printed and "[FLOPs-matched]" in printed
    assert ("tie: " in printed) == chosen["tie"] and " ±se " in printed


def test_the_frontier_figure_marks_the_pick_and_tells_a_strategys_settings_apart(tmp_path):
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_rgba

    from pipeline import plots

    def point(flops, top1, matched=False, **settings):
        return {"settings": {"strategy": "fastav", **settings}, "flops_ratio": flops, "top1": top1, "kl": 0.3,
                "top1_spread": {"se": 0.02}, "matched": matched}  # fmt: skip

    points = [
        point(0.3, 0.5, global_layer=7, global_keep_ratio=1 / 3, fine_ratio=0.1),
        point(0.32, 0.55, global_layer=7, global_keep_ratio=0.5, fine_ratio=0.1),
        point(0.5, 0.6, global_layer=15, global_keep_ratio=1 / 3, fine_ratio=0.2),
        point(0.56, 0.7, matched=True, global_layer=15, global_keep_ratio=0.36, fine_ratio=0.2),
    ]
    figure, axis, marks = plots.calibration_figure(points, [points[1], points[3]], 0.56, "t", pick=points[3])
    assert marks == {"pick": (0.56, 0.7)}
    (ring,) = [c for c in axis.collections if c.get_label() == "pick"]
    assert ring.get_offsets().tolist() == [[0.56, 0.7]] and to_rgba("red") in map(tuple, ring.get_edgecolors())
    # one colour, three markers: the layer-7 settings, the layer-15 one, the matched one
    shapes = [c for c in axis.collections if isinstance(c, PathCollection) and c.get_label() != "pick"]
    assert sorted(len(c.get_offsets()) for c in shapes) == [1, 1, 2]
    assert len({c.get_paths()[0].vertices.tobytes() for c in shapes}) == 3
    assert {tuple(c.get_facecolors()[0]) for c in shapes} == {tuple(shapes[0].get_facecolors()[0])}
    assert "L15 k.36 P.2" in [t.get_text() for t in axis.texts]  # frontier points are labelled
    assert any(t.get_text().startswith("pick: fastav L15 k.36 P.2") for t in axis.texts)
    figure.clf()
    path = plots.calibration(points, points[1:2], 0.56, tmp_path / "f.png", "t", pick=points[0])
    assert path.read_bytes().startswith(PNG)


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
    assert result["inputs"] == [str(tmp_path / "videos/a.mp4")] and len(result["points"]) == 8 + 1
    (matched,) = [p for p in result["points"] if p["matched"]]  # planned with the thinker's own token layout
    assert matched["settings"]["strategy"] == "fastav" and 0.89 <= matched["flops_ratio"] <= 0.9

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
