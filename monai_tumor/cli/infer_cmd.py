"""``monai-tumor infer INPUT... --bundle BUNDLE --out OUT``: segment one case.

Thin wrapper over :func:`monai_tumor.pipeline.infer.infer_one`. ``INPUT`` is a
DICOM series folder or a NIfTI/NRRD/MHA file, one per bundle input in the
bundle's input order. For NIfTI input no DICOM SEG can be written (the status
says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monai_tumor.cli._common import (
    ClassifierOption,
    DeviceOption,
    FeaturesFlag,
    LogFileOption,
    SeedRoiOption,
    SeedsOption,
    VerboseFlag,
    ViewerFlag,
    command_logging,
    command_resources,
    handle_errors,
    output_fields,
    stdout_console,
)
from monai_tumor.logs import RUN_LOG_NAME

__all__ = ["infer", "register"]


def infer(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path],
        typer.Argument(help="DICOM series folder or NIfTI file per bundle input, in order."),
    ],
    bundle: Annotated[Path, typer.Option("--bundle", help="MONAI bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    device: DeviceOption = "auto",
    seeds: SeedsOption = None,
    seeds_from: Annotated[
        Path | None,
        typer.Option(
            "--seeds-from",
            help="RTSTRUCT, SEG or NIfTI mask (.nii/.nii.gz) whose lesions give the seeds "
            "(one per connected component, at its centroid).",
        ),
    ] = None,
    seed_roi: SeedRoiOption = "(?i)gtv",
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Threads for reading (1 is fastest on local disks)."),
    ] = 1,
    force: Annotated[
        bool, typer.Option("--force", help="Redo even if complete outputs exist.")
    ] = False,
    viewer: ViewerFlag = True,
    features: FeaturesFlag = True,
    classifier: ClassifierOption = None,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Segment one series (or NIfTI file) and write mask, SEG, lesions, overlay."""
    # Imported here: the pipeline pulls in torch and MONAI (seconds), which
    # `--help` and the other commands must not pay for.
    from monai_tumor.pipeline.infer import InferOptions, infer_one

    options = InferOptions(
        device=device,
        seeds_csv=seeds,
        seeds_from=seeds_from,
        seed_roi=seed_roi or None,
        workers=workers,
        force=force,
        **output_fields(viewer=viewer, features=features, classifier=classifier),
    )
    with (
        handle_errors(),
        command_logging(verbose=verbose, log_file=log_file, default_log_file=out / RUN_LOG_NAME),
    ):
        result = infer_one(
            inputs,
            bundle=bundle,
            out_dir=out,
            options=options,
            feature_pool=command_resources(ctx).feature_pool,
        )
    flag = " + review" if result.review else ""
    stdout_console().print(
        f"{result.status}{flag}: {result.reason} ({result.seconds:.1f} s)",
        highlight=False,
        markup=False,
    )
    for reason in result.review:
        stdout_console().print(f"review: {reason}", highlight=False, markup=False)
    typer.echo(str(result.folder))


def register(app: typer.Typer) -> None:
    """Add the ``infer`` command to the app."""
    app.command("infer")(infer)
