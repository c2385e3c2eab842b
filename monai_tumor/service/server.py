"""Run the annotation server with uvicorn."""

from __future__ import annotations

from monai_tumor.service.app import create_app
from monai_tumor.service.config import ServiceConfig

__all__ = ["serve"]


def serve(config: ServiceConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve :func:`~monai_tumor.service.create_app` on ``host:port`` until interrupted.

    Parameters
    ----------
    config
        The server's options.
    host, port
        Where to listen (loopback by default: put a TLS proxy in front to expose it).

    Raises
    ------
    BundleError
        If a bundle cannot be read (before listening).
    """
    import uvicorn

    app = create_app(config)
    # No access log: request lines carry image ids (file or folder names, SeriesInstanceUIDs),
    # and exports often name files after patients; logs never hold patient identifiers.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
