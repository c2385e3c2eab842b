"""Serve a run's output folder on loopback, for browsers that block pages opened from files.

The report and the viewer pages open from ``file://`` in current browsers (their scripts
are classic scripts and the volumes travel inside ``display.js``). Some setups still
refuse: a browser policy that blocks local files, a viewer embedded in another tool, a
remote desktop. ``monai-tumor report serve OUT`` serves ``OUT`` read-only over HTTP on
``127.0.0.1`` (FastAPI's static files under uvicorn): open the printed address. Only
loopback addresses are accepted, so the images never leave the machine.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from monai_tumor.errors import ConfigError
from monai_tumor.listening import bind_tcp, run_uvicorn

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["LOOPBACK", "bind_loopback", "make_app", "serve_report"]

#: The default address.
LOOPBACK = "127.0.0.1"


def make_app(out_dir: str | os.PathLike[str]) -> FastAPI:
    """Make a FastAPI app serving ``out_dir`` read-only, ``index.html`` for folders.

    Parameters
    ----------
    out_dir
        The run's output folder.

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    ConfigError
        ``out_dir`` is not a folder.
    """
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    root = Path(out_dir)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; give the output folder of a batch or infer run")
    app = FastAPI(title="monai-tumor report", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/", StaticFiles(directory=root, html=True), name="report")
    return app


def bind_loopback(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """Open a listening TCP socket on a loopback address (``port=0``: a free port).

    Raises
    ------
    ConfigError
        ``host`` is not a loopback address, or the port cannot be bound.
    """
    name = "127.0.0.1" if host == "localhost" else host
    try:
        address = ipaddress.ip_address(name)
    except ValueError as exc:
        raise ConfigError(f"--host {host!r} is not an IP address; use 127.0.0.1 or ::1") from exc
    if not address.is_loopback:
        raise ConfigError(
            f"--host {host} is not a loopback address: the report holds patient images and is "
            "served to this machine only (127.0.0.1 or ::1); copy the folder to share it"
        )
    return bind_tcp(name, port)


def serve_report(out_dir: str | os.PathLike[str], sock: socket.socket) -> None:
    """Serve ``out_dir`` on an already bound loopback socket until interrupted.

    Parameters
    ----------
    out_dir
        The run's output folder.
    sock
        From :func:`bind_loopback` (the caller prints its address first).
    """
    run_uvicorn(make_app(out_dir), sock, log_level="warning")
