"""Storage as an operator meets it: a missing object fails for good, a throttled one is worth a rerun,
`storage.max_attempts` counts tries, and an endpoint without a scheme is refused by name.

Real parts: the moto S3 server over HTTP, the 503-injecting proxy of tests/s3proxy.py, and a one-line HTTP
server that answers 403 AccessDenied as a bucket policy would."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipeline.config import DecodeConfig, PipelineConfig, SourceConfig, StorageConfig
from pipeline.errors import PERMANENT, TRANSIENT, retryable
from pipeline.rows import OK, to_rows
from pipeline.sink import to_table
from pipeline.source import list_all
from pipeline.stages import DecodeStage
from pipeline.storage import Storage
from tests.s3proxy import FaultyS3Proxy


@pytest.fixture
def proxy(s3_endpoint):
    proxy = FaultyS3Proxy(s3_endpoint, seed=3)
    yield proxy
    proxy.close()


def _decode(rows: list[dict], storage: StorageConfig) -> list[dict]:
    rows = [{**row, "status": OK, "error_type": None, "error_message": None} for row in rows]
    stage = DecodeStage(DecodeConfig(num_frames=2, timeout_seconds=None), storage)
    return to_rows(stage(pa.Table.from_pylist(rows)))


def test_a_manifest_naming_missing_objects_gives_permanent_not_found_rows(s3, s3_endpoint, clips):
    s3.s3.create_bucket(Bucket="gaps")
    s3.write("s3://gaps/in/here.mp4", clips["clip_0000.mp4"])
    names = ["s3://gaps/in/here.mp4", "s3://gaps/in/gone.mp4", "s3://no-such-bucket-17/in/a.mp4"]
    s3.write("s3://gaps/manifest.jsonl", "\n".join(json.dumps({"uri": n}) for n in names).encode())
    listed = list_all(SourceConfig(uri="s3://gaps/manifest.jsonl"), s3)

    out = {row["uri"]: row for row in _decode(listed, StorageConfig(endpoint_url=s3_endpoint))}
    assert out["s3://gaps/in/here.mp4"]["status"] == OK
    for uri in names[1:]:
        row = out[uri]
        assert row["status"] == "error" and row["error_type"] == "NotFound", row
        assert not retryable(row["error_type"]) and row["error_type"] in PERMANENT
        assert uri in row["error_message"] and "not found" in row["error_message"]
    assert "NoSuchKey" in out[names[1]]["error_message"] and "NoSuchBucket" in out[names[2]]["error_message"]
    # The written row says so too: a rerun skips these ids (`--retry-errors` retries them).
    table = to_table([out[names[1]]], run_id="r").to_pylist()
    assert table[0]["error_retryable"] is False


def test_a_missing_local_file_is_permanent(tmp_path):
    (row,) = _decode([{"id": "a", "uri": str(tmp_path / "nope.mp4")}], StorageConfig())
    assert row["error_type"] == "NotFound" and not retryable("NotFound")
    assert "FileNotFoundError" in row["error_message"]


@pytest.fixture
def denying_endpoint():
    """An S3 endpoint that refuses every request with 403 AccessDenied (as a bucket policy does)."""
    body = b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>AccessDenied</Code><Message>Denied</Message></Error>"

    class Deny(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(403, "Forbidden")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_access_denied_is_permanent(denying_endpoint):
    (row,) = _decode([{"id": "a", "uri": "s3://locked/a.mp4"}], StorageConfig(endpoint_url=denying_endpoint))
    assert row["error_type"] == "AccessDenied" and row["error_type"] in PERMANENT
    assert "access denied" in row["error_message"] and "AccessDenied" in row["error_message"]


def test_throttling_stays_a_transient_read_error_and_says_how_many_tries(s3, proxy, clips):
    s3.s3.create_bucket(Bucket="busy")
    s3.write("s3://busy/a.mp4", clips["clip_0000.mp4"])
    proxy.fail_rate = 1.0  # every request: 503 SlowDown
    before = proxy.requests
    (row,) = _decode([{"id": "a", "uri": "s3://busy/a.mp4"}], StorageConfig(endpoint_url=proxy.url, max_attempts=2))
    assert proxy.requests - before == 2
    assert row["error_type"] == "ReadError" and row["error_type"] in TRANSIENT and retryable("ReadError")
    assert "SlowDown" in row["error_message"]
    assert "(after 2 tries, storage.max_attempts=2)" in row["error_message"], row["error_message"]
    assert "retries" not in row["error_message"]


def test_max_attempts_counts_tries_not_retries(s3, proxy):
    s3.s3.create_bucket(Bucket="tries")
    proxy.fail_rate = 1.0
    storage = Storage(StorageConfig(endpoint_url=proxy.url, max_attempts=3))
    before = proxy.requests
    with pytest.raises(Exception, match="SlowDown"):
        storage.write("s3://tries/k.bin", b"payload")
    assert proxy.requests - before == 3  # one PUT, three tries in all
    assert "tries" in StorageConfig.model_fields["max_attempts"].description
    proxy.fail_rate = 0.0
    storage.write("s3://tries/k.bin", b"payload")  # and a healthy store takes it on the first try
    assert s3.read("s3://tries/k.bin") == b"payload"


def _config(endpoint: str | None) -> dict:
    return {"source": {"uri": "s3://b/in/"}, "output": "s3://b/out/", "model": {"checkpoint": "s3://b/ckpt"},
            "storage": {"endpoint_url": endpoint}}  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("127.0.0.1:5055", "storage.endpoint_url '127.0.0.1:5055' has no scheme: write http://127.0.0.1:5055"),
        ("localhost:9000", "storage.endpoint_url 'localhost:9000' has no scheme: write http://localhost:9000"),
        ("minio.internal", "storage.endpoint_url 'minio.internal' has no scheme: write http://minio.internal"),
        ("ftp://host:21", "storage.endpoint_url 'ftp://host:21' must start with http:// or https://"),
        ("http://", "storage.endpoint_url 'http://' names no host: write http://HOST:PORT"),
        ("http://host:port", "storage.endpoint_url 'http://host:port' has a port that is not a number"),
    ],
)
def test_an_endpoint_without_a_scheme_is_refused_by_name(endpoint, message):
    with pytest.raises(ValidationError) as info:
        PipelineConfig.model_validate(_config(endpoint))
    assert message in str(info.value)


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:5055", "https://s3.eu-west-1.amazonaws.com"])
def test_endpoints_with_a_scheme_are_accepted(endpoint):
    assert PipelineConfig.model_validate(_config(endpoint)).storage.endpoint_url == endpoint


def test_local_permission_errors_are_permanent_and_other_local_errors_transient():
    # (as root, chmod does not deny a read: the classification is tested on the exception itself)
    from pipeline.storage import read_failure

    kind, message = read_failure(PermissionError(13, "Permission denied"), "/v/a.mp4", max_attempts=3)
    assert kind == "AccessDenied" and "/v/a.mp4: access denied" in message
    assert read_failure(OSError(5, "Input/output error"), "/v/a.mp4", max_attempts=3)[0] == "ReadError"


def test_a_schemeless_aws_endpoint_url_is_refused_by_the_preflight(monkeypatch):
    from pipeline.errors import InputError
    from pipeline.preflight import preflight

    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:5055")
    with pytest.raises(
        InputError, match=r"^AWS_ENDPOINT_URL '127.0.0.1:5055' has no scheme: write http://127\.0\.0\.1:5055"
    ):
        preflight(PipelineConfig.model_validate(_config(None)))
