"""Scan a DICOM export: find every series, classify it, and keep an index.

:func:`scan_export` walks a folder recursively (file names and extensions do
not matter), reads only the header of each new or changed file
(:func:`~monai_tumor.ingest.headers.inspect_file`), in parallel, stores what it
found in a :class:`~monai_tumor.ingest.index.SeriesIndex`, and returns a
:class:`ScanResult`: patients (by PatientID hash) -> studies -> series, the
non-image objects (RTSTRUCT, SEG) and every skipped file with its reason.

Each series is summarised by :func:`monai_tumor.ingest.series.summarize_series`
(stacks, slice spacing along the normal, gaps, duplicate positions); geometry is
LPS millimetres throughout.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_tumor import config
from monai_tumor.errors import ConfigError, IngestError
from monai_tumor.ingest.enums import ExecutorKind, SkipReason
from monai_tumor.ingest.headers import inspect_file
from monai_tumor.ingest.index import IndexRow, SeriesIndex, record_to_row
from monai_tumor.ingest.records import FileRecord, NonImageObject, SkippedFile
from monai_tumor.ingest.series import PatientInfo, SeriesInfo, group_by_patient

__all__ = [
    "INDEX_DIRNAME",
    "SCAN_SCHEMA",
    "ScanResult",
    "ScanStats",
    "scan_export",
]

logger = logging.getLogger(__name__)

#: Name of monai-tumor's state folders (a batch's ``OUT/.monai-tumor``, an index an older
#: version kept inside an export); never scanned as part of an export.
INDEX_DIRNAME = ".monai-tumor"
#: Identifier of the JSON layout produced by :meth:`ScanResult.to_dict`.
SCAN_SCHEMA = "monai-tumor/scan/1"
_BATCH = 256
#: Below this many files to parse, starting worker processes costs more than it saves.
_PARALLEL_MIN_FILES = 1000
#: Fewer uncached series than this are summarised in the main process.
_PARALLEL_MIN_SERIES = 16


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ScanStats:
    """What a scan did.

    Attributes
    ----------
    files_found
        Files under the export (the index files excluded).
    files_parsed
        Files whose header was read in this scan (new or changed).
    files_unchanged
        Files whose index row was reused (same size and mtime).
    files_removed
        Index rows dropped because their file is gone.
    seconds
        Wall time of the whole scan.
    parse_seconds
        Wall time spent reading headers.
    workers
        Parallel workers used for parsing (1 when serial).
    executor
        How parsing was spread (see :class:`~monai_tumor.ingest.enums.ExecutorKind`).
    """

    files_found: int
    files_parsed: int
    files_unchanged: int
    files_removed: int
    seconds: float
    parse_seconds: float
    workers: int
    executor: ExecutorKind

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "files_found": self.files_found,
            "files_parsed": self.files_parsed,
            "files_unchanged": self.files_unchanged,
            "files_removed": self.files_removed,
            "seconds": round(self.seconds, 4),
            "parse_seconds": round(self.parse_seconds, 4),
            "workers": self.workers,
            "executor": self.executor.value,
        }


@dataclass(frozen=True)
class ScanResult:
    """Everything found in one export.

    Attributes
    ----------
    export_dir
        The scanned folder (absolute).
    index_path
        The SQLite index written.
    patients
        Patients -> studies -> series, sorted by hash, study UID, series number.
    series
        All image series, flat, in the same order.
    non_image_objects
        RTSTRUCT and SEG objects, by path.
    skipped
        Every file not in a series, with its reason, by path.
    stats
        Counts and timings.
    """

    export_dir: Path
    index_path: Path
    patients: tuple[PatientInfo, ...]
    series: tuple[SeriesInfo, ...]
    non_image_objects: tuple[NonImageObject, ...]
    skipped: tuple[SkippedFile, ...]
    stats: ScanStats

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.export_dir).as_posix()
        except ValueError:
            return str(path)

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable result; the layout is stable (``"schema"`` names it).

        Returns
        -------
        dict
            ``{"schema": "monai-tumor/scan/1", "export_dir": str, "index": str,
            "stats": {files_found, files_parsed, files_unchanged, files_removed,
            seconds, parse_seconds, workers, executor},
            "patients": [{"patient_hash": str, "studies": [{"study_instance_uid",
            "study_date", "study_description", "series": [series...],
            "non_image_objects": [{"path", "modality", "sop_class_uid",
            "sop_class_name", "sop_instance_uid", "series_instance_uid",
            "referenced_series_uids", "series_description"}]}]}],
            "skipped": [{"path", "reason", "detail", "sop_class_uid"}]}``.
            Each series is :meth:`SeriesInfo.to_dict`. Paths are relative to
            ``export_dir`` (POSIX). No patient names, IDs or birth dates.
        """
        return {
            "schema": SCAN_SCHEMA,
            "export_dir": str(self.export_dir),
            "index": str(self.index_path),
            "stats": self.stats.to_dict(),
            "patients": [
                {
                    "patient_hash": patient.patient_hash,
                    "studies": [
                        {
                            "study_instance_uid": study.study_instance_uid,
                            "study_date": study.study_date,
                            "study_description": study.study_description,
                            "series": [s.to_dict() for s in study.series],
                            "non_image_objects": [
                                {
                                    "path": self._rel(obj.path),
                                    "modality": obj.modality,
                                    "sop_class_uid": obj.sop_class_uid,
                                    "sop_class_name": obj.sop_class_name,
                                    "sop_instance_uid": obj.sop_instance_uid,
                                    "series_instance_uid": obj.series_instance_uid,
                                    "referenced_series_uids": list(obj.referenced_series_uids),
                                    "series_description": obj.series_description,
                                }
                                for obj in study.non_image_objects
                            ],
                        }
                        for study in patient.studies
                    ],
                }
                for patient in self.patients
            ],
            "skipped": [
                {**record.to_dict(), "path": self._rel(record.path)} for record in self.skipped
            ],
        }


# ----------------------------------------------------------------------------- walking


def _walk(root: Path, exclude: set[str]) -> Iterator[tuple[str, int, int]]:
    """Yield ``(path, size, mtime_ns)`` of every regular file under ``root``.

    Symlinks to files are followed; symlinks to folders are not (no loops).
    Index folders (:data:`INDEX_DIRNAME`) and the paths in ``exclude`` are skipped.
    """
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            logger.warning("cannot list %s (%s); its files are not scanned", folder, exc.strerror)
            continue
        for entry in entries:
            if entry.path in exclude:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != INDEX_DIRNAME:  # ours, or of a scanned sub-folder
                        stack.append(entry.path)
                elif entry.is_file():
                    st = entry.stat()
                    yield entry.path, st.st_size, st.st_mtime_ns
            except OSError:
                yield entry.path, -1, -1  # dangling symlink etc.: recorded as unreadable


def _inspect(path: str, key: bytes) -> FileRecord:
    try:
        return inspect_file(path, patient_key=key)
    except Exception as exc:  # a bug must not stop a scan of thousands of files
        logger.exception("unexpected error reading %s", path)
        return SkippedFile(Path(path), SkipReason.CORRUPT, f"{type(exc).__name__}: {exc}")


def _parse_batch(batch: Sequence[tuple[str, int, int]], key: bytes) -> list[IndexRow]:
    """Worker: read the headers of a batch of files (runs in a pool)."""
    return [record_to_row(_inspect(path, key), size, mtime) for path, size, mtime in batch]


def _resolve_index(root: Path, index_path: str | os.PathLike[str] | None) -> Path:
    """Return the index file to use: the one given, else the export's in the user's cache.

    The cache folders are made readable by their owner only: an index holds the
    export's file paths and series descriptions, which often contain names.
    """
    if index_path is not None:
        return Path(index_path).expanduser().resolve()
    target = config.default_index_path(root)
    try:
        target.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.parent.mkdir(exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the index cache folder ({exc.strerror}); set "
            f"${config.CACHE_ENV_VAR} to a writable folder or pass --index FILE "
            "(index_path=...) - nothing is ever written into the export",
            path=target.parent,
        ) from exc
    return target


def _make_executor(kind: ExecutorKind, workers: int) -> Executor:
    if kind is ExecutorKind.THREAD:
        return ThreadPoolExecutor(max_workers=workers)
    # fork: workers start in milliseconds and inherit the imported modules; the
    # pool is started before any progress thread exists (see scan_export).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def _progress(enabled: bool, total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Start a rich progress bar on stderr; return its (advance, stop) callables."""
    if not enabled or total == 0:
        return (lambda n: None), (lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = bar.add_task("reading headers", total=total)
    bar.start()
    return (lambda n: bar.advance(task, n)), bar.stop


def scan_export(
    export_dir: str | os.PathLike[str],
    *,
    index_path: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    executor: ExecutorKind | str | None = None,
) -> ScanResult:
    """Scan a DICOM export folder and update its index.

    Parameters
    ----------
    export_dir
        Folder to walk recursively. Files may have any name or no extension.
        It is only read: nothing is ever written into it.
    index_path
        SQLite index to create or update. Default: the export's index in the
        user's cache, :func:`monai_tumor.config.default_index_path`
        (``$MONAI_TUMOR_CACHE/index/``, else
        ``$XDG_CACHE_HOME/monai-tumor/index/``, else
        ``~/.cache/monai-tumor/index/``), named after the export's resolved
        path, so a rescan reuses it and two exports never share one.
    workers
        Parallel workers for header parsing (default: CPU count).
    progress
        Show a progress bar on stderr.
    executor
        ``"process"``, ``"thread"`` or ``"serial"``. Default: processes when
        more than 1,000 files need parsing and more than one worker is
        allowed, else serial. Processes are the fastest (parsing holds the GIL;
        measured in ``benchmarks/bench_scan.py``).

    Returns
    -------
    ScanResult
        Patients -> studies -> series, non-image objects, skipped files, stats.

    Raises
    ------
    IngestError
        ``export_dir`` does not exist or is not a folder.
    ConfigError
        The index (or, by default, the cache folder holding it) cannot be
        created or opened, or the patient key
        (:func:`monai_tumor.config.patient_key`) is unusable.

    Notes
    -----
    Patient hashes are keyed (:func:`~monai_tumor.ingest.headers.patient_hash`).
    The index records which key made its hashes; scanning with another key
    rebuilds it, so hashes of two keys are never mixed.

    Examples
    --------
    Scan one patient's export (CT, MR, PET and their RTSTRUCTs); the index goes to
    the user's cache, never into the export:

    >>> from monai_tumor.config import cache_root, data_root
    >>> from monai_tumor.ingest import scan_export
    >>> result = scan_export(data_root() / "sts" / "STS_001", progress=False)
    >>> result.index_path.parent == cache_root() / "index"
    True
    >>> sorted(s.modality for s in result.series)
    ['CT', 'MR', 'PT']
    >>> sorted(o.modality for o in result.non_image_objects)
    ['RTSTRUCT', 'RTSTRUCT', 'RTSTRUCT']
    """
    start = time.perf_counter()
    root = Path(export_dir).expanduser().resolve()
    if not root.is_dir():
        raise IngestError("not a folder; expected the folder of a DICOM export to scan", path=root)
    target = _resolve_index(root, index_path)
    exclude = {str(root / INDEX_DIRNAME)} | {
        str(target) + suffix for suffix in ("", "-wal", "-shm", "-journal")
    }
    key = config.patient_key()
    with SeriesIndex(target, patient_key_id=config.patient_key_id(key)) as index:
        known = index.file_states(root=root)
        found = list(_walk(root, exclude))
        seen = {path for path, _, _ in found}
        removed = index.remove(p for p in known if p not in seen)
        todo = [f for f in found if known.get(f[0]) != (f[1], f[2])]
        n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        kind = (
            ExecutorKind(executor)
            if executor is not None
            else (
                ExecutorKind.PROCESS
                if n_workers > 1 and len(todo) >= _PARALLEL_MIN_FILES
                else ExecutorKind.SERIAL
            )
        )
        if n_workers == 1:
            kind = ExecutorKind.SERIAL
        parse_start = time.perf_counter()
        pool = None if kind is ExecutorKind.SERIAL else _make_executor(kind, n_workers)
        try:
            _parse_all(index, todo, pool, n_workers, progress, known=known, key=key)
            parse_seconds = time.perf_counter() - parse_start
            if kind is ExecutorKind.PROCESS and pool is not None:
                _summarize_in_pool(index, root, pool, n_workers)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        series = index.series(root=root)
        objects = index.non_image_objects(root=root)
        skipped = tuple(index.skipped(root=root))
    patients = group_by_patient(series, objects)
    stats = ScanStats(
        files_found=len(found),
        files_parsed=len(todo),
        files_unchanged=len(found) - len(todo),
        files_removed=removed,
        seconds=time.perf_counter() - start,
        parse_seconds=parse_seconds,
        workers=1 if kind is ExecutorKind.SERIAL else n_workers,
        executor=kind,
    )
    logger.info(
        "scanned %s: %d files, %d parsed, %d series, %d skipped in %.2f s",
        root,
        stats.files_found,
        stats.files_parsed,
        len(series),
        len(skipped),
        stats.seconds,
    )
    return ScanResult(
        export_dir=root,
        index_path=target,
        patients=patients,
        series=tuple(series),
        non_image_objects=tuple(objects),
        skipped=skipped,
        stats=stats,
    )


def _summarize_part(index_path: str, root: str, uids: Sequence[str]) -> list[SeriesInfo]:
    """Worker: summarise some series from the (committed) index rows."""
    with SeriesIndex(index_path, read_only=True) as index:
        return index.summarize(uids, root=Path(root))


def _summarize_in_pool(index: SeriesIndex, root: Path, pool: Executor, workers: int) -> None:
    """Summarise the series without a cached summary in the worker processes.

    Decoding the rows of a 10,000-file export and summarising its series was a
    third of a first scan's wall time when done in the main process alone; the
    workers read the index (WAL mode: readers do not block) and return the
    small summaries, which are cached here so :meth:`SeriesIndex.series` only
    reads them back.
    """
    uids = index.uncached_series(root=root)
    if len(uids) < _PARALLEL_MIN_SERIES:
        return  # not worth the round trip: SeriesIndex.series does it in-process
    n_parts = min(len(uids), workers * 4)  # small parts: the pool evens out big series
    parts = [uids[i::n_parts] for i in range(n_parts)]
    futures = [
        pool.submit(_summarize_part, str(index.path), str(root), part) for part in parts if part
    ]
    for future in as_completed(futures):
        index.store_summaries(future.result(), root=root)


def _parse_all(
    index: SeriesIndex,
    todo: Sequence[tuple[str, int, int]],
    pool: Executor | None,
    workers: int,
    progress: bool,
    known: Mapping[str, Any],
    key: bytes,
) -> None:
    """Parse ``todo`` and write each batch to the index in its own transaction.

    ``known`` holds the paths already in the index; a batch with none of them
    is stored without looking up the series of their old rows. ``key`` is the
    patient key.
    """
    if not todo:
        return

    def store(rows: list[IndexRow]) -> None:
        index.put_rows(rows, new=not any(row[0] in known for row in rows))

    batch_size = min(_BATCH, max(1, len(todo) // (workers * 4) or 1))
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    if pool is None:
        advance, stop = _progress(progress, len(todo))
        try:
            for batch in batches:
                store(_parse_batch(batch, key))
                advance(len(batch))
        finally:
            stop()
        return
    # Submit everything first: worker processes are forked here, before the
    # progress bar starts its refresh thread.
    futures = [pool.submit(_parse_batch, batch, key) for batch in batches]
    advance, stop = _progress(progress, len(todo))
    try:
        for future in as_completed(futures):
            rows = future.result()
            store(rows)
            advance(len(rows))
    finally:
        stop()
