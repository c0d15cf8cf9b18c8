"""benchmarks/decode.py at --tiny size: every variant is timed, and the pruned caches are smaller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decode_benchmark_times_every_variant_and_shrinks_the_cache(tmp_path):
    out = tmp_path / "decode.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.decode", "--tiny", "--repeats", "1", "--compile-backend", "aot_eager",
         "--out", str(out)],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    names = {f"{s}_{v}" for s in ("unpruned", "pruned") for v in ("dynamic_eager", "static_eager", "static_compiled")}
    assert set(result["decode_step_s"]) == names
    rows = result["decode_step_s"].values()  # a step is a difference of two timings: noise may flip a tiny one
    assert all(row["runs"] == 1 and row["min"] <= row["median"] <= row["max"] for row in rows), rows
    assert result["decode_step_s"]["unpruned_dynamic_eager"]["vs_unpruned_dynamic_eager"] == 1.0
    kv = result["kv_cache_bytes_per_sample"]
    assert 0 < kv["pruned"] < kv["unpruned"]
    allocated = result["static_cache_allocated_bytes"]
    assert 0 < allocated["pruned"] < allocated["unpruned"]
    assert all(c["graphs"] == 1 and c["eager_steps"] == 0 for c in result["compile"].values()), result["compile"]
    assert "pruned_static_compiled" in proc.stdout
