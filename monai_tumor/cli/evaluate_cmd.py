"""`monai-tumor evaluate PRED REF --out metrics.csv`: Dice, HD95 and surface Dice per case/class."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from monai_tumor.cli._common import (
    LogFileOption,
    VerboseFlag,
    command_logging,
    handle_errors,
    stdout_console,
    write_json_report,
)

__all__ = ["register"]


def _fmt(value: float, digits: int = 4) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _evaluate(
    pred: Annotated[
        Path, typer.Argument(help="Prediction label map (NIfTI/NRRD/MHA) or a folder of them.")
    ],
    ref: Annotated[
        Path,
        typer.Argument(
            help="Reference: label map, RTSTRUCT or DICOM SEG file, or a folder with "
            "<case>.nii.gz files or <case>/ sub-folders holding one reference each."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Metrics CSV to write.")] = Path(
        "metrics.csv"
    ),
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help='Class groups, e.g. "WT=1,2,3,4;TC=1,3,4;ET=4" (default: one class per '
            "non-zero label present).",
        ),
    ] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Surface Dice tolerance in mm.")
    ] = 1.0,
    ref_series: Annotated[
        Path | None,
        typer.Option(
            "--ref-series",
            help="DICOM series folder whose grid RTSTRUCT/SEG references are placed on "
            "(default: the prediction's grid).",
        ),
    ] = None,
    ref_name: Annotated[
        str | None,
        typer.Option(
            "--ref-name",
            help="Reference file name (glob) inside each <case>/ reference folder, "
            "e.g. OTMultiClass.nii.gz.",
        ),
    ] = None,
    roi: Annotated[
        str | None, typer.Option("--roi", help="RTSTRUCT ROI name or regular expression.")
    ] = None,
    segments: Annotated[
        str | None,
        typer.Option("--segments", help="SEG segment numbers or labels, comma-separated."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write a JSON run report here.")
    ] = None,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Compare predictions with references on the same grid; write one CSV row per case/class.

    Grids must match (shape and affine within 1e-3 mm). Both masks empty: Dice 1,
    HD95 0; one empty: Dice 0, HD95 inf, surface Dice 0.
    """
    from monai_tumor.evaluation import (
        EvaluationOptions,
        evaluate,
        parse_label_groups,
        write_metrics_csv,
    )

    with handle_errors(), command_logging(verbose=verbose, log_file=log_file):
        seg_list: list[int | str] | None = None
        if segments:
            seg_list = [int(s) if s.strip().isdigit() else s.strip() for s in segments.split(",")]
        options = EvaluationOptions(
            labels=parse_label_groups(labels) if labels else None,
            tolerance_mm=tolerance,
            roi=roi,
            segments=seg_list,
            ref_series=ref_series,
            ref_name=ref_name,
        )
        rows = evaluate(pred, ref, options=options)
        write_metrics_csv(rows, out)
    table = Table(title=f"evaluate: {len({r.case for r in rows})} case(s)")
    for column in ("case", "class", "dice", "hd95_mm", f"NSD@{tolerance:g}mm", "pred mL", "ref mL"):
        table.add_column(column, justify="left" if column in ("case", "class") else "right")
    for r in rows:
        table.add_row(
            escape(r.case),
            escape(r.label),
            _fmt(r.dice),
            _fmt(r.hd95_mm, 2),
            _fmt(r.surface_dice),
            _fmt(r.volume_pred_ml, 2),
            _fmt(r.volume_ref_ml, 2),
        )
    stdout_console().print(table)
    stdout_console().print(f"wrote {out}", markup=False, highlight=False)
    write_json_report(
        report,
        {
            "command": "evaluate",
            "prediction": str(pred),
            "reference": str(ref),
            "csv": str(out),
            "tolerance_mm": tolerance,
            "rows": [
                {
                    k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
                    for k, v in row.items()
                }
                for row in (r.to_row() for r in rows)
            ],
        },
    )


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the app."""
    app.command("evaluate")(_evaluate)
