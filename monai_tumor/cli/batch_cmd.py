"""``monai-tumor batch EXPORT_DIR --bundle BUNDLE --out OUT``: segment a whole export.

Thin wrapper over :func:`monai_tumor.pipeline.batch.run_batch`: parses the
options, runs, prints one line per status and the path of ``index.html``.
Exit code 0 when no series failed; otherwise the code of the first failure's
error class (:data:`monai_tumor.errors.EXIT_CODES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monai_tumor.cli._common import ViewerFlag, configure_logging, handle_errors, stdout_console

__all__ = ["batch", "register"]


def batch(
    export_dir: Annotated[Path, typer.Argument(help="DICOM export folder (searched recursively).")],
    bundle: Annotated[Path, typer.Option("--bundle", help="MONAI bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    rules: Annotated[
        Path | None,
        typer.Option("--rules", help="Series selection rules JSON (default: the bundle's)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Scan worker processes and output-writing threads."),
    ] = 2,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    seeds: Annotated[
        Path | None,
        typer.Option("--seeds", help="CSV of seed points x,y,z (DICOM LPS mm) for VOI bundles."),
    ] = None,
    seeds_from_rtstruct: Annotated[
        bool,
        typer.Option(
            "--seeds-from-rtstruct",
            help="Seeds at the lesions of RTSTRUCT/SEG objects in the export that refer to "
            "each series (VOI bundles).",
        ),
    ] = False,
    seed_roi: Annotated[
        str,
        typer.Option("--seed-roi", help="Regex of RTSTRUCT ROI names used as seeds ('' = all)."),
    ] = "(?i)gtv",
    index: Annotated[
        Path | None,
        typer.Option("--index", help="SQLite index (default: the export's if writable, else OUT)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo series that already have complete outputs.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
    viewer: ViewerFlag = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each series.")] = False,
) -> None:
    """Segment every selected series of an export; write SEG, NIfTI, lesions, overlays, report."""
    # Imported here: the pipeline pulls in torch and MONAI (seconds), which
    # `--help` and the other commands must not pay for.
    from monai_tumor.pipeline.batch import BatchOptions, SeriesStatus, run_batch
    from monai_tumor.report.viewer import ViewerOptions

    configure_logging(verbose)
    options = BatchOptions(
        rules=rules,
        workers=workers,
        device=device,
        seeds_csv=seeds,
        seeds_from_export=seeds_from_rtstruct,
        seed_roi=seed_roi or None,
        index_path=index,
        force=force,
        progress=progress,
        viewer=ViewerOptions() if viewer else None,
    )
    with handle_errors():
        result = run_batch(export_dir, out, bundle=bundle, options=options)
    reused = sum(1 for r in result.records if r.reused)
    stdout_console().print(
        f"{len(result.records)} series: {result.count(SeriesStatus.DONE)} done "
        f"({reused} reused), {result.count(SeriesStatus.SKIPPED)} skipped, "
        f"{result.count(SeriesStatus.FAILED)} failed in {result.seconds:.1f} s",
        highlight=False,
    )
    for record in result.failed:
        stdout_console().print(
            f"[red]failed[/] {record.series_key}: {record.reason}", highlight=False
        )
    typer.echo(str(result.index_html))
    if result.exit_code:
        raise typer.Exit(code=result.exit_code)


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command to the app."""
    app.command("batch")(batch)
