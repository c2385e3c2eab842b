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
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from pydicom.uid import UID
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monai_tumor.cli._common import (
    LogFileOption,
    VerboseFlag,
    command_logging,
    handle_errors,
    stdout_console,
)
from monai_tumor.ingest.codecs import transfer_syntax_name
from monai_tumor.ingest.records import SkippedFile
from monai_tumor.ingest.scan import ScanResult, scan_export
from monai_tumor.ingest.series import SeriesInfo

__all__ = [
    "SERIES_COLUMNS",
    "SKIPPED_LISTED",
    "register",
    "render_table",
    "scan",
    "series_table",
    "skipped_table",
]


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


#: The series table's columns in display order.
SERIES_COLUMNS = (
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
)
#: The same columns, least useful first: on a console too narrow for all of them these are
#: left out (and named under the table) instead of being squeezed into unreadable slivers.
_DROP_FIRST = (
    "MF",
    "syntax",
    "stacks",
    "plane",
    "uniform",
    "decodable",
    "spacing (mm)",
    "description",
    "study",
)
#: Skipped files are listed one by one up to this many; more are counted per reason.
SKIPPED_LISTED = 20


def _series_rows(result: ScanResult) -> list[dict[str, str]]:
    rows = []
    for patient in result.patients:
        for study in patient.studies:
            for info in study.series:
                truncated = (
                    f" [red]({info.truncated_instances} truncated)[/]"
                    if info.truncated_instances
                    else ""
                )
                rows.append(
                    {
                        "patient": patient.patient_hash[:8] or "-",
                        "study": study.study_instance_uid[-6:],
                        "#": str(info.series_number) if info.series_number is not None else "-",
                        "mod": escape(info.modality),
                        "description": escape(info.series_description or ""),
                        "kind": info.image_kind.value,
                        "slices": str(info.number_of_slices) + truncated,
                        "stacks": str(info.number_of_stacks),
                        "plane": info.orientation.value if info.orientation else "-",
                        "spacing (mm)": _spacing(info),
                        "uniform": "yes" if info.uniform else "[yellow]no[/]",
                        "MF": "yes" if info.multi_frame else "",
                        "syntax": escape(", ".join(_syntax(t) for t in info.transfer_syntaxes)),
                        "decodable": "yes" if info.decodable else "[red]no[/]",
                    }
                )
    return rows


#: Columns whose cells may wrap between words; every other cell is kept on one line.
_WRAPPING = ("description", "syntax")


def _narrowest(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> int:
    """Width the table needs with no cell cut inside a word (rich's heavy box, padding 1)."""
    total = 1
    for name in columns:
        cells = [Text.from_markup(row[name]).plain for row in rows]
        if name in _WRAPPING:
            need = max((len(word) for cell in cells for word in cell.split()), default=0)
        else:
            need = max((len(cell) for cell in cells), default=0)
        total += max(len(name), need) + 3
    return total


def _series_table(title: str, rows: Sequence[dict[str, str]], columns: Sequence[str]) -> Table:
    table = Table(title=title, show_lines=False)
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=name not in _WRAPPING)
    for row in rows:
        table.add_row(*(row[name] for name in columns))
    return table


def series_table(result: ScanResult, width: int) -> Table:
    """Build the series table with as many columns as fit ``width`` characters.

    Columns of :data:`_DROP_FIRST` are left out, least useful first (those that flag a
    problem with one of the series last), until no cell has to be cut inside a word; the
    caption names what was left out.
    """
    rows = _series_rows(result)
    columns = list(SERIES_COLUMNS)
    hidden: list[str] = []
    # a column that warns about a series here ("no", "truncated") is left out last
    warns = {"uniform"} if any(not info.uniform for info in result.series) else set()
    warns |= {"decodable"} if any(not info.decodable for info in result.series) else set()
    for name in sorted(_DROP_FIRST, key=lambda n: n in warns):
        if _narrowest(rows, columns) <= width:
            break
        columns.remove(name)
        hidden.append(name)
    # leaving out a wide column may have made room for narrower ones left out before it
    for name in reversed(hidden[:-1]):
        wider = [c for c in SERIES_COLUMNS if c in columns or c == name]
        if _narrowest(rows, wider) <= width:
            columns = wider
            hidden.remove(name)
    table = _series_table(f"Series in {escape(str(result.export_dir))}", rows, columns)
    if hidden:
        table.caption = (
            f"not shown on {width} columns: {', '.join(reversed(hidden))} "
            "(a wider terminal or COLUMNS shows them; --json has every field)"
        )
    return table


def skipped_table(result: ScanResult) -> Table:
    """Build the skipped files' table; over :data:`SKIPPED_LISTED` files, a count per reason."""
    if len(result.skipped) <= SKIPPED_LISTED:
        table = Table(title="Skipped files")
        for name in ("path", "reason", "detail"):
            table.add_column(name, overflow="fold")
        for record in result.skipped:
            table.add_row(
                escape(_relative(result, record.path)), record.reason.value, escape(record.detail)
            )
        return table
    table = Table(
        title=f"Skipped files ({len(result.skipped)}; --json lists every one)",
        caption="per reason: how many files, and the first of them",
    )
    for name in ("reason", "files", "first file", "detail"):
        table.add_column(name, overflow="fold", justify="right" if name == "files" else "left")
    first: dict[str, SkippedFile] = {}
    counts: Counter[str] = Counter()
    for record in result.skipped:
        first.setdefault(record.reason.value, record)
        counts[record.reason.value] += 1
    for reason, record in sorted(first.items()):
        table.add_row(
            reason,
            str(counts[reason]),
            escape(_relative(result, record.path)),
            escape(record.detail),
        )
    return table


def render_table(result: ScanResult) -> None:
    """Print the scan result as rich tables on stdout (no patient identifiers)."""
    console = stdout_console()
    console.print(series_table(result, console.width))
    if result.non_image_objects:
        objects = Table(title="Non-image objects (RTSTRUCT, SEG)")
        for name in ("path", "modality", "refers to series"):
            objects.add_column(name, overflow="fold")
        for obj in result.non_image_objects:
            objects.add_row(
                escape(_relative(result, obj.path)),
                escape(obj.modality),
                ", ".join(_short(u) for u in obj.referenced_series_uids) or "-",
            )
        console.print(objects)
    if result.skipped:
        console.print(skipped_table(result))
    counts = Counter(r.reason.value for r in result.skipped)
    stats = result.stats
    console.print(
        f"{len(result.series)} series, {len(result.non_image_objects)} non-image objects, "
        f"{len(result.skipped)} skipped"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})" if counts else "")
        + f"; {stats.files_found} files, {stats.files_parsed} read, "
        f"{stats.files_unchanged} unchanged, {stats.files_removed} removed "
        f"in {stats.seconds:.2f} s; index {result.index_path}",
        highlight=False,
        markup=False,
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
