"""Fixtures of the object-store tests: a moto S3 server process and a fault-injecting proxy.

A test module that uses them says `pytest_plugins = ["objects_fixtures"]`; constants and
helpers shared with the tests are in objects_support.py.
Both are real network servers on loopback ports; both stop at teardown, also when a test fails.
"""

from __future__ import annotations

import http.client
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from objects_support import S3_ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, deadline_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {deadline_s}s: {last}")


@dataclass
class MotoServer:
    endpoint: str
    proc: subprocess.Popen
    log: Path

    def url(self, bucket: str = "", prefix: str = "") -> str:
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}"

    def new_bucket(self) -> str:
        """A fresh bucket, created through the server (not through the code under test)."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).read()
        return name


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> MotoServer:
    """A moto S3 server process on a free loopback port, for the whole session."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, **S3_ENV}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint}/moto-api/", 30, proc)
        yield MotoServer(endpoint, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---- the fault proxy ------------------------------------------------------------------------


@dataclass
class Rule:
    """Do `action` to the next `count` requests that match `method` and `path` (substrings)."""

    action: str  # "503", "500", "429", "403", "400", "reset", "delay:<seconds>", "cut"
    count: int
    method: str | None = None
    path: str | None = None
    query: str | None = None


@dataclass
class FaultProxy:
    endpoint: str
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, action)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        action: str,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        query: str | None = None,
    ) -> None:
        with self.lock:
            self.rules.append(Rule(action, count, method, path, query))

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.seen.clear()

    def url(self, bucket: str = "", prefix: str = "") -> str:
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}"

    def count(self, method: str | None = None, action: str | None = None) -> int:
        with self.lock:
            return sum(
                1
                for m, _, a in self.seen
                if (method is None or m == method) and (action is None or a == action)
            )

    def decide(self, method: str, target: str) -> str:
        path, _, query = target.partition("?")
        with self.lock:
            action = "pass"
            for rule in self.rules:
                if rule.count <= 0:
                    continue
                if rule.method and rule.method != method:
                    continue
                if rule.path and rule.path not in path:
                    continue
                if rule.query is not None and rule.query not in query:
                    continue
                rule.count -= 1
                action = rule.action
                break
            self.seen.append((method, target, action))
            return action


_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error>"
)
_STATUS_CODES = {
    "500": ("InternalError", "injected"),
    "502": ("BadGateway", "injected"),
    "504": ("GatewayTimeout", "injected"),
    "503": ("SlowDown", "injected"),
    "429": ("TooManyRequests", "injected"),
    "403": ("AccessDenied", "Access Denied"),
    "400": ("InvalidRequest", "injected"),
}


def _make_handler(proxy: FaultProxy, upstream_host: str, upstream_port: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            action = proxy.decide(self.command, self.path)
            if action == "reset":
                # SO_LINGER 0: close() sends RST instead of FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
                return
            if action.startswith("delay:"):
                time.sleep(float(action.split(":", 1)[1]))
            elif action in _STATUS_CODES:
                code, message = _STATUS_CODES[action]
                data = _ERROR_BODY.format(code=code, message=message).encode()
                self.send_response(int(action))
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                return
            conn = http.client.HTTPConnection(upstream_host, upstream_port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in (
                    "connection",
                    "transfer-encoding",
                    "content-length",
                    "server",
                    "date",
                ):
                    self.send_header(k, v)
            if self.command == "HEAD":  # no body: pass on the length the server announced
                self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if action == "cut":  # half the body, then a reset: a broken download
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> FaultProxy:
    """A proxy in front of the moto server that can answer 5xx/4xx, reset or stall requests."""
    host, port = moto_server.endpoint.removeprefix("http://").split(":")
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    server.daemon_threads = True
    proxy = FaultProxy(f"http://127.0.0.1:{server.server_address[1]}", moto_server.endpoint)
    server.RequestHandlerClass = _make_handler(proxy, host, int(port))
    thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        wait_for_http(proxy.endpoint + "/", 10)
        proxy.clear()
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
