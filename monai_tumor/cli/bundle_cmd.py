"""`monai-tumor bundle verify BUNDLE`: offline checks of a MONAI bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from monai_tumor.cli._common import (
    APP_SETTINGS,
    LogFileOption,
    VerboseFlag,
    command_logging,
    handle_errors,
    stdout_console,
)

__all__ = ["register"]

_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow"}


def _verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle root (holding configs/, models/, docs/).")],
    schema: Annotated[
        Path | None,
        typer.Option(
            "--schema",
            help="Local meta schema JSON (default: MONAI's meta_schema_20240725.json, shipped "
            "with monai-tumor). Never downloaded.",
        ),
    ] = None,
    smoke: Annotated[
        bool, typer.Option("--smoke/--no-smoke", help="Run inference.json on synthetic data.")
    ] = True,
    device: Annotated[str, typer.Option("--device", help="Torch device.")] = "cpu",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Verify a bundle: files, metadata schema, keys, network I/O, TorchScript, smoke run.

    Exits 0 when no check fails (warnings allowed), 1 otherwise.
    """
    from monai_tumor.bundle.verify import verify_bundle

    with handle_errors(), command_logging(verbose=verbose, log_file=log_file):
        report = verify_bundle(bundle, schema_path=schema, smoke=smoke, device=device)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        table = Table(title=f"bundle verify: {escape(str(report.bundle_dir))}", show_lines=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("s", justify="right")
        table.add_column("details", overflow="fold")
        for check in report.checks:
            status = check.status.value
            table.add_row(
                check.name,
                f"[{_STYLE[status]}]{status}[/]",
                f"{check.seconds:.1f}",
                escape(check.message),
            )
        stdout_console().print(table)
        verdict = "[green]PASSED[/]" if report.passed else "[bold red]FAILED[/]"
        failed = f" ({escape(', '.join(report.failed))})" if report.failed else ""
        stdout_console().print(f"{verdict}{failed}")
    if not report.passed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``bundle`` sub-app (``bundle verify``) to the app."""
    bundle_app = typer.Typer(
        name="bundle", help="Work with MONAI bundles (Model Zoo layout).", **APP_SETTINGS
    )
    bundle_app.command("verify")(_verify)
    app.add_typer(bundle_app, name="bundle")
