"""monai_tumor.listening: the port is bound before uvicorn starts; uvicorn logs to the
command's handlers (its log file), not to a stream of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from monai_tumor.errors import ConfigError
from monai_tumor.listening import bind_tcp, url_of


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_port_zero_binds_a_free_port_and_names_it(host: str) -> None:
    sock = bind_tcp(host, 0)
    try:
        url = url_of(sock)
        port = int(url.rsplit(":", 1)[1])
        assert url.startswith("http://127.0.0.1:") and port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening
    finally:
        sock.close()


def test_a_port_in_use_is_a_clear_error() -> None:
    taken = bind_tcp("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1 port {port}: "):
            bind_tcp("127.0.0.1", port)
    finally:
        taken.close()


def test_an_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="does not resolve"):
        bind_tcp("no-such-host.invalid", 0)


def test_ipv6_addresses_are_bracketed() -> None:
    try:
        sock = bind_tcp("::1", 0)
    except ConfigError:
        pytest.skip("this machine has no IPv6 loopback")  # environment, not a feature gap
    try:
        assert url_of(sock).startswith("http://[::1]:")
    finally:
        sock.close()


def test_uvicorn_records_reach_the_command_log_file(tmp_path: Path) -> None:
    """A real uvicorn on loopback, inside routed_logging as the commands run it."""
    log = tmp_path / "serve.log"
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from fastapi import FastAPI
        from monai_tumor.listening import bind_tcp, run_uvicorn, url_of
        from monai_tumor.logs import routed_logging

        app = FastAPI()

        @app.get("/ping")
        def ping() -> dict:
            return {{"ok": True}}

        with routed_logging(verbose=False, log_file=Path({str(log)!r})):
            sock = bind_tcp("127.0.0.1", 0)
            print(url_of(sock), flush=True)
            run_uvicorn(app, sock)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr
        body = b""
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"{url}/ping", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b'{"ok":true}'
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the captured SIGINT (as Ctrl-C would)
    assert proc.returncode == -signal.SIGINT, stderr
    text = log.read_text(encoding="utf-8")
    assert "Application startup complete" in text and "Finished server process" in text
    assert "/ping" not in text  # no access log: request lines carry image ids
    assert "Application startup complete" not in stderr  # not on the terminal without -v
