"""Batch-process a DICOM export: scan, plan, run, report.

:func:`run_batch` is the library behind ``monai-tumor batch``. It is the client
of four parts, each in its own module:

1. **scan** the export (:func:`monai_tumor.ingest.scan.scan_export`), reusing
   its SQLite index so a rerun reads only new or changed headers;
2. **plan** (:func:`monai_tumor.pipeline.plan.plan_batch`): per study, choose
   the series for each bundle input with the bundle's selection rules
   (``configs/series_selection.json``, or ``rules``). Every image series of the
   export gets a record: the chosen reference series is a *work item*, the
   others are ``skipped`` with the selection's reason. For a VOI bundle a series
   without seed points is ``skipped`` too. The plan holds no index: it is
   picklable, and a work item carries everything needed to run it;
3. **resume** (:meth:`~monai_tumor.pipeline.plan.BatchPlan.resume`): an item
   whose output folder is complete for its cache key (SeriesInstanceUIDs +
   bundle version + weights hash + seed source, see
   :func:`monai_tumor.pipeline.outputs.completed_manifest`) is not redone;
4. **run** (:mod:`monai_tumor.pipeline.runner`): items are read in a background
   thread one ahead of the model (reading the next series overlaps inference
   on the current one), segmented on the calling thread, and written by a pool
   of writer threads; each gives back a small record;
5. **report** (:class:`monai_tumor.pipeline.report.BatchReport`):
   ``summary.csv``, ``summary.json`` and ``index.html`` are rewritten
   (atomically) after every series, so a killed run leaves a valid report of
   what is finished.

One failing series never stops the run: its record says ``failed`` with the
error text (export paths shown relative to the export; no patient names or
IDs). :attr:`BatchResult.exit_code` is non-zero when any series failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from monai_tumor.errors import ConfigError
from monai_tumor.inference.bundle import BundleInfo, read_bundle_info
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.scan import INDEX_DIRNAME, ScanResult, scan_export
from monai_tumor.ingest.selection import load_rules
from monai_tumor.pipeline.analysis import analysis_spec_for, write_features_table
from monai_tumor.pipeline.infer import Segmenter, load_segmenter
from monai_tumor.pipeline.outputs import OverlayStyle
from monai_tumor.pipeline.plan import RunContext, plan_batch
from monai_tumor.pipeline.records import SeriesRecord, SeriesStatus
from monai_tumor.pipeline.report import BatchReport
from monai_tumor.pipeline.runner import run_items_locally
from monai_tumor.radiomics.pool import FeaturePool
from monai_tumor.report.viewer import ViewerOptions

if TYPE_CHECKING:
    from monai_tumor.pipeline.cluster import DaskOptions

__all__ = [
    "BatchOptions",
    "BatchResult",
    "SeriesRecord",
    "SeriesStatus",
    "run_batch",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    """Options of :func:`run_batch`.

    Attributes
    ----------
    rules
        Series selection rule file overriding the bundle's.
    workers
        Worker processes for the header scan and threads writing outputs.
        Series are read in one prefetch thread, overlapping inference (one
        thread per read is the fastest on local disks, see
        :class:`~monai_tumor.ingest.reader.ReadOptions`).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seeds_csv
        CSV of LPS seed points; each series gets the points inside its volume.
    seeds_from_export
        Take seeds from RTSTRUCT/SEG objects of the export that refer to the
        series (by SeriesInstanceUID, else by FrameOfReferenceUID).
    seed_roi
        Regular expression choosing the RTSTRUCT ROIs that give seeds (default:
        names containing "GTV"); ``None`` takes every ROI with contours.
    index_path
        SQLite index; default ``OUT/.monai-tumor/index.sqlite`` (never inside
        the export, which is only read).
    force
        Redo series even when complete outputs exist.
    progress
        Progress bar (with ETA) on stderr.
    overlay
        Quick-look options.
    viewer
        Options of the 3D viewer page of each series; ``None`` writes none
        (``--no-viewer``).
    features
        Radiomics features per lesion when the bundle has ``configs/radiomics.json``
        (``lesions.json`` and the run's ``features.csv``; ``--no-features``).
    classifier
        Classification bundle run on every lesion; default: the one the bundle's metadata
        names (``monai_tumor.classifier``), if any.
    cluster
        Run the series as tasks on a Dask cluster (a scheduler address or a
        local cluster, :class:`~monai_tumor.pipeline.cluster.DaskOptions`)
        instead of in this process; scanning, planning and the report stay here.
    """

    rules: Path | None = None
    workers: int = 2
    device: str = "auto"
    seeds_csv: Path | None = None
    seeds_from_export: bool = False
    seed_roi: str | None = "(?i)gtv"
    index_path: Path | None = None
    force: bool = False
    progress: bool = True
    overlay: OverlayStyle = field(default_factory=OverlayStyle)
    viewer: ViewerOptions | None = field(default_factory=ViewerOptions)
    features: bool = True
    classifier: Path | None = None
    cluster: DaskOptions | None = None


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did.

    Attributes
    ----------
    out_dir
        The run's output folder.
    records
        One per image series of the export, in export order.
    report_paths
        ``summary.csv``, ``summary.json``, ``index.html``.
    seconds
        Wall time of the run.
    scan_seconds
        Of which scanning.
    """

    out_dir: Path
    records: tuple[SeriesRecord, ...]
    report_paths: tuple[Path, ...]
    seconds: float
    scan_seconds: float

    def count(self, status: SeriesStatus) -> int:
        """Return the number of series with this status."""
        return sum(1 for r in self.records if r.status is status)

    @property
    def failed(self) -> tuple[SeriesRecord, ...]:
        """Records of failed series."""
        return tuple(r for r in self.records if r.status is SeriesStatus.FAILED)

    @property
    def exit_code(self) -> int:
        """0 if no series failed, else the exit code of the first failure's error class."""
        for record in self.failed:
            return record.exit_code or 1
        return 0

    @property
    def index_html(self) -> Path:
        """The browsable report."""
        return self.out_dir / "index.html"


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    if not enabled or total == 0:
        yield lambda _text: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]batch[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        task = progress.add_task("", total=total)

        def advance(text: str) -> None:
            progress.update(task, advance=1, description=text)

        yield advance


def _resolve_index(out_dir: Path, given: Path | None) -> Path:
    return given if given is not None else out_dir / INDEX_DIRNAME / "index.sqlite"


def run_batch(
    export_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    bundle: str | os.PathLike[str] | BundleInfo,
    options: BatchOptions | None = None,
    segmenter: Segmenter | None = None,
    feature_pool: FeaturePool | None = None,
) -> BatchResult:
    """Segment every selected series of a DICOM export and write a browsable report.

    Parameters
    ----------
    export_dir
        The export folder (only read; the index goes to ``options.index_path``,
        by default ``OUT/.monai-tumor/index.sqlite``).
    out_dir
        Output folder: ``<study-key>/<series-key>/`` per series plus
        ``summary.csv``, ``summary.json``, ``index.html``.
    bundle
        Bundle folder (``inference.bundle.read_bundle_info``) or a description.
    options
        Rules, workers, device, seeds, index, resume behaviour.
    segmenter
        A loaded model; default: the bundle loaded on ``options.device``
        (only if some series needs segmenting). With ``options.cluster`` it
        must be picklable: it is shipped to every worker instead of the bundle
        being loaded there.
    feature_pool
        Worker processes for the radiomics features of a local run
        (:class:`~monai_tumor.radiomics.pool.FeaturePool`, owned by the caller); default:
        features are computed by the writer threads. Dask workers compute their own.

    Returns
    -------
    BatchResult
        Per-series records; ``exit_code`` is non-zero if any series failed.

    Raises
    ------
    ConfigError
        Bad rules, options or index; the Dask scheduler cannot be reached.
    IngestError
        The export folder does not exist.
    BundleError
        The bundle cannot be read or loaded.

    Examples
    --------
    Segment the nodule of a chest CT, seeded from the RTSTRUCT stored beside it:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from monai_tumor.config import data_root
    >>> from monai_tumor.pipeline import BatchOptions, SeriesStatus, run_batch
    >>> out = Path(tempfile.mkdtemp())
    >>> options = BatchOptions(
    ...     seeds_from_export=True, index_path=out / "index.sqlite", device="cpu", progress=False
    ... )
    >>> result = run_batch(
    ...     data_root() / "lung1", out, bundle="bundles/lung_nodule_ct", options=options
    ... )
    >>> result.count(SeriesStatus.DONE), result.count(SeriesStatus.FAILED)
    (1, 0)
    >>> (out / "index.html").is_file()
    True
    """
    opts = options or BatchOptions()
    start = time.perf_counter()
    export = Path(export_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    if out == export or export in out.parents:
        raise ConfigError(
            f"the output folder {out} is inside the export {export}; the scan would index the "
            "outputs (SEG objects) as part of the export. Choose an output folder outside it"
        )
    out.mkdir(parents=True, exist_ok=True)
    info = _bundle_info(bundle)
    rules = load_rules(opts.rules if opts.rules is not None else info.selection_rules)
    csv_digest = _seeds_csv_digest(opts.seeds_csv)

    index_path = _resolve_index(out, opts.index_path)
    scan = scan_export(export, index_path=index_path, workers=opts.workers, progress=opts.progress)
    scan_seconds = time.perf_counter() - start
    context = RunContext(
        export_dir=export,
        out_dir=out,
        bundle=info,
        seeds_csv=opts.seeds_csv,
        seed_roi=opts.seed_roi,
        overlay=opts.overlay,
        viewer=opts.viewer,
        analysis=analysis_spec_for(info.root, features=opts.features, classifier=opts.classifier),
    )
    with SeriesIndex(index_path) as index:
        plan = plan_batch(
            scan,
            index,
            rules=rules,
            context=context,
            seeds_from_export=opts.seeds_from_export,
            seeds_csv_digest=csv_digest,
        )
    report = BatchReport(
        out,
        plan.records,
        run_info={
            "export_dir": str(export),
            "bundle": info.provenance(),
            "rules": str(opts.rules) if opts.rules is not None else str(info.selection_rules),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "skipped_files": len(scan.skipped),
            "skipped_file_reasons": _reason_counts(scan),
        },
    )
    # Resume: finished series are kept as they are.
    todo, reused = plan.resume(force=opts.force)
    report.set(reused)
    report.write()
    _log.info(
        "%d series: %d to segment, %d already done, %d skipped",
        len(plan.records),
        len(todo),
        len(reused),
        len(plan.records) - len(plan.items),
    )
    if todo:
        model = segmenter
        if model is None and opts.cluster is None:
            model = load_segmenter(info, device=opts.device)
        with _progress_bar(opts.progress, len(todo)) as advance:

            def on_result(record: SeriesRecord) -> None:
                report.update(record)
                advance(f"{record.series_key} {record.status.value}")

            if opts.cluster is not None:
                # Imported here: Dask is only needed for cluster runs.
                from monai_tumor.pipeline.cluster import run_items_on_dask

                run_items_on_dask(
                    todo,
                    context,
                    options=opts.cluster,
                    device=opts.device,
                    segmenter=segmenter,
                    on_result=on_result,
                )
            else:
                assert model is not None
                run_items_locally(
                    todo,
                    context,
                    model,
                    writers=opts.workers,
                    on_result=on_result,
                    feature_pool=feature_pool,
                )
    if not context.analysis.empty:
        write_features_table(
            out, [r.folder for r in report.records if r.status is SeriesStatus.DONE and r.folder]
        )
    paths = report.finish()
    return BatchResult(
        out_dir=out,
        records=report.records,
        report_paths=tuple(paths),
        seconds=time.perf_counter() - start,
        scan_seconds=scan_seconds,
    )


def _seeds_csv_digest(seeds_csv: Path | None) -> str:
    """Hash of the seed CSV (part of the cache key); ``""`` without one."""
    if seeds_csv is None:
        return ""
    try:
        return hashlib.sha256(Path(seeds_csv).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise ConfigError(f"cannot read the seed CSV ({exc.strerror})", path=seeds_csv) from exc


def _reason_counts(scan: ScanResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in scan.skipped:
        counts[record.reason.value] = counts.get(record.reason.value, 0) + 1
    return counts


def _bundle_info(bundle: str | os.PathLike[str] | BundleInfo) -> BundleInfo:
    if isinstance(bundle, BundleInfo):
        return bundle
    return read_bundle_info(Path(bundle))
