"""``monai-tumor convert SERIES OUT.nii.gz``: one series to NIfTI + JSON sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from monai_tumor.cli._common import (
    LogFileOption,
    VerboseFlag,
    command_logging,
    handle_errors,
    stdout_console,
    write_json_report,
)
from monai_tumor.errors import ConfigError

__all__ = ["register"]


def convert(
    series: Annotated[
        str,
        typer.Argument(
            help="A folder holding one series, a single NIfTI/NRRD/MHA file, or a "
            "SeriesInstanceUID (with --index)."
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Output .nii.gz (the .json sidecar goes beside it).")],
    index: Annotated[
        Path | None,
        typer.Option("--index", help="SQLite index written by `monai-tumor scan`."),
    ] = None,
    series_uid: Annotated[
        str | None,
        typer.Option("--series-uid", help="Which series, when the folder holds several."),
    ] = None,
    nonuniform: Annotated[
        str,
        typer.Option(help="Missing slices / uneven spacing: 'error' or 'resample'."),
    ] = "error",
    tilt: Annotated[
        str,
        typer.Option(help="Gantry tilt: 'error', 'resample' or 'shear' (exact sheared affine)."),
    ] = "error",
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a JSON run report here.")
    ] = None,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Convert one series to NIfTI with a JSON sidecar of acquisition fields.

    The sidecar never contains patient names, IDs or birth dates.
    """
    from monai_tumor.export.convert import convert_series
    from monai_tumor.ingest.reader import ReadOptions

    with handle_errors(), command_logging(verbose=verbose, log_file=log_file):
        options = ReadOptions(nonuniform=nonuniform, tilt=tilt)
        source: str | Path | list[Path]
        path = Path(series)
        if path.exists():
            source = path
        elif index is not None:
            from monai_tumor.ingest.index import SeriesIndex

            source = SeriesIndex(index).files_for_series(series)
        else:
            raise ConfigError(
                f"{series!r} is neither an existing path nor usable as a SeriesInstanceUID "
                "without --index; run `monai-tumor scan EXPORT_DIR` (it prints where its index "
                "is) and pass that file as --index"
            )
        result = convert_series(source, out, options=options, series_uid=series_uid)
        stdout_console().print(
            f"wrote [bold]{escape(str(result.nifti))}[/] {result.shape} "
            f"spacing {tuple(round(s, 4) for s in result.spacing_mm)} mm; "
            f"sidecar {escape(str(result.sidecar))}"
        )
        for record in result.skipped_files:
            stdout_console().print(
                f"skipped {record.path}: {record.reason.value} ({record.detail})",
                highlight=False,
                markup=False,
            )
        write_json_report(
            report,
            {
                "command": "convert",
                "nifti": str(result.nifti),
                "sidecar": str(result.sidecar),
                "shape": list(result.shape),
                "spacing_mm": list(result.spacing_mm),
                "series_uid": result.series_uid,
                "skipped_files": [record.to_dict() for record in result.skipped_files],
            },
        )


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command to ``app``."""
    app.command("convert")(convert)
