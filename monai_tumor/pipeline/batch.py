"""Batch-process a DICOM export: scan, select, read, segment, write, report.

:func:`run_batch` is the library behind ``monai-tumor batch``:

1. **scan** the export (:func:`monai_tumor.ingest.scan.scan_export`), reusing
   its SQLite index so a rerun reads only new or changed headers;
2. **plan**: per study, choose the series for each bundle input with the
   bundle's selection rules (``configs/series_selection.json``, or ``rules``)
   through :func:`monai_tumor.ingest.selection.select_series`. Every image
   series of the export gets a record: the chosen reference series is *to do*,
   the others are ``skipped`` with the selection's reason. For a VOI bundle a
   series without seed points is ``skipped`` too;
3. **resume**: a series whose output folder is complete for its cache key
   (SeriesInstanceUIDs + bundle version + weights hash + seed source, see
   :func:`monai_tumor.pipeline.outputs.completed_manifest`) is not redone;
4. **run**: series are read in a background thread one ahead of the model
   (reading the next series overlaps inference on the current one), segmented
   on the main thread, and written by a pool of writer threads;
5. **report**: ``summary.csv``, ``summary.json`` and ``index.html`` are
   rewritten (atomically) after every series, so a killed run leaves a valid
   report of what is finished.

One failing series never stops the run: its record says ``failed`` with the
error text (export paths shown relative to the export; no patient names or
IDs). :attr:`BatchResult.exit_code` is non-zero when any series failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from monai.data import MetaTensor
from pydicom.errors import InvalidDicomError

from monai_tumor.errors import EXIT_CODES, ConfigError, MonaiTumorError
from monai_tumor.inference.bundle import BundleInfo, read_bundle_info
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.reader import ReadOptions, read_series
from monai_tumor.ingest.records import NonImageObject
from monai_tumor.ingest.scan import ScanResult, default_index_path, scan_export
from monai_tumor.ingest.selection import (
    SelectionResult,
    SelectionRules,
    load_inputs,
    load_rules,
    select_series,
)
from monai_tumor.ingest.series import SeriesInfo, StudyInfo
from monai_tumor.ingest.sidecar import (
    acquisition_fields,
    identifier_strings,
    redact_identifiers,
)
from monai_tumor.pipeline.infer import (
    Segmenter,
    filter_seeds,
    load_segmenter,
    read_source_headers,
    reference_input,
    source_provenance,
)
from monai_tumor.pipeline.outputs import (
    OverlayStyle,
    cache_key_for,
    completed_manifest,
    series_key,
    study_key,
    write_series_outputs,
)
from monai_tumor.pipeline.report import write_report

if TYPE_CHECKING:
    from monai_tumor.inference.seeds import Seed

__all__ = [
    "BatchOptions",
    "BatchResult",
    "SeriesRecord",
    "SeriesStatus",
    "run_batch",
]

_log = logging.getLogger(__name__)


class SeriesStatus(str, Enum):
    """Outcome of one series in a batch run."""

    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    #: Planned but not finished (only seen in a report of an interrupted run).
    PENDING = "pending"


@dataclass(frozen=True)
class SeriesRecord:
    """One image series of the export and what the run did with it.

    Attributes
    ----------
    study_key, series_key
        Hashed folder names (:func:`~monai_tumor.pipeline.outputs.study_key`).
    study_instance_uid, series_instance_uid
        The UIDs.
    modality, series_number, series_description
        As stored; the description is scrubbed of the patient's name and ID.
    number_of_slices
        Frames over all stacks.
    status
        done / skipped / failed / pending.
    reason
        Selection reason (skipped), error text (failed), SEG status (done).
    folder
        Output folder relative to the run's output folder (done series).
    reused
        The outputs were complete from an earlier run.
    inputs
        Model input name -> SeriesInstanceUID (done/failed series).
    lesion_count, total_volume_ml, largest_diameter_mm
        From ``lesions.json`` (done series).
    seconds
        Time spent on the series (read + inference + writing).
    error_type
        Exception class of a failure.
    exit_code
        CLI exit code of that exception class (:data:`monai_tumor.errors.EXIT_CODES`;
        1 for errors outside the package's hierarchy).
    """

    study_key: str
    series_key: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    number_of_slices: int
    status: SeriesStatus
    reason: str
    folder: str | None = None
    reused: bool = False
    inputs: Mapping[str, str] = field(default_factory=dict)
    lesion_count: int | None = None
    total_volume_ml: float | None = None
    largest_diameter_mm: float | None = None
    seconds: float | None = None
    error_type: str | None = None
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the rows of ``summary.json``)."""
        return {
            "study_key": self.study_key,
            "series_key": self.series_key,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "modality": self.modality,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "number_of_slices": self.number_of_slices,
            "status": self.status.value,
            "reason": self.reason,
            "folder": self.folder,
            "reused": self.reused,
            "inputs": dict(self.inputs),
            "lesion_count": self.lesion_count,
            "total_volume_ml": self.total_volume_ml,
            "largest_diameter_mm": self.largest_diameter_mm,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "error_type": self.error_type,
        }


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
        SQLite index; default: the export's own index if writable, else
        ``OUT/.monai-tumor/index.sqlite``.
    force
        Redo series even when complete outputs exist.
    progress
        Progress bar (with ETA) on stderr.
    overlay
        Quick-look options.
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


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Job:
    """A series to segment: its inputs, files, seeds source and cache key."""

    record: SeriesRecord
    inputs: Mapping[str, str]  # input name -> series UID, in channel order
    reference: str
    files: Mapping[str, tuple[Path, ...]]
    seed_objects: tuple[NonImageObject, ...]
    cache_key: str
    redact: _Redactor


def _exit_code(exc: BaseException) -> int:
    """Exit code of the most specific known error class (1 for anything else)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def _short_error(exc: BaseException, export_dir: Path) -> str:
    text = f"{exc}" or type(exc).__name__
    return text.replace(str(export_dir) + os.sep, "EXPORT/").replace(str(export_dir), "EXPORT")


class _Redactor:
    """Replace the patient's name and ID inside free text (reasons, error messages).

    Selection reasons quote attribute values (SeriesDescription, ProtocolName)
    and errors quote paths, which exports sometimes fill with the patient's
    name or ID. The rule is :mod:`monai_tumor.ingest.sidecar`'s.
    """

    def __init__(self, ds: pydicom.Dataset | None) -> None:
        self._identifiers = identifier_strings(ds)

    def __call__(self, text: str) -> str:
        return redact_identifiers(text, self._identifiers)


def _first_header(files: Sequence[Path]) -> pydicom.Dataset | None:
    for path in files[:3]:
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
    return None


def _base_record(info: SeriesInfo, header: pydicom.Dataset | None) -> SeriesRecord:
    description = str(acquisition_fields(header).get("SeriesDescription", "")) if header else ""
    return SeriesRecord(
        study_key=study_key(info.study_instance_uid),
        series_key=series_key(info.series_instance_uid),
        study_instance_uid=info.study_instance_uid,
        series_instance_uid=info.series_instance_uid,
        modality=info.modality,
        series_number=info.series_number,
        series_description=description,
        number_of_slices=info.number_of_slices,
        status=SeriesStatus.PENDING,
        reason="",
    )


def _skip_reason(uid: str, selection: SelectionResult) -> str:
    """Why a series of a study was not chosen (every input's rejection)."""
    if not selection.ok:
        missing = ", ".join(repr(n) for n in selection.missing)
        head = f"the study lacks required input {missing}"
    else:
        head = "not selected"
    parts = []
    for sel in selection.inputs.values():
        for rejection in sel.rejected:
            if rejection.series_uid == uid:
                parts.append(f"{sel.name}: {rejection.reason}")
    return head + (" (" + "; ".join(parts) + ")" if parts else "")


def _frame_of_reference_of(obj: NonImageObject) -> str:
    """FrameOfReferenceUID an RTSTRUCT or SEG refers to (header read)."""
    try:
        ds = pydicom.dcmread(obj.path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return ""
    if "FrameOfReferenceUID" in ds:
        return str(ds.FrameOfReferenceUID)
    refs = ds.get("ReferencedFrameOfReferenceSequence")
    if refs:
        return str(refs[0].get("FrameOfReferenceUID", ""))
    return ""


def _seed_objects(info: SeriesInfo, study: StudyInfo) -> tuple[NonImageObject, ...]:
    """RTSTRUCT/SEG objects of the study that refer to this series (UID, else frame)."""
    direct = tuple(
        o for o in study.non_image_objects if info.series_instance_uid in o.referenced_series_uids
    )
    if direct:
        return direct
    frame = str(info.attributes.get("FrameOfReferenceUID") or "")
    if not frame:
        return ()
    return tuple(o for o in study.non_image_objects if _frame_of_reference_of(o) == frame)


def _plan(
    scan: ScanResult,
    index: SeriesIndex,
    rules: SelectionRules,
    bundle: BundleInfo,
    options: BatchOptions,
    csv_digest: str,
) -> tuple[list[SeriesRecord], list[_Job]]:
    records: list[SeriesRecord] = []
    jobs: list[_Job] = []
    names = tuple(bundle.input_names)
    ref_name = reference_input(bundle)
    if set(names) - set(rules.names):
        raise ConfigError(
            f"the selection rules name inputs {list(rules.names)} but the bundle "
            f"{bundle.name!r} needs {list(names)}; use rules written for this bundle"
        )
    for patient in scan.patients:
        for study in patient.studies:
            files = {
                s.series_instance_uid: tuple(index.files_for_series(s.series_instance_uid))
                for s in study.series
            }
            headers = {uid: _first_header(f) for uid, f in files.items()}
            redact = {uid: _Redactor(h) for uid, h in headers.items()}
            base = {
                s.series_instance_uid: _base_record(s, headers[s.series_instance_uid])
                for s in study.series
            }
            if not study.series:
                continue
            selection = select_series(study.series, rules)
            chosen = selection.selected
            ref_uid = chosen.get(ref_name) if selection.ok else None
            for info in study.series:
                uid = info.series_instance_uid
                record = base[uid]
                if uid != ref_uid:
                    if uid in chosen.values() and selection.ok:
                        which = [n for n, u in chosen.items() if u == uid]
                        record = replace(
                            record,
                            status=SeriesStatus.SKIPPED,
                            reason=f"input {', '.join(which)} of the series "
                            f"{series_key(ref_uid or '')} (outputs are written there)",
                        )
                    else:
                        record = replace(
                            record,
                            status=SeriesStatus.SKIPPED,
                            reason=redact[uid](_skip_reason(uid, selection)),
                        )
                    records.append(record)
                    continue
                inputs = {n: chosen[n] for n in names}
                seed_objects: tuple[NonImageObject, ...] = ()
                seed_source = ""
                if bundle.kind == "voi":
                    if options.seeds_from_export:
                        seed_objects = _seed_objects(info, study)
                        seed_source += "objects:" + ",".join(
                            o.sop_instance_uid for o in seed_objects
                        )
                    if options.seeds_csv is not None:
                        seed_source += f"|csv:{csv_digest}"
                    if not seed_objects and options.seeds_csv is None:
                        why = (
                            "no RTSTRUCT or SEG in the export refers to this series"
                            if options.seeds_from_export
                            else "no seeds given (--seeds CSV or --seeds-from-rtstruct)"
                        )
                        records.append(
                            replace(
                                record,
                                status=SeriesStatus.SKIPPED,
                                reason=f"the {bundle.name!r} bundle segments around seed "
                                f"points: {why}",
                            )
                        )
                        continue
                key = cache_key_for(list(inputs.values()), bundle, seeds=[seed_source])
                record = replace(
                    record,
                    inputs=inputs,
                    folder=f"{record.study_key}/{record.series_key}",
                )
                records.append(record)
                jobs.append(
                    _Job(
                        record=record,
                        inputs=inputs,
                        reference=ref_name,
                        files={n: files[u] for n, u in inputs.items()},
                        seed_objects=seed_objects,
                        cache_key=key,
                        redact=redact[uid],
                    )
                )
    return records, jobs


# --------------------------------------------------------------------------- running


@dataclass
class _Loaded:
    job: _Job
    image: MetaTensor | None = None
    reference: MetaTensor | None = None
    images: dict[str, MetaTensor] = field(default_factory=dict)
    datasets: list[pydicom.Dataset] = field(default_factory=list)
    seeds: list[Seed] = field(default_factory=list)
    seed_problems: list[str] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0


def _load_seeds(
    job: _Job, reference: MetaTensor, options: BatchOptions
) -> tuple[list[Seed], list[str]]:
    """Seeds inside the reference volume, and why seed sources gave none."""
    from monai_tumor.inference.seeds import seeds_from_csv, seeds_from_rtstruct, seeds_from_seg

    seeds: list[Seed] = []
    problems: list[str] = []
    if options.seeds_csv is not None:
        seeds += list(
            seeds_from_csv(
                options.seeds_csv,
                series_uid=job.record.series_instance_uid,
                study_uid=job.record.study_instance_uid,
            )
        )
    for obj in job.seed_objects:
        try:
            if obj.modality == "SEG":
                seeds += list(seeds_from_seg(obj.path, reference))
            else:
                seeds += list(seeds_from_rtstruct(obj.path, reference, roi=options.seed_roi))
        except MonaiTumorError as exc:
            problems.append(f"{obj.modality} {obj.sop_instance_uid}: {exc.reason}")
    return filter_seeds(seeds, reference), problems


def _load(job: _Job, options: BatchOptions, bundle: BundleInfo) -> _Loaded:
    """Read every input of a job (runs in the prefetch thread)."""
    start = time.perf_counter()
    loaded = _Loaded(job)
    try:
        read_opts = ReadOptions()
        names = tuple(job.inputs)
        for name in names:
            loaded.images[name] = read_series(
                list(job.files[name]), options=read_opts, series_uid=job.inputs[name]
            )
        ref = loaded.images[job.reference]
        loaded.reference = ref
        loaded.image = (
            ref
            if len(names) == 1
            else load_inputs(loaded.images, reference=job.reference, order=names)
        )
        loaded.datasets = read_source_headers(
            list(job.files[job.reference]), job.inputs[job.reference]
        )
        if bundle.kind == "voi":
            loaded.seeds, loaded.seed_problems = _load_seeds(job, ref, options)
    except Exception as exc:  # one bad series never stops the run
        loaded.error = exc
    loaded.seconds = time.perf_counter() - start
    return loaded


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


def _resolve_index(export_dir: Path, out_dir: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    own = default_index_path(export_dir)
    if own.exists() and os.access(own.parent, os.W_OK) and os.access(own, os.W_OK):
        return own
    return out_dir / ".monai-tumor" / "index.sqlite"


def run_batch(
    export_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    bundle: str | os.PathLike[str] | BundleInfo,
    options: BatchOptions | None = None,
    segmenter: Segmenter | None = None,
) -> BatchResult:
    """Segment every selected series of a DICOM export and write a browsable report.

    Parameters
    ----------
    export_dir
        The export folder (only read; the index goes to ``options.index_path``,
        the export's own index if already there and writable, or ``out_dir``).
    out_dir
        Output folder: ``<study-key>/<series-key>/`` per series plus
        ``summary.csv``, ``summary.json``, ``index.html``.
    bundle
        Bundle folder (``inference.bundle.read_bundle_info``) or a description.
    options
        Rules, workers, device, seeds, index, resume behaviour.
    segmenter
        A loaded model; default: the bundle loaded on ``options.device``
        (only if some series needs segmenting).

    Returns
    -------
    BatchResult
        Per-series records; ``exit_code`` is non-zero if any series failed.

    Raises
    ------
    ConfigError
        Bad rules, options or index.
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
    csv_digest = ""
    if opts.seeds_csv is not None:
        try:
            csv_digest = hashlib.sha256(Path(opts.seeds_csv).read_bytes()).hexdigest()[:16]
        except OSError as exc:
            raise ConfigError(
                f"cannot read the seed CSV ({exc.strerror})", path=opts.seeds_csv
            ) from exc

    index_path = _resolve_index(export, out, opts.index_path)
    scan = scan_export(export, index_path=index_path, workers=opts.workers, progress=opts.progress)
    scan_seconds = time.perf_counter() - start
    with SeriesIndex(index_path) as index:
        records, jobs = _plan(scan, index, rules, info, opts, csv_digest)
    position = {r.series_instance_uid: i for i, r in enumerate(records)}
    lock = threading.Lock()
    report_cache: dict[str, Any] = {}
    run_info = {
        "export_dir": str(export),
        "bundle": info.provenance(),
        "rules": str(opts.rules) if opts.rules is not None else str(info.selection_rules),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "skipped_files": len(scan.skipped),
        "skipped_file_reasons": _reason_counts(scan),
    }

    def publish(record: SeriesRecord) -> None:
        with lock:
            records[position[record.series_instance_uid]] = record
            write_report(out, [r.to_dict() for r in records], run_info=run_info, cache=report_cache)

    # Resume: finished series are kept as they are.
    todo: list[_Job] = []
    for job in jobs:
        manifest = (
            None
            if opts.force
            else completed_manifest(out / job.record.folder, job.cache_key)
            if job.record.folder
            else None
        )
        if manifest is None:
            todo.append(job)
            continue
        records[position[job.record.series_instance_uid]] = replace(
            job.record,
            status=SeriesStatus.DONE,
            reason=f"reused: complete outputs with the same cache key (SEG {manifest.get('seg')})",
            reused=True,
            lesion_count=manifest.get("lesion_count"),
            total_volume_ml=manifest.get("total_volume_ml"),
            largest_diameter_mm=manifest.get("largest_diameter_3d_mm"),
            seconds=0.0,
        )
    with lock:
        write_report(out, [r.to_dict() for r in records], run_info=run_info, cache=report_cache)
    _log.info(
        "%d series: %d to segment, %d already done, %d skipped",
        len(records),
        len(todo),
        len(jobs) - len(todo),
        len(records) - len(jobs),
    )
    if todo:
        model = segmenter or load_segmenter(info, device=opts.device)
        _run_jobs(todo, model, info, opts, out, export, publish)
    with lock:
        paths = write_report(
            out,
            [r.to_dict() for r in records],
            cache=report_cache,
            run_info={
                **run_info,
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    return BatchResult(
        out_dir=out,
        records=tuple(records),
        report_paths=tuple(paths),
        seconds=time.perf_counter() - start,
        scan_seconds=scan_seconds,
    )


def _reason_counts(scan: ScanResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in scan.skipped:
        counts[record.reason.value] = counts.get(record.reason.value, 0) + 1
    return counts


def _run_jobs(
    todo: Sequence[_Job],
    model: Segmenter,
    info: BundleInfo,
    opts: BatchOptions,
    out: Path,
    export: Path,
    publish: Callable[[SeriesRecord], None],
) -> None:
    workers = max(1, opts.workers)
    pending_writes: list[Future[None]] = []
    slots = threading.BoundedSemaphore(workers)

    def failed(job: _Job, exc: BaseException, seconds: float) -> SeriesRecord:
        _log.warning("series %s failed: %s", job.record.series_key, type(exc).__name__)
        return replace(
            job.record,
            status=SeriesStatus.FAILED,
            reason=job.redact(_short_error(exc, export)),
            error_type=type(exc).__name__,
            exit_code=_exit_code(exc),
            seconds=seconds,
        )

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-read") as reader,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-write") as writer,
        _progress_bar(opts.progress, len(todo)) as advance,
    ):

        def finish(record: SeriesRecord) -> None:
            publish(record)
            advance(f"{record.series_key} {record.status.value}")

        next_read: Future[_Loaded] | None = reader.submit(_load, todo[0], opts, info)
        for i in range(len(todo)):
            assert next_read is not None
            loaded = next_read.result()
            # Prefetch: the next series is read while this one is segmented.
            next_read = reader.submit(_load, todo[i + 1], opts, info) if i + 1 < len(todo) else None
            job = loaded.job
            if loaded.error is not None:
                finish(failed(job, loaded.error, loaded.seconds))
                continue
            assert loaded.image is not None and loaded.reference is not None
            if info.kind == "voi" and not loaded.seeds:
                finish(
                    replace(
                        job.record,
                        status=SeriesStatus.SKIPPED,
                        reason=f"the {info.name!r} bundle segments around seed points and none "
                        "of the given seeds lies inside this series"
                        + (
                            " (" + "; ".join(loaded.seed_problems) + ")"
                            if loaded.seed_problems
                            else ""
                        ),
                    )
                )
                continue
            t0 = time.perf_counter()
            try:
                mask = model.segment(loaded.image, seeds=tuple(loaded.seeds))
            except Exception as exc:  # one bad series never stops the run
                finish(failed(job, exc, loaded.seconds + time.perf_counter() - t0))
                continue
            infer_seconds = time.perf_counter() - t0
            # Bound memory: at most `workers` series held for writing at once.
            slots.acquire()
            future = writer.submit(
                _write, loaded, mask, infer_seconds, info, opts, out, finish, failed
            )
            future.add_done_callback(lambda _f: slots.release())
            pending_writes.append(future)
        for future in pending_writes:
            future.result()


def _write(
    loaded: _Loaded,
    mask: MetaTensor,
    infer_seconds: float,
    info: BundleInfo,
    opts: BatchOptions,
    out: Path,
    finish: Callable[[SeriesRecord], None],
    failed: Callable[[_Job, BaseException, float], SeriesRecord],
) -> None:
    job = loaded.job
    t0 = time.perf_counter()
    assert loaded.reference is not None and job.record.folder is not None
    folder = out / job.record.folder
    try:
        outputs = write_series_outputs(
            folder,
            image=loaded.reference,
            mask=mask,
            bundle=info,
            cache_key=job.cache_key,
            provenance=source_provenance(info, loaded.images, loaded.seeds),
            source_datasets=loaded.datasets,
            overlay=opts.overlay,
            extra={
                "series": acquisition_fields(loaded.datasets[0]) if loaded.datasets else {},
                "inputs": dict(job.inputs),
                "seconds_read": round(loaded.seconds, 3),
                "seconds_inference": round(infer_seconds, 3),
            },
        )
    except Exception as exc:  # one bad series never stops the run
        finish(failed(job, exc, loaded.seconds + infer_seconds + time.perf_counter() - t0))
        return
    total = loaded.seconds + infer_seconds + time.perf_counter() - t0
    finish(
        replace(
            job.record,
            status=SeriesStatus.DONE,
            reason=f"SEG {outputs.seg_status}",
            lesion_count=outputs.lesion_count,
            total_volume_ml=outputs.total_volume_ml,
            largest_diameter_mm=outputs.largest_diameter_mm,
            seconds=total,
        )
    )
    _log.info("series %s done in %.1f s", job.record.series_key, total)


def _bundle_info(bundle: str | os.PathLike[str] | BundleInfo) -> BundleInfo:
    if isinstance(bundle, BundleInfo):
        return bundle
    return read_bundle_info(Path(bundle))
