"""The README's two-node recipe works as written: nodes started from a shell with nothing activated and no
credentials, token auth on, the submission from a second shell with the credentials and a config outside the
repository. It runs in a network namespace of its own (`unshare --net`), so the recipe's default ports are
free whatever else runs on this machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_the_two_node_recipe_runs_as_written(tmp_path):
    assert shutil.which("unshare") and shutil.which("ip"), "needs util-linux unshare and iproute2 (root, as CI runs)"
    done = subprocess.run(
        ["unshare", "--net", sys.executable, str(ROOT / "tests/jobs/readme_recipe.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["nodes_up"], result["shell1_tail"]
    assert result["submit_rc"] == 0, result["submit_err"] + result["shell1_tail"]
    said = result["submit_out"]
    assert "forwarded env: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in said and "recipe-secret" not in said
    assert result["parts"] >= 1 and result["summary"]["success"] == 3
