"""A real HTTP proxy on loopback that injects the faults a hospital network produces.

Run as a process (``python fault_proxy.py UPSTREAM_URL PORT``); it forwards every request
to the upstream server (Orthanc) and answers with the upstream's answer, except when told
otherwise through its control resource::

    POST /__faults__  {"status": 503, "count": 2}              next 2 requests get a 503
    POST /__faults__  {"cut": 1, "match": "REGEX"}             next answer whose path matches is cut
                                                               half-way (headers announce the
                                                               full length, half the body is
                                                               sent, the connection closes)
    GET  /__faults__                                           counters of injected faults

With a certificate and key (``python fault_proxy.py UPSTREAM PORT CERT KEY``) it serves
HTTPS: a TLS front of the kind hospitals put before their PACS. With
``FAULT_PROXY_BEARER=token`` and ``FAULT_PROXY_UPSTREAM_AUTH=user:password`` in its
environment it is a token gateway: requests without that bearer token get a 401, the
others reach the PACS with basic authentication.

:class:`FaultProxy` starts and stops it from a test.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["FaultProxy"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status = 0
        self.status_count = 0
        self.cut = 0
        self.match = ""
        self.injected: dict[str, int] = {"status": 0, "cut": 0, "forwarded": 0}


def _handler(upstream: str, state: _State) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)
    bearer = os.environ.get("FAULT_PROXY_BEARER", "")
    upstream_auth = os.environ.get("FAULT_PROXY_UPSTREAM_AUTH", "").encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _control(self) -> None:
            if self.command == "POST":
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                order = json.loads(body or b"{}")
                with state.lock:
                    if "status" in order:
                        state.status = int(order["status"])
                        state.status_count = int(order.get("count", 1))
                    if "cut" in order:
                        state.cut = int(order["cut"])
                        state.match = str(order.get("match", ""))
            with state.lock:
                payload = json.dumps(state.injected).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _forward(self) -> None:
            if self.path.startswith("/__faults__"):
                self._control()
                return
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length) if length else None
            if bearer and self.headers.get("Authorization") != f"Bearer {bearer}":
                self.send_response(401)
                self.send_header("WWW-Authenticate", "Bearer")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with state.lock:
                if state.status_count > 0:
                    state.status_count -= 1
                    state.injected["status"] += 1
                    status = state.status
                else:
                    status = 0
                cut = state.cut > 0 and re.search(state.match, self.path) is not None
                if cut:
                    state.cut -= 1
                    state.injected["cut"] += 1
            if status:
                message = b"injected fault"
                self.send_response(status)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            conn = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=120
            )
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if bearer:  # a token gateway: the token is checked here, the PACS sees basic auth
                headers["Authorization"] = "Basic " + base64.b64encode(upstream_auth).decode()
            if body is not None:
                headers["Content-Length"] = str(len(body))
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
            except OSError:
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            finally:
                conn.close()
            with state.lock:
                state.injected["forwarded"] += 1
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            if cut:
                self.send_header("Connection", "close")
            self.end_headers()
            if cut:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

        do_GET = _forward  # noqa: N815 (http.server dispatches on these names)
        do_POST = _forward  # noqa: N815
        do_PUT = _forward  # noqa: N815
        do_DELETE = _forward  # noqa: N815

    return Handler


def serve(upstream: str, port: int, certificate: str | None = None, key: str | None = None) -> None:
    """Run the proxy until killed; with a certificate and key it speaks HTTPS (TLS)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(upstream, _State()))
    server.daemon_threads = True
    if certificate and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


@dataclass
class FaultProxy:
    """The proxy process in front of ``upstream`` (``http://host:port``) on ``port``."""

    upstream: str
    port: int
    tls: tuple[Path, Path, Path] | None = None  # certificate, key, CA that signed it
    #: ``(token, "user:password")``: require ``Authorization: Bearer token`` and forward
    #: with basic authentication instead (a token gateway in front of the PACS).
    bearer: tuple[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        """The proxy's root URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.tls[2])) if self.tls else True

    def start(self, *, timeout: float = 30.0) -> FaultProxy:
        """Start the process and wait until it answers."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                self.upstream,
                str(self.port),
                *([str(self.tls[0]), str(self.tls[1])] if self.tls else []),
            ],
            env={
                **os.environ,
                **(
                    {
                        "FAULT_PROXY_BEARER": self.bearer[0],
                        "FAULT_PROXY_UPSTREAM_AUTH": self.bearer[1],
                    }
                    if self.bearer
                    else {}
                ),
            },
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.faults()
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the fault proxy did not start")

    def stop(self) -> None:
        """Stop the process."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def inject(self, **order: Any) -> dict[str, int]:
        """Order faults (see the module docstring); return the counters."""
        response = httpx.post(f"{self.url}/__faults__", json=order, timeout=10, verify=self._verify)
        response.raise_for_status()
        return dict(response.json())

    def faults(self) -> dict[str, int]:
        """Counters of injected faults and forwarded requests."""
        response = httpx.get(f"{self.url}/__faults__", timeout=2, verify=self._verify)
        response.raise_for_status()
        return dict(response.json())


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), *sys.argv[3:5])
