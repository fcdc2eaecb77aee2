"""A real S3 endpoint on loopback for the tests, and a fault-injecting HTTP proxy in front of it.

- `S3Server`: moto's standalone server (`ThreadedMotoServer`) on 127.0.0.1, reached by boto3 over
  HTTP exactly like MinIO or AWS would be (not `mock_aws` patching: requests really cross a socket).
- `FaultProxy`: forwards HTTP/1.1 requests one by one to the server and can, for requests matching
  a rule, drop the connection half way through the request body, answer `503 SlowDown` like S3
  does under throttling, or add delay. It records every request it saw, in order, so a test can
  check what reached the store and when.

Both listen on loopback only, on ports the OS picks, and stop when the fixture ends.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message></Error>")


class S3Server:
    """moto's S3 server in a thread of the test process, on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self.port = port

    def stop(self) -> None:
        self._server.stop()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body_len: int


@dataclass
class Fault:
    kind: str  # "drop" | "slowdown" | "delay"
    match: Callable[[Request], bool]
    times: int = 1_000_000  # how many matching requests it hits
    seconds: float = 0.0  # for "delay"
    hits: int = 0


@dataclass
class Seen:
    method: str
    path: str
    body_len: int
    outcome: str  # the status code forwarded, or "dropped" / "slowdown"
    user_agent: str = ""
    at: float = field(default_factory=time.monotonic)


def _read_until(sock: socket.socket, buf: bytearray, marker: bytes) -> bool:
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buf += chunk
    return True


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> bool:
    while len(buf) < n:
        chunk = sock.recv(min(65536, n - len(buf)) or 65536)
        if not chunk:
            return False
        buf += chunk
    return True


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[bytes, dict[str, str]] | None:
    if not _read_until(sock, buf, b"\r\n\r\n"):
        return None
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head, _parse_head(head)[1]


def _read_body(sock: socket.socket, buf: bytearray, headers: dict[str, str]) -> bytes | None:
    """The body after a head (Content-Length or chunked); leftover bytes stay in `buf`."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            if not _read_until(sock, buf, b"\r\n"):
                return None
            line_end = buf.index(b"\r\n") + 2
            size = int(bytes(buf[: line_end - 2]).split(b";")[0], 16)
            body += buf[:line_end]
            del buf[:line_end]
            if size == 0:  # optional trailers, then an empty line
                while True:
                    if not _read_until(sock, buf, b"\r\n"):
                        return None
                    line_end = buf.index(b"\r\n") + 2
                    line = bytes(buf[:line_end])
                    body += line
                    del buf[:line_end]
                    if line == b"\r\n":
                        return bytes(body)
            if not _read_exact(sock, buf, size + 2):
                return None
            body += buf[: size + 2]
            del buf[: size + 2]
    n = int(headers.get("content-length", "0"))
    if not _read_exact(sock, buf, n):
        return None
    body = bytes(buf[:n])
    del buf[:n]
    return body


class FaultProxy:
    """A loopback HTTP proxy to `upstream_port` that injects the faults in `self.faults`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, kind: str, match: Callable[[Request], bool] = lambda r: True, times: int = 1_000_000,
            seconds: float = 0.0) -> Fault:
        fault = Fault(kind, match, times, seconds)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _pick(self, req: Request) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.hits < f.times and f.match(req):
                    f.hits += 1
                    return f
        return None

    def _record(self, req: Request, outcome: str) -> None:
        with self._lock:
            self.seen.append(Seen(req.method, req.path, req.body_len, outcome, req.headers.get("user-agent", "")))

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        cbuf, ubuf = bytearray(), bytearray()
        try:
            while True:
                got = _read_head(client, cbuf)
                if got is None:
                    return
                head, headers = got
                if "100-continue" in headers.get("expect", "").lower():
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # or botocore waits 1 s for it
                body = _read_body(client, cbuf, headers)
                if body is None:
                    return
                method, path = _parse_head(head)[0].split(" ")[:2]
                req = Request(method, path, headers, len(body))
                fault = self._pick(req)
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.seconds)
                elif fault is not None and fault.kind == "slowdown":
                    self._record(req, "slowdown")
                    client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: "
                                   + str(len(SLOWDOWN_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + SLOWDOWN_BODY)
                    return
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60)
                if fault is not None and fault.kind == "drop":
                    # half the request reaches the server, then both connections die
                    upstream.sendall(head + body[: len(body) // 2])
                    self._record(req, "dropped")
                    return
                upstream.sendall(head + body)
                while True:  # skip the server's own interim 100 Continue
                    got = _read_head(upstream, ubuf)
                    if got is None:
                        self._record(req, "upstream closed")
                        return
                    r_head, r_headers = got
                    status = _parse_head(r_head)[0].split(" ")[1]
                    if not status.startswith("1"):
                        break
                if method == "HEAD" or status in ("204", "304"):
                    r_body = b""
                elif "content-length" in r_headers or "chunked" in r_headers.get("transfer-encoding", ""):
                    r_body = _read_body(upstream, ubuf, r_headers)
                    if r_body is None:
                        self._record(req, "upstream closed")
                        return
                else:  # body delimited by the connection closing
                    while chunk := upstream.recv(65536):
                        ubuf += chunk
                    client.sendall(r_head + bytes(ubuf))
                    self._record(req, status)
                    return
                client.sendall(r_head + r_body)
                self._record(req, status)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass


# ---------------------------------------------------------------- pytest fixtures
@dataclass
class S3Env:
    server: S3Server
    proxy: FaultProxy
    bucket: str
    direct: object  # a boto3 client straight to the server (bypassing the proxy) for checks
    env: dict[str, str]  # variables a job subprocess needs to reach the store through the proxy

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.direct.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A fresh bucket on the loopback server, reached through a fresh fault proxy via boto3's own
    AWS_ENDPOINT_URL_S3 variable (set for this process; `env` has it for subprocesses)."""
    import boto3

    proxy = FaultProxy(s3_server.port)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": proxy.url}
    for k in ("AWS_PROFILE", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    direct = boto3.session.Session().client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                                            aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    direct.create_bucket(Bucket=bucket)
    yield S3Env(s3_server, proxy, bucket, direct, env)
    proxy.stop()
