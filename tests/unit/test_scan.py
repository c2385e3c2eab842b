from __future__ import annotations

import json
import logging
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from monai_tumor.config import CACHE_ENV_VAR, PATIENT_KEY_ENV_VAR, default_index_path
from monai_tumor.errors import ConfigError, IngestError
from monai_tumor.geometry import Orientation
from monai_tumor.ingest import scan as scan_module
from monai_tumor.ingest.enums import ExecutorKind, ImageKind, SkipReason
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.records import InstanceHeader
from monai_tumor.ingest.scan import INDEX_DIRNAME, ScanResult, scan_export
from monai_tumor.ingest.series import SeriesInfo, summarize_series
from tests.support.folder_snapshot import snapshot
from tests.support.messy_export import MessyExport, build_messy_export
from tests.support.typed_io import pydicom_testdata


@pytest.fixture(scope="module")
def messy(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MessyExport:
    return build_messy_export(data_dir, tmp_path_factory.mktemp("messy") / "export")


@pytest.fixture(scope="module")
def scanned(messy: MessyExport) -> ScanResult:
    index = messy.root.parent / "index.sqlite"
    return scan_export(messy.root, index_path=index, progress=False)


@pytest.mark.realdata
def test_every_series_is_found_and_classified(messy: MessyExport, scanned: ScanResult) -> None:
    found = {s.series_instance_uid: s for s in scanned.series}
    assert set(found) == set(messy.series)
    for uid, expected in messy.series.items():
        info = found[uid]
        assert info.modality == expected.modality, uid
        assert info.number_of_slices == expected.number_of_slices, uid
        assert info.number_of_stacks == 1
        assert info.orientation is expected.orientation
        assert info.pixel_spacing == pytest.approx(expected.pixel_spacing, rel=1e-5)
        if expected.slice_spacing is None:
            assert info.slice_spacing is None
        else:
            assert info.slice_spacing == pytest.approx(expected.slice_spacing, rel=1e-4)
        assert info.uniform is expected.uniform
        assert info.main_stack.gaps == expected.gaps
        assert info.image_kind is expected.image_kind
        assert info.decodable and not info.multi_frame


@pytest.mark.realdata
def test_lung1_full_ct(messy: MessyExport, scanned: ScanResult) -> None:
    (lung,) = [s for s in scanned.series if s.number_of_slices == 134]
    assert lung.pixel_spacing == (0.9765625, 0.9765625)
    assert lung.slice_spacing == pytest.approx(3.0)
    assert lung.uniform and lung.orientation is Orientation.AXIAL
    assert lung.number_of_instances == 134  # the two duplicate copies are not counted


@pytest.mark.realdata
def test_every_junk_file_has_its_reason(messy: MessyExport, scanned: ScanResult) -> None:
    reasons = {record.path: record.reason for record in scanned.skipped}
    assert reasons == messy.junk
    n_files = messy.image_files + len(messy.non_image) + len(messy.junk)
    assert scanned.stats.files_found == n_files
    assert sum(s.number_of_instances for s in scanned.series) == messy.image_files


@pytest.mark.realdata
def test_rtstructs_are_non_image_objects(messy: MessyExport, scanned: ScanResult) -> None:
    found = {o.path: (o.modality, o.referenced_series_uids) for o in scanned.non_image_objects}
    assert found == {p: (m, (ref,)) for p, (m, ref) in messy.non_image.items()}


@pytest.mark.realdata
def test_grouping_by_patient_and_study(scanned: ScanResult) -> None:
    assert len(scanned.patients) == 3  # STS_001, STS_002, LUNG1-001 (by hash only)
    assert all(len(p.patient_hash) == 16 for p in scanned.patients)
    flat = [s for p in scanned.patients for st in p.studies for s in st.series]
    assert sorted(s.series_instance_uid for s in flat) == sorted(
        s.series_instance_uid for s in scanned.series
    )
    objects = [o for p in scanned.patients for st in p.studies for o in st.non_image_objects]
    assert len(objects) == len(scanned.non_image_objects)


@pytest.mark.realdata
def test_selection_attributes(scanned: ScanResult) -> None:
    (lung,) = [s for s in scanned.series if s.number_of_slices == 134]
    attrs = lung.selection_attributes()
    assert attrs["Modality"] == "CT"
    assert attrs["SeriesInstanceUID"] == lung.series_instance_uid
    assert attrs["ImageType"][0] == "ORIGINAL"
    assert attrs["Orientation"] == "axial"
    assert attrs["NumberOfSlices"] == 134
    assert attrs["SliceSpacing"] == pytest.approx(3.0)
    assert attrs["Uniform"] is True and attrs["Decodable"] is True and attrs["MultiFrame"] is False
    for key in (
        "SeriesDescription",
        "ProtocolName",
        "SequenceName",
        "EchoTime",
        "BodyPartExamined",
    ):
        assert key in attrs


@pytest.mark.realdata
def test_json_has_no_identifiers(messy: MessyExport, scanned: ScanResult) -> None:
    text = json.dumps(scanned.to_dict())
    assert json.loads(text)["schema"] == "monai-tumor/scan/1"
    for value in messy.identifiers:
        assert value not in text


@pytest.mark.realdata
def test_index_is_reusable(messy: MessyExport, scanned: ScanResult) -> None:
    with SeriesIndex(scanned.index_path, create=False) as index:
        series = index.series(root=messy.root)
        assert [s.series_instance_uid for s in series] == [
            s.series_instance_uid for s in scanned.series
        ]
        (lung,) = [s for s in series if s.number_of_slices == 134]
        assert len(index.files_for_series(lung.series_instance_uid)) == 134
        assert {r.path for r in index.skipped(root=messy.root)} == set(messy.junk)


@pytest.mark.realdata
def test_rescan_reads_only_new_or_changed_files(data_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(data_dir / "sts/STS_003/CT/dicom", export / "nested" / "deep")
    index = tmp_path / "index.sqlite"
    first = scan_export(export, index_path=index, progress=False)
    n = first.stats.files_found
    assert first.stats.files_parsed == n == 52  # 51 slices + RTSTRUCT

    again = scan_export(export, index_path=index, progress=False)
    assert (again.stats.files_parsed, again.stats.files_unchanged) == (0, n)
    assert again.series == first.series

    slices = sorted((export / "nested/deep/image").iterdir())
    slices[25].unlink()  # deleted (a middle slice: leaves a gap)
    with slices[1].open("ab") as fh:  # changed (size)
        fh.write(b"\0\0")
    (export / "new.txt").write_text("added")  # new
    third = scan_export(export, index_path=index, progress=False)
    assert third.stats.files_parsed == 2
    assert third.stats.files_removed == 1
    assert third.series[0].number_of_slices == 50
    assert not third.series[0].uniform and third.series[0].main_stack.gaps == 1
    reasons = {r.path.name: r.reason for r in third.skipped}
    assert reasons == {"new.txt": SkipReason.NOT_DICOM}


@pytest.mark.realdata
def test_rescan_with_another_patient_key_rebuilds_the_index(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "export"
    shutil.copytree(data_dir / "sts/STS_003/CT/dicom", export)
    index = tmp_path / "index.sqlite"
    first = scan_export(export, index_path=index, progress=False)
    (patient,) = first.patients
    monkeypatch.setenv(PATIENT_KEY_ENV_VAR, "another-site-key-" + "9" * 32)
    other = scan_export(export, index_path=index, progress=False)
    # every file parsed again: no row keeps a hash made with the first key
    assert other.stats.files_parsed == first.stats.files_found
    (other_patient,) = other.patients
    assert len(other_patient.patient_hash) == 16
    assert other_patient.patient_hash != patient.patient_hash
    assert {s.patient_hash for s in other.series} == {other_patient.patient_hash}
    assert [s.series_instance_uid for s in other.series] == [
        s.series_instance_uid for s in first.series
    ]


@pytest.mark.realdata
def test_default_scan_never_writes_into_the_export(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    exports = tmp_path / "exports"
    pet = exports / "pet"
    shutil.copytree(data_dir / "sts/STS_002/PET/dicom", pet)
    ct = exports / "ct"
    shutil.copytree(data_dir / "sts/STS_001/CT/dicom", ct)
    before = snapshot(exports)

    result = scan_export(pet, progress=True)  # the bar goes to stderr
    assert snapshot(exports) == before  # byte for byte, mtimes and modes included
    assert result.index_path == default_index_path(pet) == cache / "index" / result.index_path.name
    assert result.index_path.is_file() and result.index_path.name.startswith("pet-")
    assert result.stats.files_found == result.stats.files_parsed == 49
    assert stat.S_IMODE((cache / "index").stat().st_mode) == 0o700  # paths, descriptions

    # a rescan, by another spelling of the path, reuses the index and reads nothing
    rescan = scan_export(exports / "ct" / ".." / "pet", progress=False)
    assert rescan.index_path == result.index_path
    assert rescan.stats.files_found == 49 and rescan.stats.files_parsed == 0
    assert rescan.series == result.series

    # another export gets its own index
    other = scan_export(ct, progress=False)
    assert other.index_path != result.index_path and other.index_path.parent == cache / "index"
    assert other.stats.files_found == other.stats.files_parsed == 60  # 59 slices, 1 RTSTRUCT
    assert [(s.modality, s.number_of_slices) for s in other.series] == [("CT", 59)]
    assert sorted(p.name for p in (cache / "index").glob("*.sqlite")) == sorted(
        [result.index_path.name, other.index_path.name]
    )
    assert snapshot(exports) == before


def test_index_folder_left_by_an_older_version_is_not_scanned(tmp_path: Path) -> None:
    export = tmp_path / "export"
    (export / INDEX_DIRNAME).mkdir(parents=True)
    (export / INDEX_DIRNAME / "index.sqlite").write_bytes(b"SQLite format 3\x00")
    result = scan_export(export, progress=False)
    assert result.stats.files_found == 0 and not result.skipped


def test_unusable_cache_folder_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a-file" / "cache"))
    with pytest.raises(ConfigError, match=CACHE_ENV_VAR) as caught:
        scan_export(export, progress=False)
    assert "--index" in str(caught.value)
    assert list(export.iterdir()) == []


def test_missing_export(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="not a folder"):
        scan_export(tmp_path / "nope", index_path=tmp_path / "i.sqlite", progress=False)


@pytest.mark.realdata
@pytest.mark.parametrize("executor", [ExecutorKind.THREAD, ExecutorKind.PROCESS])
def test_parallel_executors_agree(
    messy: MessyExport,
    scanned: ScanResult,
    tmp_path: Path,
    executor: ExecutorKind,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Summaries are made in the worker processes from 16 series up; the messy
    # export has fewer, so lower the bar and check the workers did them all.
    monkeypatch.setattr(scan_module, "_PARALLEL_MIN_SERIES", 1)
    left_after_pool: list[int] = []
    summarize_in_pool = scan_module._summarize_in_pool

    def spy(index: SeriesIndex, root: Path, pool: Any, workers: int) -> None:
        assert index.uncached_series(root=root)
        summarize_in_pool(index, root, pool, workers)
        left_after_pool.append(len(index.uncached_series(root=root)))

    monkeypatch.setattr(scan_module, "_summarize_in_pool", spy)
    result = scan_export(
        messy.root,
        index_path=tmp_path / "index.sqlite",
        workers=2,
        executor=executor,
        progress=False,
    )
    assert result.stats.executor is executor and result.stats.workers == 2
    assert left_after_pool == ([0] if executor is ExecutorKind.PROCESS else [])
    assert result.series == scanned.series
    assert [s.to_record() for s in result.series] == [s.to_record() for s in scanned.series]
    assert result.skipped == scanned.skipped


@pytest.mark.realdata
def test_scan_real_data_in_place(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = sorted(p.name for p in (data_dir / "sts").iterdir())
    caplog.set_level(logging.DEBUG)
    result = scan_export(data_dir / "sts", progress=False)  # default index: the user's cache
    assert result.index_path == default_index_path(data_dir / "sts")
    assert sorted(p.name for p in (data_dir / "sts").iterdir()) == before
    assert not (data_dir / "sts" / INDEX_DIRNAME).exists()
    counts = sorted((s.series_description or "", s.number_of_slices) for s in result.series)
    expected = {
        ("STS_001", "CT"): 59, ("STS_001", "MR_T1"): 59, ("STS_001", "PET"): 59,
        ("STS_002", "CT"): 48, ("STS_002", "MR_T1"): 35, ("STS_002", "PET"): 48,
        ("STS_003", "CT"): 51, ("STS_003", "MR_T1"): 47, ("STS_003", "PET"): 51,
    }  # fmt: skip
    # The PatientID (STS_00n) inside each SeriesDescription is redacted on read.
    assert counts == sorted(
        (f"IBSI_1_[redacted]_{kind}_image", n) for (_patient, kind), n in expected.items()
    )
    assert len({s.patient_hash for s in result.series}) == 3
    assert all(s.uniform and s.orientation is Orientation.AXIAL for s in result.series)
    assert len(result.non_image_objects) == 9
    assert "Patient" not in caplog.text


def _header(sop: str, z: float, iop: tuple[float, ...], rows: int = 4) -> InstanceHeader:
    return InstanceHeader(
        path=Path(f"/x/{sop}"),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        sop_instance_uid=sop,
        study_instance_uid="1.2",
        series_instance_uid="1.2.3",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_hash="",
        modality="MR",
        image_type=("ORIGINAL", "PRIMARY"),
        rows=rows,
        columns=4,
        image_orientation=iop,
        image_position=(0.0, 0.0, z) if iop[5] == 0 else (0.0, z, 0.0),
        pixel_spacing=(0.5, 0.5),
    )


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def test_summary_splits_stacks_and_flags_duplicates() -> None:
    headers = [_header(f"a{i}", 2.0 * i, AXIAL) for i in range(5)]
    headers += [_header("dup", 4.0, AXIAL)]  # same position as a2
    headers += [_header(f"c{i}", 3.0 * i, CORONAL) for i in range(3)]
    info = summarize_series(headers)
    assert info.number_of_stacks == 2 and info.number_of_slices == 9
    axial, coronal = info.stacks
    assert axial.orientation is Orientation.AXIAL and axial.number_of_slices == 6
    assert axial.duplicate_positions == 1 and not axial.uniform
    assert axial.slice_spacing == pytest.approx(2.0)
    assert coronal.orientation is Orientation.CORONAL and coronal.uniform
    assert coronal.slice_spacing == pytest.approx(3.0)
    assert not info.uniform and info.image_kind is ImageKind.ORIGINAL


def test_summary_of_shuffled_stack_uses_positions_not_order() -> None:
    zs = [7.5, 0.0, 2.5, 10.0, 5.0]
    info = summarize_series([_header(f"s{i}", z, AXIAL) for i, z in enumerate(zs)])
    assert info.uniform and info.slice_spacing == pytest.approx(2.5)
    sizes = summarize_series([_header("a", 0, AXIAL), _header("b", 1, AXIAL, rows=8)])
    assert sizes.number_of_stacks == 2


def test_summary_rejects_mixed_series() -> None:
    other = InstanceHeader(**{**_header("b", 1.0, AXIAL).__dict__, "series_instance_uid": "9"})
    with pytest.raises(ValueError, match="2 series"):
        summarize_series([_header("a", 0.0, AXIAL), other])


def test_enhanced_multiframe_series(tmp_path: Path) -> None:
    source = pydicom_testdata("eCT_Supplemental.dcm")
    export = tmp_path / "export"
    export.mkdir()
    shutil.copyfile(source, export / "MF0001")
    result = scan_export(export, index_path=tmp_path / "index.sqlite", progress=False)
    (info,) = result.series
    assert info.multi_frame and info.number_of_instances == 1
    assert info.number_of_slices == 2 and info.selection_attributes()["MultiFrame"] is True
    assert info.main_stack.slice_spacing is not None and info.orientation is not None


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("folder", "slices", "spacing", "uniform", "objects"),
    [
        ("lung1", [134], [3.0], [True], 1),
        ("ct_jpeg2000", [20], [2.0], [True], 0),  # JPEG 2000, empty study/series UIDs
        ("dcm_qa_ts", [9], [None], [False], 0),  # one image in 9 syntaxes: same position
        ("dcmqi_seg", [3, 3, 3, 3, 3], [2.5, 2.5, 2.5, 2.5, 1.0], [True] * 5, 6),
    ],
)
def test_scan_other_real_folders_in_place(
    data_dir: Path,
    tmp_path: Path,
    folder: str,
    slices: list[int],
    spacing: list[float | None],
    uniform: list[bool],
    objects: int,
) -> None:
    result = scan_export(data_dir / folder, index_path=tmp_path / "i.sqlite", progress=False)
    got = sorted((s.number_of_slices, s.slice_spacing or 0.0, s.uniform) for s in result.series)
    want = sorted((n, z or 0.0, u) for n, z, u in zip(slices, spacing, uniform, strict=True))
    assert [(n, u) for n, _, u in got] == [(n, u) for n, _, u in want]
    assert [z for _, z, _ in got] == pytest.approx([z for _, z, _ in want], rel=1e-6)
    assert all(s.decodable for s in result.series)
    assert len(result.non_image_objects) == objects
    assert {r.reason for r in result.skipped} <= {SkipReason.NOT_DICOM}
    assert not (data_dir / folder / INDEX_DIRNAME).exists()


@pytest.mark.realdata
def test_series_summary_round_trips_through_the_cache(scanned: ScanResult) -> None:
    for info in scanned.series:
        back = SeriesInfo.from_record(json.loads(json.dumps(info.to_record())))
        assert back == info
        assert back.selection_attributes() == info.selection_attributes()
    with SeriesIndex(scanned.index_path, create=False) as index:  # served from the cache
        assert index.series(root=scanned.export_dir) == list(scanned.series)
