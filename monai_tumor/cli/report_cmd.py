"""``monai-tumor report serve OUT``: serve a run's report and viewer pages on loopback.

Thin wrapper over :mod:`monai_tumor.report.serve`: binds the port, prints the address of
``index.html`` and serves until Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monai_tumor.cli._common import (
    APP_SETTINGS,
    LogFileOption,
    VerboseFlag,
    command_logging,
    handle_errors,
)

__all__ = ["register", "serve"]

report_app = typer.Typer(
    help="Look at a run's results: the report and the 3D viewer pages.", **APP_SETTINGS
)


@report_app.command("serve")
def serve(
    out: Annotated[Path, typer.Argument(help="Output folder of a batch or infer run.")],
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port).")
    ] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to listen on (127.0.0.1 or ::1).")
    ] = "127.0.0.1",
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Serve OUT read-only on loopback; open the printed address in a browser."""
    from monai_tumor.listening import url_of
    from monai_tumor.report.serve import bind_loopback, make_app, serve_report

    with handle_errors(), command_logging(verbose=verbose, log_file=log_file):
        make_app(out)  # a missing folder fails before the port is taken
        sock = bind_loopback(host, port)
        page = "index.html" if (out / "index.html").is_file() else "viewer.html"
        typer.echo(f"serving {out} at {url_of(sock)}/{page} (Ctrl-C to stop)")
        serve_report(out, sock)


def register(app: typer.Typer) -> None:
    """Add the ``report`` command group to the app."""
    app.add_typer(report_app, name="report")
