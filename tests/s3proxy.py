"""An HTTP proxy in front of the test S3 server that answers some requests `503 SlowDown`, as a throttled or
overloaded object store does. Clients reach it over HTTP like any endpoint; nothing is patched in-process.

    proxy = FaultyS3Proxy(upstream="http://127.0.0.1:PORT", fail_rate=0.6)
    proxy.url            # give this as storage.endpoint_url
    proxy.fail_rate = 0  # change behaviour while a job runs; proxy.rule = lambda method, path: ...
"""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultyS3Proxy:
    def __init__(self, upstream: str, fail_rate: float = 0.0, seed: int = 0) -> None:
        self.upstream = urlsplit(upstream)
        self.fail_rate = fail_rate
        # (method, path) -> whether this request may be failed; default: every request
        self.rule: Callable[[str, str], bool] = lambda method, path: True
        self.requests = self.injected = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _should_fail(self, method: str, path: str) -> bool:
        with self._lock:
            self.requests += 1
            fail = self.rule(method, path) and self._random.random() < self.fail_rate
            self.injected += fail
            return fail

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                if proxy._should_fail(self.command, self.path):
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    keep_length = self.command == "HEAD"  # a HEAD answer announces the object's length
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP and (keep_length or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if not keep_length:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
