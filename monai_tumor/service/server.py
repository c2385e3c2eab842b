"""Run the annotation server with uvicorn."""

from __future__ import annotations

import logging
from collections.abc import Callable

from monai_tumor.listening import bind_tcp, run_uvicorn, url_of
from monai_tumor.service.app import create_app
from monai_tumor.service.config import ServiceConfig

__all__ = ["serve"]

_log = logging.getLogger(__name__)


def serve(
    config: ServiceConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve :func:`~monai_tumor.service.create_app` on ``host:port`` until interrupted.

    The bundles are read first, then the port is bound, then ``on_listening`` is told the
    address, then requests are served. uvicorn's log records go to the caller's logging
    handlers (``--log-file`` of ``monai-tumor serve``), never to an access log.

    Parameters
    ----------
    config
        The server's options.
    host, port
        Where to listen (loopback by default: put a TLS proxy in front to expose it);
        port 0 picks a free one.
    on_listening
        Called with ``http://HOST:PORT`` once the port is bound (the CLI prints it).

    Raises
    ------
    BundleError
        If a bundle cannot be read (before listening).
    ConfigError
        If the port cannot be bound (in use, no permission) or the host does not resolve.
    """
    app = create_app(config)
    sock = bind_tcp(host, port)
    url = url_of(sock)
    _log.info("annotation server listening on %s", url)
    if on_listening is not None:
        on_listening(url)
    run_uvicorn(app, sock, log_level="info")
