"""``monai-tumor scan EXPORT_DIR [--index FILE] [--json]``: list what an export holds.

Walks the export (headers only, in parallel; the export is only read), updates
its SQLite index (by default in the user's cache,
:func:`monai_tumor.config.default_index_path`; a rescan reads only new or
changed files) and prints a table of series, the RTSTRUCT/SEG objects and the
skipped files with their reasons.

``--json`` prints :meth:`monai_tumor.ingest.scan.ScanResult.to_dict` instead:
``{"schema": "monai-tumor/scan/1", "export_dir", "index", "stats",
"patients": [{"patient_hash", "studies": [{"study_instance_uid", "study_date",
"study_description", "series": [...], "non_image_objects": [...]}]}],
"skipped": [{"path", "reason", "detail", "sop_class_uid"}]}``; each series has
``series_instance_uid, series_number, series_description, modality,
sop_class_uid, sop_class_name, image_kind, number_of_instances,
number_of_slices, number_of_stacks, orientation, pixel_spacing [row, col] (mm),
slice_spacing (mm), uniform, multi_frame, transfer_syntaxes, decodable,
synthetic_uids, truncated_instances, stacks [...], attributes {DICOM keyword: value}``.

Patients appear only as a hash of PatientID; names, IDs and birth dates are
never printed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from pydicom.uid import UID
from rich.table import Table

from monai_tumor.cli._common import (
    LogFileOption,
    VerboseFlag,
    command_logging,
    handle_errors,
    stdout_console,
)
from monai_tumor.ingest.codecs import transfer_syntax_name
from monai_tumor.ingest.scan import ScanResult, scan_export
from monai_tumor.ingest.series import SeriesInfo

__all__ = ["register", "render_table", "scan"]


def _spacing(info: SeriesInfo) -> str:
    if info.pixel_spacing is None:
        return "-"
    row, col = info.pixel_spacing
    z = f"{info.slice_spacing:.3g}" if info.slice_spacing is not None else "?"
    return f"{row:.3g} x {col:.3g} x {z}"


def _syntax(uid: str) -> str:
    """Short name of a transfer syntax (its pydicom keyword, else its name)."""
    keyword = UID(uid).keyword
    return str(keyword) if keyword else transfer_syntax_name(uid)


def _short(uid: str) -> str:
    return uid if len(uid) <= 14 else "..." + uid[-11:]


def render_table(result: ScanResult) -> None:
    """Print the scan result as rich tables on stdout (no patient identifiers)."""
    table = Table(title=f"Series in {result.export_dir}", show_lines=False)
    for name in (
        "patient",
        "study",
        "#",
        "mod",
        "description",
        "kind",
        "slices",
        "stacks",
        "plane",
        "spacing (mm)",
        "uniform",
        "MF",
        "syntax",
        "decodable",
    ):
        table.add_column(name, overflow="fold", no_wrap=name not in ("description", "syntax"))
    for patient in result.patients:
        for study in patient.studies:
            for info in study.series:
                syntaxes = ", ".join(_syntax(ts) for ts in info.transfer_syntaxes)
                table.add_row(
                    patient.patient_hash[:8] or "-",
                    study.study_instance_uid[-6:],
                    str(info.series_number) if info.series_number is not None else "-",
                    info.modality,
                    info.series_description or "",
                    info.image_kind.value,
                    str(info.number_of_slices)
                    + (
                        f" [red]({info.truncated_instances} truncated)[/]"
                        if info.truncated_instances
                        else ""
                    ),
                    str(info.number_of_stacks),
                    info.orientation.value if info.orientation else "-",
                    _spacing(info),
                    "yes" if info.uniform else "[yellow]no[/]",
                    "yes" if info.multi_frame else "",
                    syntaxes,
                    "yes" if info.decodable else "[red]no[/]",
                )
    stdout_console().print(table)
    if result.non_image_objects:
        objects = Table(title="Non-image objects (RTSTRUCT, SEG)")
        for name in ("path", "modality", "refers to series"):
            objects.add_column(name, overflow="fold")
        for obj in result.non_image_objects:
            objects.add_row(
                _relative(result, obj.path),
                obj.modality,
                ", ".join(_short(u) for u in obj.referenced_series_uids) or "-",
            )
        stdout_console().print(objects)
    if result.skipped:
        skipped = Table(title="Skipped files")
        for name in ("path", "reason", "detail"):
            skipped.add_column(name, overflow="fold")
        for record in result.skipped:
            skipped.add_row(_relative(result, record.path), record.reason.value, record.detail)
        stdout_console().print(skipped)
    counts = Counter(r.reason.value for r in result.skipped)
    stats = result.stats
    stdout_console().print(
        f"{len(result.series)} series, {len(result.non_image_objects)} non-image objects, "
        f"{len(result.skipped)} skipped"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})" if counts else "")
        + f"; {stats.files_found} files, {stats.files_parsed} read, "
        f"{stats.files_unchanged} unchanged, {stats.files_removed} removed "
        f"in {stats.seconds:.2f} s; index {result.index_path}",
        highlight=False,
    )


def _relative(result: ScanResult, path: Path) -> str:
    try:
        return path.relative_to(result.export_dir).as_posix()
    except ValueError:
        return str(path)


def scan(
    export_dir: Annotated[
        Path, typer.Argument(help="Folder of the DICOM export (searched recursively).")
    ],
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            help="SQLite index file (default: one per export in the user's cache, "
            "$MONAI_TUMOR_CACHE/index/, else $XDG_CACHE_HOME/monai-tumor/index/, else "
            "~/.cache/monai-tumor/index/; the export is never written to).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Parallel header readers.")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Find every DICOM series in an export and index it (headers only)."""
    with handle_errors(), command_logging(verbose=verbose, log_file=log_file):
        result = scan_export(export_dir, index_path=index, workers=workers, progress=progress)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        render_table(result)


def register(app: typer.Typer) -> None:
    """Add the ``scan`` command to the app."""
    app.command("scan")(scan)
