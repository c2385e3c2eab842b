"""The ``monai-tumor`` console script: a thin typer app over the library.

Each subcommand lives in its own module and only parses options, calls the
package, prints, and maps :class:`~monai_tumor.errors.MonaiTumorError` to a
stable exit code (see :data:`monai_tumor.errors.EXIT_CODES`).
"""

from __future__ import annotations

import sys

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

#: Commands that only run inference: their process starts as
#: :func:`monai_tumor.startup.prepare_inference_process` says.
INFERENCE_COMMANDS = frozenset({"infer", "batch"})


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the start-up choices of the process, then :data:`app`.

    Parameters
    ----------
    argv
        The arguments (default ``sys.argv[1:]``); the first one not starting with ``-``
        names the command.
    """
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    if command in INFERENCE_COMMANDS:
        from monai_tumor.startup import prepare_inference_process

        # batch: OpenMP threads that sleep while waiting (same throughput on an idle
        # machine, far better beside other jobs; docs/cli.md); infer keeps them spinning
        prepare_inference_process(openmp_wait_policy="PASSIVE" if command == "batch" else None)
    app(args=args, prog_name="monai-tumor")


if __name__ == "__main__":  # pragma: no cover
    main()
