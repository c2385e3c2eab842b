"""``monai-tumor batch EXPORT_DIR --bundle BUNDLE --out OUT``: segment a whole export.

Thin wrapper over :func:`monai_tumor.pipeline.batch.run_batch` (an export folder) or
:func:`monai_tumor.pacs.batch.run_dicomweb_batch` / :func:`~monai_tumor.pacs.batch.run_dimse_batch`
(studies from a PACS, SEGs sent back): parses the options, runs, prints one line per
status and the path of ``index.html``.
Exit code 0 when no series failed; otherwise the code of the first failure's
error class (:data:`monai_tumor.errors.EXIT_CODES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

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
from monai_tumor.cli._pacs import dicomweb_config, dimse_options, retry_policy, tls_config
from monai_tumor.errors import ConfigError
from monai_tumor.logs import RUN_LOG_NAME
from monai_tumor.pacs.config import DicomwebConfig, RetryPolicy, TlsConfig, parse_node

if TYPE_CHECKING:
    from monai_tumor.pacs.batch import PacsBatchResult
    from monai_tumor.pipeline.batch import BatchOptions

__all__ = ["batch", "register"]


def batch(
    ctx: typer.Context,
    export_dir: Annotated[
        Path | None,
        typer.Argument(help="DICOM export folder (searched recursively); omit with a PACS source."),
    ] = None,
    *,
    bundle: Annotated[Path, typer.Option("--bundle", help="MONAI bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    dicomweb: Annotated[
        str | None,
        typer.Option("--dicomweb", help="Pull from this DICOMweb root (QIDO/WADO-RS) instead."),
    ] = None,
    dimse: Annotated[
        str | None,
        typer.Option("--dimse", help="Pull from this PACS (AET@HOST:PORT, C-FIND + C-GET)."),
    ] = None,
    study: Annotated[
        list[str] | None, typer.Option("--study", help="StudyInstanceUID to pull (repeatable).")
    ] = None,
    query: Annotated[
        list[str] | None,
        typer.Option("--query", help="QIDO-RS study filter KEY=VALUE (repeatable, DICOMweb)."),
    ] = None,
    studies_from: Annotated[
        Path | None,
        typer.Option("--studies-from", help="CSV with a StudyInstanceUID column."),
    ] = None,
    stow_to: Annotated[
        str | None,
        typer.Option("--stow-to", help="STOW-RS the SEGs here (default: the --dicomweb server)."),
    ] = None,
    store_to: Annotated[
        str | None,
        typer.Option("--store-to", help="C-STORE the SEGs here (default: the --dimse node)."),
    ] = None,
    send_back: Annotated[
        bool, typer.Option("--send-back/--no-send-back", help="Send the SEGs to the PACS.")
    ] = True,
    user: Annotated[
        str | None, typer.Option("--user", help="DICOMweb basic-auth user name.")
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", help="Environment variable holding the password."),
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", help="Environment variable holding a bearer token."),
    ] = None,
    ca_bundle: Annotated[
        Path | None, typer.Option("--ca-bundle", help="PEM CA bundle for https / DICOM TLS.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Our PEM certificate (DICOM TLS).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="Its private key (DICOM TLS).")
    ] = None,
    aet: Annotated[str, typer.Option("--aet", help="Our AE title (DIMSE).")] = "MONAITUMOR",
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds of network silence tolerated.")
    ] = 120.0,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Retries of a failed PACS operation.")
    ] = 5,
    backoff: Annotated[
        float, typer.Option("--backoff", min=0, help="Seconds before the first retry (doubles).")
    ] = 2.0,
    rules: Annotated[
        Path | None,
        typer.Option("--rules", help="Series selection rules JSON (default: the bundle's)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Scan worker processes and output-writing threads."),
    ] = 2,
    device: DeviceOption = "auto",
    seeds: SeedsOption = None,
    seeds_from_rtstruct: Annotated[
        bool,
        typer.Option(
            "--seeds-from-rtstruct",
            help="Seeds at the lesions of RTSTRUCT/SEG objects in the export that refer to "
            "each series (VOI bundles).",
        ),
    ] = False,
    seed_roi: SeedRoiOption = "(?i)gtv",
    index: Annotated[
        Path | None,
        typer.Option("--index", help="SQLite index (default OUT/.monai-tumor/index.sqlite)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo series that already have complete outputs.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Run the series on a Dask cluster: its scheduler address (tcp://HOST:PORT). "
            "Export and OUT must be visible to every worker at the same paths.",
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="local:N starts a local Dask cluster of N worker processes for the run "
            "(or a scheduler address, as --scheduler).",
        ),
    ] = None,
    worker_resources: Annotated[
        str | None,
        typer.Option(
            "--worker-resources",
            help="Resources each series needs on a Dask worker, e.g. GPU=1 (workers started "
            "with `dask worker --resources GPU=1`).",
        ),
    ] = None,
    allowed_failures: Annotated[
        int,
        typer.Option(
            "--allowed-failures",
            min=0,
            help="Local cluster: worker deaths tolerated per series before it is failed "
            "(a remote scheduler uses its distributed.scheduler.allowed-failures).",
        ),
    ] = 2,
    viewer: ViewerFlag = True,
    features: FeaturesFlag = True,
    classifier: ClassifierOption = None,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Segment every selected series of an export; write SEG, NIfTI, lesions, overlays, report."""
    # Imported here: the pipeline pulls in torch and MONAI (seconds), which
    # `--help` and the other commands must not pay for.
    from monai_tumor.pacs.pull import parse_query, read_study_list
    from monai_tumor.pipeline.batch import BatchOptions, SeriesStatus, run_batch

    pacs: PacsBatchResult | None = None
    dask_options = None
    if scheduler is not None or cluster is not None or worker_resources is not None:
        from monai_tumor.pipeline.cluster import cluster_options

        with handle_errors():
            dask_options = cluster_options(
                scheduler=scheduler,
                cluster=cluster,
                worker_resources=worker_resources,
                allowed_failures=allowed_failures,
            )
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
        cluster=dask_options,
        **output_fields(viewer=viewer, features=features, classifier=classifier),
    )
    with (
        handle_errors(),
        command_logging(verbose=verbose, log_file=log_file, default_log_file=out / RUN_LOG_NAME),
    ):
        sources = [x for x in (export_dir, dicomweb, dimse) if x is not None]
        if len(sources) != 1:
            raise ConfigError("give exactly one source: EXPORT_DIR, --dicomweb URL or --dimse NODE")
        if export_dir is not None:
            result = run_batch(
                export_dir,
                out,
                bundle=bundle,
                options=options,
                feature_pool=command_resources(ctx).feature_pool,
            )
        else:
            pacs = _run_pacs(
                out,
                bundle=bundle,
                options=options,
                dicomweb=dicomweb,
                dimse=dimse,
                studies=[*(study or []), *(read_study_list(studies_from) if studies_from else [])],
                query=parse_query(query or []),
                send_back=send_back,
                stow_to=stow_to,
                store_to=store_to,
                retry=retry_policy(retries, backoff),
                user=user,
                password_env=password_env,
                token_env=token_env,
                ca_bundle=ca_bundle,
                tls=tls_config(tls_cert, tls_key, ca_bundle if dimse else None),
                aet=aet,
                timeout=timeout,
            )
            result = pacs.batch
            _print_pacs(pacs)
    reused = sum(1 for r in result.records if r.reused)
    stdout_console().print(
        f"{len(result.records)} series: {result.count(SeriesStatus.DONE)} done "
        f"({reused} reused), {result.count(SeriesStatus.SKIPPED)} skipped, "
        f"{result.count(SeriesStatus.FAILED)} failed in {result.seconds:.1f} s",
        highlight=False,
    )
    for record in result.failed:
        stdout_console().print(
            f"[red]failed[/] {record.series_key}: {escape(record.reason)}", highlight=False
        )
    typer.echo(str(result.index_html))
    code = pacs.exit_code if pacs is not None else result.exit_code
    if code:
        raise typer.Exit(code=code)


def _run_pacs(
    out: Path,
    *,
    bundle: Path,
    options: BatchOptions,
    dicomweb: str | None,
    dimse: str | None,
    studies: list[str],
    query: dict[str, str],
    send_back: bool,
    stow_to: str | None,
    store_to: str | None,
    retry: RetryPolicy,
    user: str | None,
    password_env: str | None,
    token_env: str | None,
    ca_bundle: Path | None,
    tls: TlsConfig | None,
    aet: str,
    timeout: float,
) -> PacsBatchResult:
    from monai_tumor.pacs.batch import run_dicomweb_batch, run_dimse_batch

    if dicomweb is not None:

        def config(url: str) -> DicomwebConfig:
            return dicomweb_config(
                url,
                user=user,
                password_env=password_env,
                token_env=token_env,
                ca_bundle=ca_bundle,
                timeout=timeout,
                retry=retry,
            )

        return run_dicomweb_batch(
            config(dicomweb),
            out,
            bundle=bundle,
            studies=studies,
            query=query,
            stow=send_back,
            stow_to=config(stow_to) if stow_to else None,
            options=options,
        )
    assert dimse is not None
    if query:
        raise ConfigError("--query is a DICOMweb (QIDO-RS) filter; with --dimse give --study")
    return run_dimse_batch(
        parse_node(dimse),
        out,
        bundle=bundle,
        studies=studies,
        store=send_back,
        store_to=parse_node(store_to) if store_to else None,
        dimse=dimse_options(aet, tls=tls, timeout=timeout, retry=retry),
        options=options,
    )


def _print_pacs(result: PacsBatchResult) -> None:
    console = stdout_console()
    console.print(
        f"{len(result.studies)} study(ies) from the PACS: {result.pull.fetched} instances "
        f"fetched, {result.pull.cached} already cached",
        highlight=False,
    )
    if result.delivery is not None:
        console.print(
            f"{len(result.delivery.sent)} SEG(s) sent to {result.delivery.destination}, "
            f"{len(result.delivery.failed)} kept in the outbox for the next run",
            highlight=False,
            markup=False,
        )
        for sop, error in result.delivery.failed:
            console.print(f"[red]not sent[/] SEG {sop}: {escape(str(error))}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command to the app."""
    app.command("batch")(batch)
