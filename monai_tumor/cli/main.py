"""The ``monai-tumor`` console script: a thin typer app over the library.

Each subcommand lives in its own module and only parses options, calls the
package, prints, and maps :class:`~monai_tumor.errors.MonaiTumorError` to a
stable exit code (see :data:`monai_tumor.errors.EXIT_CODES`).
"""

from __future__ import annotations

import typer

from monai_tumor import __version__
from monai_tumor.cli import (
    batch_cmd,
    bundle_cmd,
    convert_cmd,
    evaluate_cmd,
    infer_cmd,
    pacs_cmd,
    report_cmd,
    scan_cmd,
    serve_cmd,
)

app = typer.Typer(
    name="monai-tumor",
    help="DICOM-native tumour segmentation on MONAI: scan exports, read series with "
    "exact geometry, convert, segment and export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"monai-tumor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """DICOM-native tumour segmentation on MONAI."""


scan_cmd.register(app)
convert_cmd.register(app)
bundle_cmd.register(app)
evaluate_cmd.register(app)
batch_cmd.register(app)
infer_cmd.register(app)
report_cmd.register(app)
pacs_cmd.register(app)
serve_cmd.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
