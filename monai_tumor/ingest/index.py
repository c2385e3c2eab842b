"""The SQLite index of a scanned export: one row per file, keyed by path.

Each row keeps the file's size and modification time (ns), so a rescan parses
only new or changed files and drops deleted ones, and what the header reader
found: an image instance, a non-image object (RTSTRUCT, SEG) or a skipped file
with its reason. Series summaries are computed from the rows on demand
(:meth:`SeriesIndex.series`), so they always reflect what is on disk.

Storage: SQLite in WAL mode; every batch of rows is written in its own
transaction, so killing a scan loses at most the batch being written. The
schema is versioned (:data:`SCHEMA_VERSION`); an index written by another
version is a cache and is rebuilt from scratch.

Privacy: rows hold the header fields of :class:`~monai_tumor.ingest.records.InstanceHeader`
(PatientID only as its keyed hash; never PatientName or PatientBirthDate). The
``meta`` table records the fingerprint of the key that made the hashes
(:func:`monai_tumor.config.patient_key_id`); opened for writing with another
key, the index is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from monai_tumor.errors import ConfigError
from monai_tumor.ingest.enums import FileKind, SkipReason
from monai_tumor.ingest.records import FileRecord, InstanceHeader, NonImageObject, SkippedFile
from monai_tumor.ingest.series import SeriesInfo, summarize_series

__all__ = ["SCHEMA_VERSION", "IndexRow", "SeriesIndex", "record_to_row", "split_duplicates"]

logger = logging.getLogger(__name__)

#: Version of the table layout and of what rows hold; a different stored version triggers a
#: rebuild. 3: free-text values are stored with the PatientID redacted. 4: patient hashes are
#: keyed (HMAC) and the key's fingerprint is stored. 5: image rows record whether the
#: file's Pixel Data runs past its end (``InstanceHeader.truncated``). 6: cached series
#: summaries count the instances whose only copy is truncated.
SCHEMA_VERSION = 6

#: One ``files`` row: (path, size, mtime_ns, kind, series_uid, study_uid,
#: patient_hash, sop_instance_uid, reason, payload JSON).
IndexRow = tuple[
    str, int, int, str, str | None, str | None, str | None, str | None, str | None, str
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    series_uid TEXT,
    study_uid TEXT,
    patient_hash TEXT,
    sop_instance_uid TEXT,
    reason TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_series ON files (series_uid);
CREATE TABLE IF NOT EXISTS series_cache (
    root TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (root, series_uid)
);
"""


def record_to_row(record: FileRecord, size: int, mtime_ns: int) -> IndexRow:
    """Turn what :func:`~monai_tumor.ingest.headers.inspect_file` found into a row.

    Parameters
    ----------
    record
        The file's header, non-image object or skip record.
    size, mtime_ns
        The file's ``st_size`` and ``st_mtime_ns`` when it was read.

    Returns
    -------
    IndexRow
        The row tuple, ready for :meth:`SeriesIndex.put_rows`.
    """
    payload = record.to_dict()
    path = payload.pop("path")
    text = json.dumps(payload, separators=(",", ":"))
    if isinstance(record, InstanceHeader):
        return (
            path,
            size,
            mtime_ns,
            FileKind.IMAGE.value,
            record.series_instance_uid,
            record.study_instance_uid,
            record.patient_hash,
            record.sop_instance_uid,
            None,
            text,
        )
    if isinstance(record, NonImageObject):
        return (
            path,
            size,
            mtime_ns,
            FileKind.NON_IMAGE.value,
            record.series_instance_uid,
            record.study_instance_uid,
            record.patient_hash,
            record.sop_instance_uid,
            None,
            text,
        )
    return (
        path,
        size,
        mtime_ns,
        FileKind.SKIPPED.value,
        None,
        None,
        None,
        None,
        record.reason.value,
        text,
    )


def split_duplicates(
    headers: Iterable[InstanceHeader],
) -> tuple[list[InstanceHeader], list[SkippedFile]]:
    """Keep one file per SOPInstanceUID: an intact copy, the first path in sort order.

    Copies of an instance are common after an interrupted transfer or a second
    partial export. A copy the header scan found truncated
    (:attr:`InstanceHeader.truncated`) is never kept while an intact copy
    exists; it is listed with reason ``TRUNCATED`` and what the scan found. An
    instance with no intact copy keeps its (truncated) file, so reading its
    series fails with an error naming that file.

    Parameters
    ----------
    headers
        Image instance headers, possibly with copies of the same instance.

    Returns
    -------
    tuple
        ``(unique, duplicates)``: the kept headers, sorted by path, and a
        :class:`SkippedFile` for each other copy (``TRUNCATED`` for a truncated
        copy, ``DUPLICATE_INSTANCE`` for an intact second copy).
    """
    kept: dict[str, InstanceHeader] = {}
    duplicates: list[SkippedFile] = []
    # Intact copies first, then by path: the kept copy is the first intact one.
    for header in sorted(headers, key=lambda h: (bool(h.truncated), str(h.path))):
        first = kept.get(header.sop_instance_uid)
        if first is None:
            kept[header.sop_instance_uid] = header
        elif header.truncated:
            duplicates.append(
                SkippedFile(
                    header.path,
                    SkipReason.TRUNCATED,
                    f"truncated copy of the instance in {first.path}: {header.truncated}",
                    header.sop_class_uid,
                )
            )
        else:
            duplicates.append(
                SkippedFile(
                    header.path,
                    SkipReason.DUPLICATE_INSTANCE,
                    f"same SOPInstanceUID as {first.path}",
                    header.sop_class_uid,
                )
            )
    return sorted(kept.values(), key=lambda h: str(h.path)), duplicates


def _under(root: Path | None) -> tuple[str, tuple[str, ...]]:
    """Build the SQL condition selecting paths under ``root`` (all paths if None)."""
    if root is None:
        return "1", ()
    prefix = str(root).rstrip(os.sep) + os.sep
    # Every path starting with "root/" sorts in [root/, root0): '0' follows '/'.
    return "path >= ? AND path < ?", (prefix, prefix[:-1] + chr(ord(os.sep) + 1))


def _header(path: str, payload: str) -> InstanceHeader:
    """Turn an image row (path, JSON payload) back into its header."""
    data = json.loads(payload)
    data["path"] = path
    return InstanceHeader.from_dict(data)


def _scope(root: Path | None) -> str:
    """Return the ``series_cache.root`` key for summaries of ``root`` ("" = whole index)."""
    return str(root) if root is not None else ""


def _missing_index(path: Path) -> ConfigError:
    return ConfigError(
        "no index found here; expected an index written by `monai-tumor scan` - "
        "run the scan first or pass the right --index",
        path=path,
    )


class SeriesIndex:
    """An open SQLite index of one or more scanned exports.

    Parameters
    ----------
    path
        The index file (created with its folder if missing, unless
        ``create`` is False).
    create
        Create the file if it does not exist.
    read_only
        Open an existing index for reading only: nothing is created, migrated
        or cached (writes raise ``sqlite3.OperationalError``); an index of
        another schema version is a :class:`~monai_tumor.errors.ConfigError`.
    patient_key_id
        Fingerprint of the key the caller hashes PatientIDs with
        (:func:`monai_tumor.config.patient_key_id`). When writing and the
        index's rows were hashed with another key, they are dropped (the
        index is rebuilt by the next scan) and this fingerprint is recorded.
        ``None``: rows are not checked (for readers that add no rows).

    Raises
    ------
    ConfigError
        The file does not exist and ``create`` is False, or it cannot be opened
        as SQLite.

    Examples
    --------
    >>> with SeriesIndex(tmp_path / "index.sqlite") as index:  # doctest: +SKIP
    ...     for info in index.series():
    ...         print(info.modality, info.number_of_slices)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        read_only: bool = False,
        patient_key_id: str | None = None,
    ) -> None:
        self.path = Path(path)
        if read_only:
            self._conn = self._open_read_only()
            return
        if not self.path.exists():
            if not create:
                raise _missing_index(self.path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the index folder ({exc.strerror}); pass --index with a "
                    "writable location",
                    path=self.path.parent,
                ) from exc
        try:
            # Autocommit mode: transactions are explicit (see _transaction).
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(patient_key_id)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open the index as SQLite ({exc}); delete it to rebuild it, or pass "
                "another --index",
                path=self.path,
            ) from exc

    # ------------------------------------------------------------------ lifecycle

    def _open_read_only(self) -> sqlite3.Connection:
        """Open an existing index for reading only (no schema creation or migration)."""
        if not self.path.exists():
            raise _missing_index(self.path)
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0
            )
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot read the index as SQLite ({exc}); rescan the export to rebuild it",
                path=self.path,
            ) from exc
        if row is None or int(row[0]) != SCHEMA_VERSION:
            conn.close()
            raise ConfigError(
                f"the index has schema version {row[0] if row else 'none'}, this version "
                f"reads {SCHEMA_VERSION}; rescan the export to rebuild it",
                path=self.path,
            )
        return conn

    def _migrate(self, patient_key_id: str | None) -> None:
        self._conn.executescript(_SCHEMA)  # idempotent
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            stale = None
            if row is not None and int(row[0]) != SCHEMA_VERSION:
                stale = f"has schema version {row[0]}, expected {SCHEMA_VERSION}"
            elif patient_key_id is not None:
                key_row = conn.execute(
                    "SELECT value FROM meta WHERE key = 'patient_key_id'"
                ).fetchone()
                if key_row is not None and key_row[0] != patient_key_id:
                    stale = "holds patient hashes made with another patient key"
            if stale is not None:
                logger.warning("index %s %s: rebuilding it", self.path, stale)
                conn.execute("DELETE FROM files")
                conn.execute("DELETE FROM series_cache")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            if patient_key_id is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('patient_key_id', ?)",
                    (patient_key_id,),
                )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction: committed on success, rolled back on error."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> SeriesIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def put_rows(self, rows: Sequence[IndexRow], *, new: bool = False) -> None:
        """Insert or replace rows in one transaction (see :func:`record_to_row`).

        Parameters
        ----------
        rows
            The rows to store.
        new
            The caller knows none of these paths is in the index yet (a first
            scan): the lookup of the series their old rows belonged to, whose
            cached summaries would need dropping, is skipped.
        """
        if not rows:
            return
        with self._transaction() as conn:
            touched = {row[4] for row in rows if row[4]}
            if not new:
                touched |= self._series_of(conn, [row[0] for row in rows])
            conn.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self._invalidate(conn, touched)

    def put(self, record: FileRecord, *, size: int, mtime_ns: int) -> None:
        """Insert or replace one file's record."""
        self.put_rows([record_to_row(record, size, mtime_ns)])

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Drop rows of files that no longer exist, in one transaction.

        Returns
        -------
        int
            Number of rows removed.
        """
        keys = [(str(p),) for p in paths]
        if not keys:
            return 0
        with self._transaction() as conn:
            touched = self._series_of(conn, [k[0] for k in keys])
            conn.executemany("DELETE FROM files WHERE path = ?", keys)
            self._invalidate(conn, touched)
        return len(keys)

    @staticmethod
    def _series_of(conn: sqlite3.Connection, paths: Sequence[str]) -> set[str]:
        """SeriesInstanceUIDs currently stored for these paths."""
        found: set[str] = set()
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found |= {
                uid
                for (uid,) in conn.execute(
                    f"SELECT DISTINCT series_uid FROM files WHERE path IN ({marks})", chunk
                )
                if uid
            }
        return found

    @staticmethod
    def _invalidate(conn: sqlite3.Connection, series_uids: Iterable[str]) -> None:
        """Drop cached summaries of series whose files changed."""
        conn.executemany(
            "DELETE FROM series_cache WHERE series_uid = ?", [(uid,) for uid in series_uids]
        )

    # ------------------------------------------------------------------ reading

    def file_states(self, *, root: Path | None = None) -> dict[str, tuple[int, int]]:
        """``{path: (size, mtime_ns)}`` of indexed files (under ``root`` if given)."""
        where, args = _under(root)
        rows = self._conn.execute(f"SELECT path, size, mtime_ns FROM files WHERE {where}", args)
        return {path: (size, mtime) for path, size, mtime in rows}

    def _rows(self, kind: FileKind, where: str = "1", args: tuple[Any, ...] = ()) -> list[Any]:
        return self._conn.execute(
            f"SELECT path, payload FROM files WHERE kind = ? AND {where}",
            (kind.value, *args),
        ).fetchall()

    def headers(
        self, *, root: Path | None = None, series_uid: str | None = None, unique: bool = True
    ) -> list[InstanceHeader]:
        """Image instance headers, sorted by path.

        Parameters
        ----------
        root
            Only files under this folder.
        series_uid
            Only this SeriesInstanceUID.
        unique
            Drop second copies of the same SOPInstanceUID (see :func:`split_duplicates`).
        """
        where, args = _under(root)
        if series_uid is not None:
            where, args = f"{where} AND series_uid = ?", (*args, series_uid)
        headers = [
            _header(path, payload) for path, payload in self._rows(FileKind.IMAGE, where, args)
        ]
        if unique:
            return split_duplicates(headers)[0]
        return sorted(headers, key=lambda h: str(h.path))

    def _duplicated_headers(self, root: Path | None) -> list[InstanceHeader]:
        """Headers of image files whose SOPInstanceUID occurs more than once."""
        where, args = _under(root)
        rows = self._conn.execute(
            f"SELECT path, payload FROM files WHERE kind = ? AND {where} AND sop_instance_uid IN "
            f"(SELECT sop_instance_uid FROM files WHERE kind = ? AND {where} "
            "GROUP BY sop_instance_uid HAVING COUNT(*) > 1)",
            (FileKind.IMAGE.value, *args, FileKind.IMAGE.value, *args),
        )
        return [_header(path, payload) for path, payload in rows]

    def files_for_series(self, series_uid: str) -> list[Path]:
        """Files of one series (one per SOPInstanceUID), sorted by path.

        The order is not the slice order: the series reader sorts slices along
        their normal (:func:`monai_tumor.geometry.sort_along_normal`).
        """
        return [h.path for h in self.headers(series_uid=series_uid)]

    def non_image_objects(self, *, root: Path | None = None) -> list[NonImageObject]:
        """RTSTRUCT and SEG objects found, sorted by path."""
        where, args = _under(root)
        return sorted(
            (
                NonImageObject.from_dict({**json.loads(payload), "path": path})
                for path, payload in self._rows(FileKind.NON_IMAGE, where, args)
            ),
            key=lambda o: str(o.path),
        )

    def skipped(
        self, *, root: Path | None = None, include_duplicates: bool = True
    ) -> list[SkippedFile]:
        """Every file not in a series, with its reason, sorted by path.

        Parameters
        ----------
        root
            Only files under this folder.
        include_duplicates
            Also list second copies of an instance (reason ``DUPLICATE_INSTANCE``).
        """
        where, args = _under(root)
        records = [
            SkippedFile.from_dict({**json.loads(payload), "path": path})
            for path, payload in self._rows(FileKind.SKIPPED, where, args)
        ]
        if include_duplicates:
            records += split_duplicates(self._duplicated_headers(root))[1]
        return sorted(records, key=lambda r: str(r.path))

    def _headers_by_series(
        self, root: Path | None, uids: Sequence[str]
    ) -> dict[str, list[InstanceHeader]]:
        """Image headers of ``uids`` (under ``root``), grouped by SeriesInstanceUID.

        One query per 500 series (through the ``series_uid`` index), rows
        decoded straight into headers.
        """
        where, args = _under(root)
        grouped: dict[str, list[InstanceHeader]] = {uid: [] for uid in uids}
        for start in range(0, len(uids), 500):
            chunk = tuple(uids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for uid, path, payload in self._conn.execute(
                f"SELECT series_uid, path, payload FROM files WHERE kind = ? AND {where} "
                f"AND series_uid IN ({marks})",
                (FileKind.IMAGE.value, *args, *chunk),
            ):
                grouped[uid].append(_header(path, payload))
        return grouped

    def _series_uids(self, root: Path | None) -> list[str]:
        where, args = _under(root)
        return [
            uid
            for (uid,) in self._conn.execute(
                f"SELECT DISTINCT series_uid FROM files WHERE kind = ? AND {where}",
                (FileKind.IMAGE.value, *args),
            )
        ]

    def _cached_payloads(self, root: Path | None) -> dict[str, str]:
        return dict(
            self._conn.execute(
                "SELECT series_uid, payload FROM series_cache WHERE root = ?", (_scope(root),)
            ).fetchall()
        )

    def uncached_series(self, *, root: Path | None = None) -> list[str]:
        """SeriesInstanceUIDs (under ``root``) whose summary is not cached yet."""
        cached = {
            uid
            for (uid,) in self._conn.execute(
                "SELECT series_uid FROM series_cache WHERE root = ?", (_scope(root),)
            )
        }
        return [uid for uid in self._series_uids(root) if uid not in cached]

    def summarize(self, uids: Sequence[str], *, root: Path | None = None) -> list[SeriesInfo]:
        """Summarise these series from their stored rows (under ``root``), without caching.

        :meth:`series` calls this for the series it has no summary of; a scan
        also calls it from worker processes on parts of the list (the index is
        only read) and stores the results with :meth:`store_summaries`.
        """
        by_series = self._headers_by_series(root, uids)
        return [summarize_series(split_duplicates(by_series[uid])[0]) for uid in uids]

    def store_summaries(self, infos: Iterable[SeriesInfo], *, root: Path | None = None) -> None:
        """Cache series summaries made by :meth:`summarize` for :meth:`series` (one transaction).

        The cache is optional: if it cannot be written (a read-only index) the
        summaries are simply recomputed next time.
        """
        scope = _scope(root)
        rows = [
            (scope, info.series_instance_uid, json.dumps(info.to_record(), separators=(",", ":")))
            for info in infos
        ]
        if not rows:
            return
        try:
            with self._transaction() as conn:
                conn.executemany("INSERT OR REPLACE INTO series_cache VALUES (?,?,?)", rows)
        except sqlite3.Error as exc:  # e.g. a read-only index: the cache is optional
            logger.debug("series summaries not cached in %s: %s", self.path, exc)

    def series(self, *, root: Path | None = None) -> list[SeriesInfo]:
        """Summaries of every image series (under ``root`` if given).

        Summaries are cached in the index and recomputed only for series whose
        files were added, changed or removed since.

        Returns
        -------
        list of SeriesInfo
            Sorted by patient hash, study, series number and UID.
        """
        cached = self._cached_payloads(root)
        uids = self._series_uids(root)
        fresh = self.summarize([uid for uid in uids if uid not in cached], root=root)
        self.store_summaries(fresh, root=root)
        infos = [SeriesInfo.from_record(json.loads(cached[uid])) for uid in uids if uid in cached]
        infos += fresh
        return sorted(
            infos,
            key=lambda s: (
                s.patient_hash,
                s.study_instance_uid,
                s.series_number if s.series_number is not None else -1,
                s.series_instance_uid,
            ),
        )

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])
