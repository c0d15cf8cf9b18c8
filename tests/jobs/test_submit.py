"""What `fastav submit` ships: this checkout from a clone, nothing from an installed package (an image)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from jobs.cli import log_tail, main

ROOT = Path(__file__).resolve().parents[2]


def _job_config(tmp_path: Path) -> Path:
    path = tmp_path / "outside-the-repo.yaml"
    config = {"source": {"uri": "s3://videos/in/"}, "output": "s3://results/out/", "model": {"checkpoint": "s3://m/x"}}
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_checkout_ships_itself_without_venv_or_work_files(tmp_path, capsys):
    assert main(["submit", "--config", str(_job_config(tmp_path)), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"working_dir {ROOT} (" in said
    files, mib = said.split(f"working_dir {ROOT} (")[1].split(")")[0].split(" files, ")
    assert int(files) < 500 and float(mib.split()[0]) < 20  # .venv, work/, caches and results stay home
    assert '"uri":"s3://videos/in/"' in said  # the config travels inline: a file outside the repo is fine


def test_an_installed_fastav_ships_no_code(tmp_path):
    """Installed non-editable (as in the image), the project root would be site-packages: ship nothing."""
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    site = tmp_path / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys, jobs.cli as cli; print(cli.__file__); "
        "sys.exit(cli.main(['submit', '--config', sys.argv[1], '--dry-run']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(_job_config(tmp_path))],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    module, said = done.stdout.split("\n", 1)
    assert module.startswith(str(site))  # really the installed copy
    assert "no code (the cluster runs its installed fastav)" in said and "working_dir" not in said


def test_status_logs_start_at_a_line():
    logs = "first line\nsecond line\nthird line\n"
    assert log_tail(logs, 15) == "third line"
    assert log_tail(logs, 1000) == "first line\nsecond line\nthird line"
