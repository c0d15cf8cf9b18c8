"""Checks before Ray starts: a configuration or input problem becomes one line that names the setting.

An unreachable endpoint is found with one TCP connect (seconds), not after the client's retries with backoff
(minutes); the checks themselves use the normal client, whose retries ride out a throttling store.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from pipeline.config import PipelineConfig, StorageConfig
from pipeline.errors import InputError
from pipeline.source import is_manifest, list_all, select
from pipeline.storage import Storage, error_text, is_s3, join, split_s3

T = TypeVar("T")


def describe(error: BaseException, setting: str, uri: str, storage: Storage) -> str:
    """One line for a storage failure while using `setting` (= `uri`)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(error, NoCredentialsError):
        return f"{setting} {uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)"
    if isinstance(error, EndpointConnectionError | BotoConnectionError):
        where = storage.endpoint or "the default AWS endpoint"
        return f"storage.endpoint_url {where}: cannot connect while reading {setting} {uri}"
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        bucket = split_s3(uri)[0] if is_s3(uri) else uri
        if code == "NoSuchKey":
            return f"{setting} {uri}: not found"
        if code in ("NoSuchBucket", "404", "NotFound"):
            return f"{setting} {uri}: bucket '{bucket}' does not exist"
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return f"{setting} {uri}: access denied (check the credentials and the bucket policy)"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return f"{setting} {uri}: the storage rejected the credentials ({code})"
        return f"{setting} {uri}: {code or type(error).__name__}: {error_text(error, storage.config.max_attempts)}"
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        return f"{setting} {uri}: not found"
    if isinstance(error, PermissionError):
        return f"{setting} {uri}: permission denied"
    return f"{setting} {uri}: {type(error).__name__}: {error_text(error, storage.config.max_attempts)}"


def guarded(setting: str, uri: str, storage: Storage, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except InputError:
        raise
    except Exception as error:
        raise InputError(describe(error, setting, uri, storage)) from error


def _check_checkpoint(config: PipelineConfig, storage: Storage) -> None:
    """A local checkpoint must be visible to the driver too (a shared filesystem on a cluster), else use s3://."""
    checkpoint = config.model.checkpoint
    marker = join(checkpoint.rstrip("/"), "config.json")
    if is_s3(checkpoint):
        guarded("model.checkpoint", checkpoint, storage, lambda: storage.check_bucket(checkpoint))
    if not guarded("model.checkpoint", checkpoint, storage, lambda: storage.exists(marker)):
        raise InputError(f"model.checkpoint {checkpoint}: no config.json there (not a transformers checkpoint)")
    _check_family(config, storage, marker)


def _check_family(config: PipelineConfig, storage: Storage, marker: str) -> None:
    """The checkpoint's family, from its config.json alone: an unsupported model (or one that takes no video)
    is refused here, before any video is decoded or any weights load."""
    from fastav.adapter import UnsupportedModelError
    from fastav.families import for_checkpoint, require_video

    checkpoint = config.model.checkpoint
    raw = guarded("model.checkpoint", checkpoint, storage, lambda: storage.read(marker))
    try:
        require_video(*for_checkpoint(json.loads(raw), config.model.family))
    except (UnsupportedModelError, ValueError) as error:
        raise InputError(f"model.checkpoint {checkpoint}: {error}") from None


def _check_output(config: PipelineConfig, storage: Storage) -> None:
    if is_s3(config.output):
        guarded("output", config.output, storage, lambda: storage.check_bucket(config.output))
    else:
        guarded(
            "output",
            config.output,
            storage,
            lambda: Path(config.output).expanduser().mkdir(parents=True, exist_ok=True),
        )


def _check_endpoint(storage: Storage, timeout: float = 5.0) -> None:
    if not storage.endpoint:
        return
    problem = StorageConfig.endpoint_problem(storage.endpoint, "AWS_ENDPOINT_URL")  # the config's is checked
    if problem:
        raise InputError(problem)
    parts = urlsplit(storage.endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise InputError(f"storage.endpoint_url {storage.endpoint}: cannot connect ({error})") from None


def preflight(config: PipelineConfig) -> list[dict]:
    """Check storage, checkpoint and output, then list the source. Raises InputError; returns the rows."""
    storage = Storage(config.storage)
    uri = config.source.uri
    if any(is_s3(u) for u in (uri, config.output, config.model.checkpoint)):
        _check_endpoint(storage)
    if is_s3(uri):
        guarded("source.uri", uri, storage, lambda: storage.check_bucket(uri))
    _check_output(config, storage)
    _check_checkpoint(config, storage)
    videos = guarded("source.uri", uri, storage, lambda: list_all(config.source, storage))
    if not videos and not config.source.allow_empty:
        what = "names no videos" if is_manifest(uri) else f"holds no {'/'.join(config.source.extensions)} files"
        raise InputError(f"source.uri {uri} {what} (check the path; source.allow_empty: true accepts an empty run)")
    return select(videos, config.source)
