"""Run the README's two-node recipe as a person types it; tests/jobs/test_readme_recipe.py starts this script
inside a network namespace of its own (`unshare --net`), so the recipe's default ports are free.

    python tests/jobs/readme_recipe.py WORKDIR      # prints one JSON line with what happened

Shell 1 (the nodes) runs with a clean PATH (no environment activated), no AWS credentials and no Ray settings;
shell 2 (the submission) gets the credentials and the job config's path where the recipe has placeholders.
An S3 server (moto) in the same namespace holds the clips, the checkpoint and the output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "recipe",
    "AWS_SECRET_ACCESS_KEY": "recipe-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def recipe_block(name: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- recipe:{name} -->\s*```bash\n(.*?)```", readme, flags=re.DOTALL)
    if match is None:
        raise SystemExit(f"README.md has no recipe:{name} block")
    return match.group(1)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def dashboard_up(home: Path) -> bool:
    token_file = home / ".ray" / "auth_token"
    if not token_file.exists():
        return False
    request = urllib.request.Request("http://127.0.0.1:8265/nodes?view=summary")
    request.add_header("Authorization", f"Bearer {token_file.read_text().strip()}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.load(response)["data"]["summary"]
        return sum(1 for node in nodes if node["raylet"]["state"] == "ALIVE") >= 2
    except Exception:
        return False


def main() -> int:
    work = Path(sys.argv[1])
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open(work / "moto.log", "w") as log:
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "5000"], stdout=log, stderr=log
        )
    wait_for(lambda: reachable(5000), 30)
    os.environ.update(CREDENTIALS)
    from fastav import testing
    from pipeline import synthetic
    from pipeline.config import StorageConfig
    from pipeline.storage import Storage

    s3 = Storage(StorageConfig(endpoint_url="http://127.0.0.1:5000"))
    for bucket in ("recipe-videos", "recipe-models", "recipe-results"):
        s3.s3.create_bucket(Bucket=bucket)
    for path in synthetic.write_corpus(work / "clips", count=3, seconds=2.0):
        s3.write(f"s3://recipe-videos/in/{path.name}", path.read_bytes())
    for path in testing.save_omni_thinker(work / "ckpt", processor=True).iterdir():
        s3.write(f"s3://recipe-models/tiny/{path.name}", path.read_bytes())
    config = work / "jobs" / "my-job.yaml"  # outside the repository
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "source: {uri: s3://recipe-videos/in/}\n"
        "output: s3://recipe-results/run/\n"
        "storage: {endpoint_url: 'http://127.0.0.1:5000'}\n"
        f"model: {{checkpoint: s3://recipe-models/tiny, cache_dir: {work / 'cache'}}}\n"
        "decode: {num_frames: 4, batch_size: 1, num_cpus: 0.5, memory_mb: 256}\n"
        "infer: {batch_size: 2, max_new_tokens: 4}\n"
    )

    bare = {"PATH": CLEAN_PATH, "HOME": str(home), "LANG": "C.UTF-8"}
    nodes = subprocess.Popen(
        ["bash", "-c", recipe_block("nodes") + "\nwait\n"],
        cwd=ROOT,
        env=bare,
        stdout=open(work / "shell1.log", "w"),  # noqa: SIM115 - lives as long as the nodes
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    result = {"nodes_up": wait_for(lambda: dashboard_up(home), 180)}
    if result["nodes_up"]:
        submit = recipe_block("submit").replace("~/jobs/my-job.yaml", str(config))
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            submit = submit.replace(f"{name}=...", f"{name}={CREDENTIALS[name]}")
        done = subprocess.run(["bash", "-c", submit], cwd=ROOT, env=bare, capture_output=True, text=True, timeout=400)
        result.update(submit_rc=done.returncode, submit_out=done.stdout, submit_err=done.stderr[-3000:])
        parts = [o.uri for o in s3.list("s3://recipe-results/run/") if o.uri.rsplit("/", 1)[-1].startswith("part-")]
        result["parts"] = len(parts)
        result["summary"] = json.loads(s3.read("s3://recipe-results/run/_summary.json")) if parts else None
    os.killpg(nodes.pid, signal.SIGTERM)
    try:
        nodes.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(nodes.pid, signal.SIGKILL)
    moto.terminate()
    result["shell1_tail"] = (work / "shell1.log").read_text()[-2000:]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
