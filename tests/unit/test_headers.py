from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import pydicom
import pytest

from monai_tumor.config import patient_key
from monai_tumor.errors import IngestError, UnsupportedInputError
from monai_tumor.ingest.enums import ImageKind, SkipReason
from monai_tumor.ingest.headers import inspect_file, patient_hash, read_header
from monai_tumor.ingest.records import InstanceHeader, NonImageObject, SkippedFile
from tests.support.typed_io import pydicom_testdata

LUNG_SLICE = Path("lung1/LUNG1-001/image/1-001.dcm")
REAL_FILES = [
    LUNG_SLICE,
    Path("lung1/LUNG1-001/mask_rtstruct/1-1.dcm"),
    Path("sts/STS_001/CT/dicom/image/000000.dcm"),
    Path("sts/STS_002/MR_T1/dicom/image/000003.dcm"),
    Path("sts/STS_003/PET/dicom/image/000010.dcm"),
    Path("sts/STS_003/PET/dicom/mask/RS.dcm"),
    Path("dcmqi_seg/liver.dcm"),
    *(Path(f"dcm_qa_ts/In/{i}.dcm") for i in range(1, 10)),
]


@pytest.mark.realdata
@pytest.mark.parametrize("relative", REAL_FILES, ids=str)
def test_fast_path_matches_pydicom(data_dir: Path, relative: Path) -> None:
    path = data_dir / relative
    assert inspect_file(path) == inspect_file(path, use_fast_path=False)


@pytest.mark.realdata
def test_lung1_slice_header(data_dir: Path) -> None:
    header = read_header(data_dir / LUNG_SLICE)
    ds = pydicom.dcmread(data_dir / LUNG_SLICE, stop_before_pixels=True)
    assert header.modality == "CT"
    assert (header.rows, header.columns) == (512, 512)
    assert header.pixel_spacing == (0.9765625, 0.9765625)
    assert header.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert header.image_position == tuple(float(v) for v in ds.ImagePositionPatient)
    assert header.series_instance_uid == ds.SeriesInstanceUID
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert header.image_kind is ImageKind.ORIGINAL
    assert header.patient_hash == patient_hash(str(ds.PatientID), patient_key())
    assert header.number_of_frames == 1 and not header.multi_frame


def test_header_has_no_identifier_fields() -> None:
    names = {f.name.lower() for f in dataclasses.fields(InstanceHeader)}
    assert not {n for n in names if "name" in n and "patient" in n}
    assert "patient_id" not in names and "patient_birth_date" not in names


def test_patient_hash() -> None:
    key = b"k" * 32
    assert patient_hash(None, key) == "" and patient_hash("", key) == ""
    value = patient_hash("ABC-123", key)
    assert len(value) == 16 and int(value, 16) >= 0
    assert value == patient_hash("ABC-123", key) != patient_hash("ABC-124", key)
    # keyed: the plain SHA-256 of the ID (guessable for short IDs) is not the hash,
    # and another key gives another hash
    assert value != hashlib.sha256(b"ABC-123").hexdigest()[:16]
    assert value != patient_hash("ABC-123", b"m" * 32)
    assert value == hmac.new(key, b"ABC-123", hashlib.sha256).hexdigest()[:16]


@pytest.mark.realdata
def test_inspect_file_uses_the_given_or_configured_key(data_dir: Path) -> None:
    path = data_dir / LUNG_SLICE
    patient_id = str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)
    configured = inspect_file(path)
    other = inspect_file(path, patient_key=b"another key, 32 bytes long......")
    assert isinstance(configured, InstanceHeader) and isinstance(other, InstanceHeader)
    assert configured.patient_hash == patient_hash(patient_id, patient_key())
    assert other.patient_hash == patient_hash(patient_id, b"another key, 32 bytes long......")
    assert other.patient_hash != configured.patient_hash


@pytest.mark.realdata
def test_rtstruct_is_a_non_image_object(data_dir: Path) -> None:
    path = data_dir / "lung1/LUNG1-001/mask_rtstruct/1-1.dcm"
    record = inspect_file(path)
    assert isinstance(record, NonImageObject)
    assert record.modality == "RTSTRUCT"
    image = read_header(data_dir / LUNG_SLICE)
    assert record.referenced_series_uids == (image.series_instance_uid,)
    with pytest.raises(UnsupportedInputError, match="RT Structure Set"):
        read_header(path)


@pytest.mark.realdata
def test_seg_references_its_series(data_dir: Path) -> None:
    record = inspect_file(data_dir / "dcmqi_seg/liver.dcm")
    assert isinstance(record, NonImageObject) and record.modality == "SEG"
    ct = next((data_dir / "dcmqi_seg/ct-3slice").iterdir())
    assert record.referenced_series_uids == (read_header(ct).series_instance_uid,)


@pytest.mark.realdata
def test_compressed_syntaxes_read_alike(data_dir: Path) -> None:
    paths = [data_dir / f"dcm_qa_ts/In/{i}.dcm" for i in range(1, 10)]
    headers = [read_header(p) for p in paths]
    syntaxes = [
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in paths
    ]
    assert [h.transfer_syntax_uid for h in headers] == syntaxes
    geometry = {(h.rows, h.columns, h.image_orientation, h.pixel_spacing) for h in headers}
    assert len(geometry) == 1


@pytest.mark.realdata
def test_empty_uids_get_stand_ins(data_dir: Path) -> None:
    files = sorted((data_dir / "ct_jpeg2000/dicom").iterdir())
    headers = [read_header(f) for f in files]
    assert all(h.synthetic_uids for h in headers)
    assert len({h.series_instance_uid for h in headers}) == 1
    assert headers[0].series_instance_uid.startswith("missing-series-")
    assert len({h.sop_instance_uid for h in headers}) == len(files)


def test_enhanced_multiframe_positions() -> None:
    path = pydicom_testdata("eCT_Supplemental.dcm")
    header = read_header(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.number_of_frames == int(ds.NumberOfFrames) == 2
    expected = tuple(
        tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        for item in ds.PerFrameFunctionalGroupsSequence
    )
    assert header.frame_positions == expected
    assert header.image_orientation is not None and header.pixel_spacing is not None
    assert header.positions() == expected


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", SkipReason.EMPTY),
        (b"hello, not an image\n", SkipReason.NOT_DICOM),
        (b"\x08\x00garbage that looks like a tag" * 4, SkipReason.NOT_DICOM),
        (b"\x00" * 128 + b"DICM", SkipReason.TRUNCATED),
    ],
)
def test_junk_reasons(tmp_path: Path, content: bytes, reason: SkipReason) -> None:
    path = tmp_path / "junk"
    path.write_bytes(content)
    record = inspect_file(path)
    assert isinstance(record, SkippedFile) and record.reason is reason
    with pytest.raises(IngestError, match=reason.value):
        read_header(path)


@pytest.mark.realdata
@pytest.mark.parametrize("cut", [131, 140, 200, 300, 600, 1000, 1497])
@pytest.mark.parametrize("fast", [True, False])
def test_truncated_copies_never_pass_as_images(
    data_dir: Path, tmp_path: Path, cut: int, fast: bool
) -> None:
    data = (data_dir / "sts/STS_001/CT/dicom/image/000000.dcm").read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(data[:cut])
    record = inspect_file(path, use_fast_path=fast)
    assert isinstance(record, SkippedFile)
    expected = {
        SkipReason.TRUNCATED,
        SkipReason.CORRUPT,
        SkipReason.NOT_DICOM,
        SkipReason.NO_PIXEL_DATA,
    }
    assert record.reason in expected
    if fast and cut >= 132:  # past the "DICM" prefix: the fast path says truncated
        assert record.reason is SkipReason.TRUNCATED


@pytest.mark.realdata
def test_round_trip_through_dict(data_dir: Path) -> None:
    header = read_header(data_dir / LUNG_SLICE)
    assert InstanceHeader.from_dict(header.to_dict()) == header
    rs = inspect_file(data_dir / "lung1/LUNG1-001/mask_rtstruct/1-1.dcm")
    assert isinstance(rs, NonImageObject)
    assert NonImageObject.from_dict(rs.to_dict()) == rs
    skipped = SkippedFile(Path("/x"), SkipReason.DICOMDIR, "media storage directory")
    assert SkippedFile.from_dict(skipped.to_dict()) == skipped


def _minimal_header(**extra: object) -> dict[str, object]:
    return {
        "path": "/export/a/IM1",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": "1.2.3.4",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.5",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "patient_hash": "abc",
        "modality": "CT",
        "image_type": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "rows": 4,
        "columns": 5,
        **extra,
    }


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"image_orientation": [1, 0, 0, 0, 1, 0], "image_position": [0.0, 1.0, 2.5]},
        {"number_of_frames": 2, "frame_positions": [[0, 0, 0], [0, 0, 1.5]]},
        {"pixel_spacing": [0.5, 0.75], "echo_time": 12.0, "series_description": "T1"},
    ],
)
def test_from_dict_equals_the_constructor(extra: dict[str, object]) -> None:
    """The fast rebuild (no dataclass __init__) gives exactly the constructed header."""
    data = _minimal_header(**extra)
    rebuilt = InstanceHeader.from_dict(data)
    kwargs: dict[str, Any] = dict(data, path=Path(str(data["path"])))
    for key in ("image_type", "image_orientation", "pixel_spacing", "image_position"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    if "frame_positions" in kwargs:
        kwargs["frame_positions"] = tuple(tuple(p) for p in kwargs["frame_positions"])
    constructed = InstanceHeader(**kwargs)
    assert rebuilt == constructed
    assert hash(rebuilt) == hash(constructed)
    assert vars(rebuilt) == vars(constructed)
    assert InstanceHeader.from_dict(rebuilt.to_dict()) == rebuilt
    with pytest.raises(dataclasses.FrozenInstanceError):
        rebuilt.rows = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"colour": "red"}, "unknown fields ['colour']"), ({"rows": None}, "missing fields ['rows']")],
)
def test_from_dict_rejects_bad_keys(change: dict[str, object], message: str) -> None:
    data = _minimal_header(**change)
    if change.get("rows", 0) is None:
        del data["rows"]
    with pytest.raises(TypeError, match=re.escape(message)):
        InstanceHeader.from_dict(data)


def test_unreadable_file(tmp_path: Path) -> None:
    record = inspect_file(tmp_path / "does-not-exist")
    assert isinstance(record, SkippedFile) and record.reason is SkipReason.UNREADABLE


def test_un_vr_and_charset_decode_like_pydicom(tmp_path: Path) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID("1.2.3.4")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = pydicom.uid.CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.5"
    ds.Modality = "CT"
    ds.SeriesDescription = "Thorax nativ – Lunge ü"
    ds.Rows = 64
    ds.Columns = 32
    ds.PixelSpacing = [0.5, 0.75]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, -12.5]
    ds.BitsAllocated = 16
    ds.PixelData = b"\0" * (64 * 32 * 2)
    path = tmp_path / "ct"
    ds.save_as(path, enforce_file_format=True)
    # Rewrite Rows with VR UN (as some converters do): explicit VR, 4-byte length.
    data = path.read_bytes()
    as_us = b"\x28\x00\x10\x00US\x02\x00\x40\x00"
    assert data.count(as_us) == 1
    path.write_bytes(data.replace(as_us, b"\x28\x00\x10\x00UN\x00\x00\x02\x00\x00\x00\x40\x00"))
    fast = inspect_file(path)
    assert fast == inspect_file(path, use_fast_path=False)
    assert isinstance(fast, InstanceHeader)
    assert (fast.rows, fast.columns) == (64, 32)
    assert fast.series_description == "Thorax nativ – Lunge ü"
    assert fast.pixel_spacing == (0.5, 0.75) and fast.image_position == (0.0, 0.0, -12.5)


@pytest.mark.parametrize("use_fast_path", [True, False])
def test_patient_id_inside_free_text_is_redacted(tmp_path: Path, use_fast_path: bool) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID("1.2.3.4")
    ds.SOPClassUID = pydicom.uid.CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.5"
    ds.PatientID = "STS_002"
    ds.Modality = "CT"
    ds.SeriesDescription = "IBSI_1_sts_002_MR_T1_image"
    ds.StudyDescription = "follow-up STS_002"
    ds.ProtocolName = "Thorax"
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.PixelData = b"\0" * 32
    path = tmp_path / "ct"
    ds.save_as(path, enforce_file_format=True)
    header = inspect_file(path, use_fast_path=use_fast_path)
    assert isinstance(header, InstanceHeader)
    assert header.series_description == "IBSI_1_[redacted]_MR_T1_image"
    assert "STS_002" not in repr(header).upper()
    assert header.patient_hash == patient_hash("STS_002", patient_key())
