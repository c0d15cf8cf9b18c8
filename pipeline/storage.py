"""Object storage: one small interface over local paths and S3-compatible URIs.

S3 goes through boto3 with an explicit endpoint (pyarrow's S3 client ignores AWS_ENDPOINT_URL, boto3 honours
it; we pass it explicitly either way). Credentials come from the standard AWS chain or the environment.
Writes are atomic: a local file is written beside its target and renamed; an S3 PUT is atomic by itself.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import StorageConfig


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_s3(base) else str(Path(base) / name)


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, region: str | None, attempts: int):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        # "standard" retries throttling (503 SlowDown), 5xx and connection errors with jittered backoff.
        # `total_max_attempts` counts every try, the first included (botocore's `max_attempts` would count the
        # retries after it: 3 gave 4 requests).
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
    )


# S3 error codes that say the object is absent or forbidden: reading again gives the same answer.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "Forbidden", "403"})
_RETRY_INFO = re.compile(r" \(reached max retries: (\d+)\)")


def error_text(error: BaseException, max_attempts: int | None = None) -> str:
    """The message of a storage error, counting tries as storage.max_attempts does: botocore's own text says
    "(reached max retries: N)" for N + 1 tries, which reads here "(after N + 1 tries, storage.max_attempts=M)"."""
    setting = f", storage.max_attempts={max_attempts}" if max_attempts is not None else ""
    return _RETRY_INFO.sub(lambda m: f" (after {int(m[1]) + 1} tries{setting})", str(error))


def read_failure(error: BaseException, uri: str, max_attempts: int) -> tuple[str, str]:
    """The row's error type (pipeline.errors) and message for a failed read of `uri`.

    Absent (NoSuchKey, NoSuchBucket, 404, a missing local file) -> "NotFound" and forbidden (AccessDenied,
    403, a local PermissionError) -> "AccessDenied": permanent. Everything else -> "ReadError", transient:
    throttling, 5xx, timeouts and connection errors (botocore retried those up to max_attempts tries), and
    rejected credentials (an expired token, a skewed clock: about the run, not the object).
    """
    from botocore.exceptions import ClientError

    text = f"{type(error).__name__}: {error_text(error, max_attempts)}"
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in NOT_FOUND_CODES or (status == 404 and not code):
            return "NotFound", f"{uri}: not found ({text})"
        if code in DENIED_CODES or (status == 403 and not code):
            return "AccessDenied", f"{uri}: access denied ({text})"
    elif isinstance(error, FileNotFoundError | NotADirectoryError):
        return "NotFound", f"{uri}: not found ({text})"
    elif isinstance(error, PermissionError):
        return "AccessDenied", f"{uri}: access denied ({text})"
    return "ReadError", text


class Storage:
    def __init__(self, config: StorageConfig | None = None) -> None:
        self.config = config or StorageConfig()

    @property
    def endpoint(self) -> str | None:
        return self.config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None

    @property
    def s3(self):
        return _client(self.endpoint, self.config.region, self.config.max_attempts)

    def list(self, uri: str) -> Iterator[ObjectInfo]:
        """Every object under a prefix / file under a directory, in lexicographic order."""
        if is_s3(uri):
            bucket, prefix = split_s3(uri)
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        yield ObjectInfo(f"s3://{bucket}/{item['Key']}", int(item["Size"]))
            return
        root = Path(uri).expanduser()
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                yield ObjectInfo(str(path), path.stat().st_size)

    def read(self, uri: str) -> bytes:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(uri).expanduser().read_bytes()

    def write(self, uri: str, data: bytes) -> None:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
            return
        target = Path(uri).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, uri: str) -> bool:
        if is_s3(uri):
            from botocore.exceptions import ClientError

            bucket, key = split_s3(uri)
            try:
                self.s3.head_object(Bucket=bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True
        return Path(uri).expanduser().exists()

    def check_bucket(self, uri: str) -> None:
        """Raise the client's error if the bucket of an s3:// URI cannot be reached (missing, denied, offline)."""
        self.s3.head_bucket(Bucket=split_s3(uri)[0])

    def delete(self, uri: str) -> None:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.delete_object(Bucket=bucket, Key=key)
        else:
            Path(uri).expanduser().unlink(missing_ok=True)

    def download_dir(self, uri: str, target: Path) -> None:
        """Copy every object under an s3:// prefix into `target`, keeping relative paths."""
        prefix = uri.rstrip("/") + "/"
        for obj in self.list(prefix):
            dest = target / obj.uri[len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            bucket, key = split_s3(obj.uri)
            self.s3.download_file(bucket, key, str(dest))
