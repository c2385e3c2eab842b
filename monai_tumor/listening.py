"""Listening sockets and uvicorn for the commands that serve HTTP.

``monai-tumor serve`` (the annotation server) and ``monai-tumor report serve`` bind their
port before uvicorn starts, so a port already in use is a clear error naming the address,
and the command can print where it listens. uvicorn runs without its own logging
configuration: its records ("Started server process", errors inside requests) go through
the handlers of the running command (:func:`monai_tumor.logs.routed_logging`), so
``--log-file`` receives them and the redaction of quoted values applies to them as well.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from monai_tumor.errors import ConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["bind_tcp", "run_uvicorn", "url_of"]


def bind_tcp(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (TCP; IPv4 or IPv6 by the address).

    Parameters
    ----------
    host
        An address or a host name (``localhost``, ``0.0.0.0``, ``::1``...).
    port
        TCP port; 0 picks a free one (read it back with :func:`url_of`).

    Returns
    -------
    socket.socket
        A listening socket (backlog 128); the caller closes it.

    Raises
    ------
    ConfigError
        The host does not resolve or the port cannot be bound (in use, no permission).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host!r} does not resolve to an address: {exc}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}; "
            "choose another --port (0: any free port)"
        ) from exc
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket (IPv6 addresses in brackets)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def run_uvicorn(app: ASGIApp, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve ``app`` on the listening ``sock`` with uvicorn until interrupted.

    Parameters
    ----------
    app
        The ASGI (FastAPI) application.
    sock
        From :func:`bind_tcp`; closed when the server stops.
    log_level
        Level of uvicorn's own loggers. No access log: request lines carry image ids (file
        or folder names, SeriesInstanceUIDs), and exports often name files after patients.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        log_config=None,  # the command's logging handlers, not uvicorn's own stderr ones
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
