"""``monai-tumor serve --studies DIR_OR_URL --bundle B [...]``: the annotation server.

Thin wrapper over :func:`monai_tumor.service.serve` (MONAI Label's REST API; see
docs/annotation.md for 3D Slicer and OHIF).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monai_tumor.cli._common import LogFileOption, VerboseFlag, command_logging, handle_errors
from monai_tumor.logs import RUN_LOG_NAME

__all__ = ["register", "serve"]


def serve(
    studies: Annotated[
        str,
        typer.Option("--studies", help="Image folder, or a DICOMweb base URL (http://...)."),
    ],
    bundle: Annotated[
        list[Path], typer.Option("--bundle", help="MONAI bundle folder; repeat for several.")
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Folder for labels, uploads and model versions "
            "(default: STUDIES/.monai-tumor; ./.monai-tumor for DICOMweb).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Require 'Authorization: Bearer TOKEN' on every request "
            "(default: $MONAI_TUMOR_SERVE_TOKEN; unset = no authentication).",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="torch threads per inference.")
    ] = None,
    max_upload_mb: Annotated[
        int, typer.Option("--max-upload-mb", min=1, help="Largest accepted upload (MB).")
    ] = 512,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Serve the bundles with MONAI Label's REST API for 3D Slicer and OHIF."""
    from monai_tumor.service import ServiceConfig
    from monai_tumor.service import serve as run_server

    config = ServiceConfig(
        studies=studies,
        bundles=tuple(bundle),
        state_dir=state,
        token=token or ServiceConfig.token_from_env(),
        device=device,
        num_threads=threads,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
    )
    with (
        handle_errors(),
        command_logging(
            verbose=verbose,
            log_file=log_file,
            default_log_file=config.resolved_state_dir() / RUN_LOG_NAME,  # unless --log-file
        ),
    ):
        run_server(
            config,
            host=host,
            port=port,
            on_listening=lambda url: typer.echo(f"annotation server at {url} (Ctrl-C to stop)"),
        )


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the app."""
    app.command("serve")(serve)
