"""infra/Dockerfile without a Docker engine (none runs here): parsed, linted with hadolint, its build context
checked against .dockerignore, and its user step run for real against an Ubuntu 24.04 /etc."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "infra/Dockerfile"))
    parser.build_args = {}
    return parser


def instructions(dockerfile, name: str) -> list[str]:
    return [i["value"] for i in dockerfile.structure if i["instruction"] == name]


def test_stages_pins_and_a_numeric_non_root_user(dockerfile):
    stages = [v.split(" AS ")[-1] for v in instructions(dockerfile, "FROM")]
    assert stages == ["runtime", "flash-attn-build", "runtime-flash"]
    runs = " ".join(instructions(dockerfile, "RUN"))
    assert "torch==2.14.1 torchvision==0.29.1" in runs and "'.[pipeline,cluster,quality]'" in runs
    users = instructions(dockerfile, "USER")
    assert users[-1] == "1000:1000" and all(u.split(":")[0].isdigit() for u in users)  # runAsNonRoot can verify
    assert "useradd --create-home --uid 1000" not in runs  # Ubuntu 24.04 has UID 1000 already: the script handles it


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "infra/Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _in_context(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore lets `relative` into the build context (last matching pattern wins)."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), body) for i in range(1, len(parts) + 1)) or fnmatch.fnmatch(
            relative, body
        ):
            included = negate
    return included


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy(dockerfile):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [v.split()[0] for v in instructions(dockerfile, "COPY") if not v.startswith("--from")]
    sources = [s for v in instructions(dockerfile, "COPY") if not v.startswith("--from") for s in v.split()[:-1]]
    assert copied and sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert _in_context(source, patterns), f"{source} is copied but .dockerignore leaves it out"
    for heavy in (".venv/lib/x.so", ".git/objects/ab", "work/default/output/part-1.parquet", "tests/conftest.py"):
        assert not _in_context(heavy, patterns), heavy


def test_the_user_step_works_on_ubuntu_24_04(tmp_path):
    """Ubuntu 24.04's /etc has `ubuntu` at UID 1000; run infra/create-user.sh against such an /etc."""
    root = tmp_path / "noble"
    (root / "etc").mkdir(parents=True)
    (root / "home" / "ubuntu").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n"
    )
    (root / "etc/group").write_text("root:x:0:\nubuntu:x:1000:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nubuntu:!::\n")
    (root / "etc/login.defs").write_text("USERGROUPS_ENAB yes\nUID_MIN 1000\nGID_MIN 1000\nCREATE_HOME yes\n")
    os.chown(root / "home" / "ubuntu", 1000, 1000)
    script = ROOT / "infra/create-user.sh"
    for _ in range(2):  # idempotent: a rebuilt layer runs it again
        done = subprocess.run(
            ["sh", str(script)], env={**os.environ, "PREFIX": str(root)}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    passwd = (root / "etc/passwd").read_text()
    assert "ray:x:1000:1000::/home/ray:/bin/bash" in passwd and "ubuntu" not in passwd
    assert "ray:x:1000:" in (root / "etc/group").read_text()
    assert (root / "home" / "ray").is_dir() and not (root / "home" / "ubuntu").exists()
