"""`fastav` command line: run a job here, submit it to a Ray cluster, follow it; plus the library's tools.

    fastav run --config job.yaml                       # on this machine (local Ray, or RAY_ADDRESS)
    fastav submit --config job.yaml --address http://head:8265 [--wait]
    fastav status <submission-id> --address http://head:8265 [--logs]
    fastav calibrate --config job.yaml --max-flops 0.56 # best pruning setting for this model (jobs/calibrate.py)
    fastav rollout --config job.yaml                   # attention-rollout analysis of one input (jobs/rollout.py)
    fastav flops --preset videollama2-av               # library tools (fastav.cli)

`submit` validates the config before anything leaves this machine, ships the project directory as the job's
working_dir and the config inline in the entrypoint (it holds no secrets), and forwards credentials from the
environment by name: their values go to the cluster, never to the screen or the logs.

Clusters with Ray token auth (the default of our compose and KubeRay files): `submit` and `status` send the
token from RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (what `ray
get-auth-token` prints on the head); it is never printed, logged or forwarded to the job.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import sys
import time
import uuid
from pathlib import Path

from pydantic import ValidationError

from pipeline.config import PipelineConfig
from pipeline.config_errors import ConfigFileError, describe_config_error

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FORWARDED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
)
UPLOAD_EXCLUDES = [".git", ".venv", "work", "**/__pycache__", ".pytest_cache", ".ruff_cache", "benchmarks/results"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def load_config(path: Path, **overrides) -> PipelineConfig:
    config = PipelineConfig.from_yaml(path)
    return config.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def entrypoint(config: PipelineConfig) -> str:
    return "python -m jobs.batch_infer --config-json " + shlex.quote(config.model_dump_json(exclude_none=True))


RAY_UPLOAD_LIMIT = 512 * 2**20  # Ray refuses a working_dir package larger than this


def source_checkout() -> Path | None:
    """The project's source tree if this code runs from one (a clone), else None: an installed package (as in our
    image) lives in site-packages, and shipping that directory would upload every installed library."""
    pyproject = PROJECT_ROOT / "pyproject.toml"
    if pyproject.is_file() and 'name = "fastav"' in pyproject.read_text():
        return PROJECT_ROOT
    return None


def upload_size(working_dir: Path) -> tuple[int, int]:
    """(files, bytes) of `working_dir` minus UPLOAD_EXCLUDES, roughly as Ray packages it."""
    files = size = 0
    for root, dirs, names in os.walk(working_dir):
        relative = Path(root).relative_to(working_dir)
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(str(relative / d), p) or d == p for p in UPLOAD_EXCLUDES)]
        for name in names:
            if not any(fnmatch.fnmatch(str(relative / name), p) for p in UPLOAD_EXCLUDES):
                files += 1
                size += (Path(root) / name).stat().st_size
    return files, size


def runtime_env(working_dir: Path | None, env_names: list[str]) -> tuple[dict, list[str]]:
    forwarded = {name: os.environ[name] for name in env_names if name in os.environ}
    env: dict = {"env_vars": forwarded}
    if working_dir is not None:
        env.update(working_dir=str(working_dir), excludes=UPLOAD_EXCLUDES)
    return env, sorted(forwarded)


def resolve_working_dir(value: str) -> Path | None:
    """`auto`: this source checkout, or nothing when fastav runs installed (the cluster's image has the code)."""
    if value == "none":
        return None
    if value == "auto":
        return source_checkout()
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise OSError(f"--working-dir {value} is not a directory")
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from jobs.batch_infer import main as batch_main

    argv = ["--config", str(args.config)] if args.config else []
    for flag, value in (("--output", args.output), ("--run-id", args.run_id)):
        if value:
            argv += [flag, value]
    flags = [flag for flag, on in (("--overwrite", args.overwrite), ("--retry-errors", args.retry_errors)) if on]
    return batch_main([*argv, *flags])


def auth_token() -> str | None:
    """The Ray auth token from the environment or Ray's default file, if any (never printed)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
        if path and Path(path).is_file():
            return Path(path).read_text().strip() or None
    return None


def _client(address: str):
    import logging

    from ray.job_submission import JobSubmissionClient

    # The client narrates packaging and upload ("skipping upload", default excludes) at INFO/WARNING; some of
    # its modules set their own levels when imported, so every Ray logger is quieted after the import.
    for name in [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]:
        logging.getLogger(name).setLevel(logging.ERROR)
    token = auth_token()
    return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"} if token else None)


class ClusterError(Exception):
    """The job API refused or could not be reached: one line for the user."""


def _one_line(error: BaseException, address: str) -> ClusterError | None:
    from ray.exceptions import AuthenticationError

    text = str(error)
    if isinstance(error, AuthenticationError):
        if "invalid" in text.lower() or text.startswith("Authentication failed"):
            return ClusterError(f"the Ray cluster at {address} rejected the auth token (check RAY_AUTH_TOKEN)")
        return ClusterError(
            f"the Ray cluster at {address} requires an auth token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH "
            "(`ray get-auth-token` on the head prints it)"
        )
    if isinstance(error, ConnectionError) or "Failed to connect" in text:
        return ClusterError(f"cannot reach the Ray job API at {address}")
    if "already exists" in text and "submission_id" in text:
        return ClusterError(f"a job with this submission id already exists on {address}; pick another id")
    return None


def wait_for(client, submission_id: str, timeout: float, poll: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    status = str(client.get_job_status(submission_id).value)
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(poll)
        status = str(client.get_job_status(submission_id).value)
    return status


def new_submission_id() -> str:
    return f"fastav-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def submit_with_retry(client, command: str, env: dict, submission_id: str, patience: float = 120.0) -> str:
    """Submit; while a just-started head reports no job agent yet, retry with the same id (no duplicates)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return client.submit_job(entrypoint=command, runtime_env=env, submission_id=submission_id)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def cmd_submit(args: argparse.Namespace) -> int:
    config = load_config(
        args.config,
        output=args.output,
        run_id=args.run_id,
        overwrite=args.overwrite or None,
        retry_errors=args.retry_errors or None,
    )
    working_dir = resolve_working_dir(args.working_dir)
    env, names = runtime_env(working_dir, list(FORWARDED_ENV) + (args.env or []))
    if working_dir is None:
        shipping = "no code (the cluster runs its installed fastav)"
    else:
        files, size = upload_size(working_dir)
        if size > RAY_UPLOAD_LIMIT:
            raise OSError(f"--working-dir {working_dir} holds {size / 2**20:.0f} MiB; Ray accepts at most 512 MiB")
        shipping = f"working_dir {working_dir} ({files} files, {size / 2**20:.1f} MiB)"
    if args.dry_run:
        print(f"would submit to {args.address}: {shipping}; forwarded env: {', '.join(names) or 'none'}")
        print(f"entrypoint: {entrypoint(config)}")
        return 0
    client = _client(args.address)
    submission_id = submit_with_retry(client, entrypoint(config), env, args.submission_id or new_submission_id())
    print(f"submitted {submission_id} to {args.address}: {shipping}; forwarded env: {', '.join(names) or 'none'}")
    if not args.wait:
        return 0
    status = wait_for(client, submission_id, args.timeout)
    print(f"{submission_id}: {status}")
    if status != "SUCCEEDED":
        print(log_tail(client.get_job_logs(submission_id), 4000), file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def log_tail(logs: str, characters: int) -> str:
    """The end of a job log, starting at a line boundary."""
    if len(logs) <= characters:
        return logs.rstrip("\n")
    tail = logs[-characters:]
    return tail[tail.find("\n") + 1 :].rstrip("\n") if "\n" in tail else tail


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args.address)
    info = client.get_job_info(args.submission_id)
    print(json.dumps({"submission_id": args.submission_id, "status": str(info.status.value), "message": info.message}))
    if args.logs:
        print(log_tail(client.get_job_logs(args.submission_id), args.tail))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastav", description="FastAV batch inference")
    sub = parser.add_subparsers(dest="command", required=True)
    address = os.environ.get("RAY_API_SERVER_ADDRESS", os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"))

    run = sub.add_parser("run", help="run the batch job here (embedded default without --config)")
    submit = sub.add_parser("submit", help="submit the batch job to a Ray cluster's job API")
    for p in (run, submit):
        p.add_argument("--config", type=Path, required=p is submit)
        p.add_argument("--output")
        p.add_argument("--run-id")
        p.add_argument("--overwrite", action="store_true", help="start fresh instead of resuming")
        p.add_argument("--retry-errors", action="store_true", help="also rerun ids that failed for good")
    run.set_defaults(func=cmd_run)
    submit.add_argument("--address", default=address, help="dashboard address, e.g. http://head:8265")
    submit.add_argument(
        "--working-dir",
        default="auto",
        help="directory shipped as the job's working_dir; auto: this source checkout, or none when fastav runs "
        "installed (an image); none: ship nothing",
    )
    submit.add_argument(
        "--dry-run", action="store_true", help="print what would be submitted and shipped; submit nothing"
    )
    submit.add_argument("--env", action="append", help="extra environment variable to forward, by name")
    submit.add_argument("--submission-id", help="idempotency: a second submit with the same id is refused")
    submit.add_argument("--wait", action="store_true", help="wait for a terminal state; exit 1 unless SUCCEEDED")
    submit.add_argument("--timeout", type=float, default=3600)
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="status (and logs) of a submitted job")
    status.add_argument("submission_id")
    status.add_argument("--address", default=address)
    status.add_argument("--logs", action="store_true")
    status.add_argument("--tail", type=int, default=4000, help="about this many characters of log, whole lines")
    status.set_defaults(func=cmd_status)

    for name, what in TOOLS.items():
        sub.add_parser(name, help=f"{what}: fastav {name} --help", add_help=False)
    return parser


# subcommands with their own parsers: name -> what they do
TOOLS = {
    "calibrate": "sweep pruning settings, agreement vs FLOPs, best setting under a budget",
    "rollout": "attention-rollout analysis of one input",
    "flops": "library tool: FLOPs table of a preset",
    "presets": "library tool: list presets",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("flops", "presets"):
        from fastav.cli import main as library_main

        return library_main(argv)
    if argv and argv[0] in ("calibrate", "rollout"):
        import importlib

        return importlib.import_module(f"jobs.{argv[0]}").main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValidationError, ConfigFileError, OSError) as error:
        if isinstance(error, ConnectionError):
            print(f"fastav: {_one_line(error, getattr(args, 'address', '?'))}", file=sys.stderr)
        else:
            for line in describe_config_error(error):
                print(f"fastav: invalid configuration: {line}", file=sys.stderr)
        return 2
    except Exception as error:
        known = _one_line(error, getattr(args, "address", "?"))
        if known is None:
            raise
        print(f"fastav: {known}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
