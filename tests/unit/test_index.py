from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from monai_tumor.errors import ConfigError
from monai_tumor.ingest.enums import SkipReason
from monai_tumor.ingest.index import SCHEMA_VERSION, SeriesIndex, record_to_row, split_duplicates
from monai_tumor.ingest.records import FileRecord, InstanceHeader, NonImageObject, SkippedFile


def _header(path: str, sop: str, series: str = "1.2.3", z: float = 0.0) -> InstanceHeader:
    return InstanceHeader(
        path=Path(path),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=sop,
        study_instance_uid="1.2",
        series_instance_uid=series,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_hash="abcd",
        modality="CT",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        rows=4,
        columns=4,
        image_orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        image_position=(0.0, 0.0, z),
        pixel_spacing=(1.0, 1.0),
    )


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SeriesIndex]:
    with SeriesIndex(tmp_path / "sub" / "index.sqlite") as idx:
        yield idx


def test_round_trip_all_record_kinds(index: SeriesIndex) -> None:
    header = _header("/exp/a", "1.1")
    rs = NonImageObject(
        path=Path("/exp/rs"),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.481.3",
        sop_instance_uid="9.9",
        study_instance_uid="1.2",
        series_instance_uid="7.7",
        modality="RTSTRUCT",
        patient_hash="abcd",
        referenced_series_uids=("1.2.3",),
    )
    junk = SkippedFile(Path("/exp/notes"), SkipReason.NOT_DICOM, "no DICM prefix")
    records: tuple[FileRecord, ...] = (header, rs, junk)
    for i, record in enumerate(records):
        index.put(record, size=10 + i, mtime_ns=100 + i)
    assert index.headers() == [header]
    assert index.non_image_objects() == [rs]
    assert index.skipped() == [junk]
    assert index.files_for_series("1.2.3") == [Path("/exp/a")]
    assert index.file_states() == {
        "/exp/a": (10, 100),
        "/exp/rs": (11, 101),
        "/exp/notes": (12, 102),
    }
    assert len(index) == 3


def test_duplicates_are_listed_once(index: SeriesIndex) -> None:
    index.put_rows(
        [
            record_to_row(_header("/exp/b", "1.1"), 1, 1),
            record_to_row(_header("/exp/a", "1.1"), 1, 1),
            record_to_row(_header("/exp/c", "1.2", z=1.0), 1, 1),
        ]
    )
    assert index.files_for_series("1.2.3") == [Path("/exp/a"), Path("/exp/c")]
    (dup,) = index.skipped()
    assert dup.path == Path("/exp/b") and dup.reason is SkipReason.DUPLICATE_INSTANCE
    assert "/exp/a" in dup.detail
    assert index.skipped(include_duplicates=False) == []
    unique, dups = split_duplicates([_header("/x", "1"), _header("/y", "2")])
    assert len(unique) == 2 and dups == []


def test_root_filter_is_a_folder_prefix(index: SeriesIndex) -> None:
    index.put(_header("/exp/a", "1.1"), size=1, mtime_ns=1)
    index.put(_header("/exp2/a", "1.2", series="4.5"), size=1, mtime_ns=1)
    assert set(index.file_states(root=Path("/exp"))) == {"/exp/a"}
    assert [s.series_instance_uid for s in index.series(root=Path("/exp2"))] == ["4.5"]


def test_remove_and_replace(index: SeriesIndex) -> None:
    index.put(_header("/exp/a", "1.1"), size=1, mtime_ns=1)
    index.put(_header("/exp/a", "1.1"), size=2, mtime_ns=5)
    assert index.file_states() == {"/exp/a": (2, 5)}
    assert index.remove(["/exp/a"]) == 1
    assert len(index) == 0


def test_failed_batch_rolls_back_and_keeps_earlier_batches(index: SeriesIndex) -> None:
    index.put(_header("/exp/a", "1.1"), size=1, mtime_ns=1)
    good = record_to_row(_header("/exp/b", "1.2"), 1, 1)
    with pytest.raises(sqlite3.Error):
        index.put_rows([good, ("/exp/c", None, 1, "image", None, None, None, None, None, "{}")])  # type: ignore[list-item]
    assert set(index.file_states()) == {"/exp/a"}


def test_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with SeriesIndex(path) as idx:
        idx.put(_header("/exp/a", "1.1"), size=1, mtime_ns=1)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    conn.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with SeriesIndex(path) as idx:  # an older layout is a stale cache: rebuilt empty
        assert len(idx) == 0


def test_missing_index_without_create(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run the scan first"):
        SeriesIndex(tmp_path / "nope.sqlite", create=False)


def test_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="SQLite"):
        SeriesIndex(path)


def test_read_only_index_reads_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with SeriesIndex(path) as idx:
        for z in range(3):
            idx.put(_header(f"/exp/a{z}", f"1.{z}", z=float(z)), size=1, mtime_ns=1)
        expected = idx.summarize(["1.2.3"])
    with SeriesIndex(path, read_only=True) as ro:
        assert ro.uncached_series() == ["1.2.3"]
        assert ro.summarize(["1.2.3"]) == expected
        assert expected[0].number_of_slices == 3 and expected[0].slice_spacing == 1.0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.put(_header("/exp/b", "2.1"), size=1, mtime_ns=1)
        ro.store_summaries(expected)  # the cache is optional: not written, no error
        assert ro.uncached_series() == ["1.2.3"]
    with SeriesIndex(path) as idx:
        idx.store_summaries(expected)
        assert idx.uncached_series() == []
        assert idx.series() == expected


def test_read_only_index_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run the scan first"):
        SeriesIndex(tmp_path / "nope.sqlite", read_only=True)
    path = tmp_path / "index.sqlite"
    SeriesIndex(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="schema version 0"):
        SeriesIndex(path, read_only=True)


@pytest.mark.parametrize(
    ("second_key_id", "kept"),
    [("key-a", True), (None, True), ("key-b", False)],
    ids=["same-key", "reader-without-key", "other-key"],
)
def test_rows_of_another_patient_key_are_dropped(
    tmp_path: Path, second_key_id: str | None, kept: bool
) -> None:
    path = tmp_path / "index.sqlite"
    with SeriesIndex(path, patient_key_id="key-a") as idx:
        idx.put_rows([record_to_row(_header("/exp/a", "1.1"), 1, 1)])
    with SeriesIndex(path, patient_key_id=second_key_id) as idx:
        assert bool(idx.file_states()) is kept
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'patient_key_id'").fetchone()
    assert stored == (second_key_id or "key-a")
