"""benchmarks/gpu.py runs where GPU machines are: torch and transformers, no Ray, boto3 or decord.

CI has no GPU, so the script is checked here at --tiny size on the CPU, with those packages made unimportable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "boto3", "botocore", "decord", "av", "moto", "pyarrow")

# Blocked packages look absent, as on the GPU machine: every finder says it has no such module (so
# `import x` raises ModuleNotFoundError and `importlib.util.find_spec(x)` returns None, which optional-import
# checks in transformers and accelerate rely on).
BOOTSTRAP = f"""
import runpy, sys
class Absent:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)
sys.meta_path[:] = [Absent(finder) for finder in sys.meta_path]
for name in [n for n in sys.modules if n.split(".")[0] in {BLOCKED!r}]:
    del sys.modules[name]
sys.argv = ["benchmarks.gpu"] + sys.argv[1:]
runpy.run_module("benchmarks.gpu", run_name="__main__")
"""


def test_gpu_benchmark_runs_without_ray_boto3_or_decord(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BOOTSTRAP,
            "--tiny",
            "--repeats",
            "1",
            "--family",
            "qwen3_omni",
            "qwen3_vl",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"prefill", "generate", "thinker", "decoding", "targets"} <= result.keys()
    for row in result["prefill"]:
        assert row["counts"]["fastav"]["host_reads"] == row["counts"]["unpruned"]["host_reads"] + 1
        assert 0 < row["flops_ratio"] < 1 and row["last_layer_tokens"] < row["tokens"]
    eight, sixty = result["thinker"]["cases"]
    assert eight["input_tokens"]["video"] < sixty["input_tokens"]["video"] and eight["flops_ratio"] < 1
    decoding = result["decoding"]
    assert decoding["same_text_compiled_vs_eager"] and 0 < decoding["kv_cache_ratio"] < 1
    assert decoding["compile_s"]["fastav_compiled"] > 0 == decoding["compile_s"]["fastav_eager"]
    assert len(result["targets"]) == len(result["prefill"]) + 7
    assert "targets:" in proc.stdout and "saved" in proc.stdout
    assert [row["family"] for row in result["families"]] == ["qwen3_omni", "qwen3_vl"]
    assert all(0 < row["flops_ratio"] < 1 for row in result["families"])
