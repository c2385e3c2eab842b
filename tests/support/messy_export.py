"""Build a realistically messy DICOM export from the shared real data (for scan tests).

Everything is written under a destination folder (a pytest ``tmp_path``); the
shared data is only read. The export has:

* image series from ``sts/`` (STS_001 CT, MR_T1, PET; STS_002 CT with one slice
  removed, i.e. a gap) and ``lung1/`` (134-slice chest CT, bytes copied as is),
  plus the matching RTSTRUCTs, scattered over deep folders under random names
  without extensions;
* the sts copies get new, distinctive PatientName/PatientID/PatientBirthDate
  values (the originals also appear in the SeriesDescription, which the scan
  prints legitimately) so tests can assert that no identifier leaks;
* junk: text files, a truncated DICOM (first 300 bytes), a zero-byte file, a
  DICOMDIR, a CT localizer (new UIDs, ImageType LOCALIZER, coronal), a Basic
  Text SR, a Grayscale Softcopy Presentation State, duplicate copies of two
  lung1 files, and a CT image without Pixel Data.

:func:`build_messy_export` returns what a correct scan must report.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from monai_tumor.geometry import Orientation
from monai_tumor.ingest.enums import ImageKind, SkipReason

__all__ = ["ExpectedSeries", "MessyExport", "build_messy_export"]

#: Identifiers written into the sts copies: {source patient: (name, id, birth date)}.
FAKE_PATIENTS = {
    "STS_001": ("Messy^Sarcoma^Alpha", "MSX-004711", "19510412"),
    "STS_002": ("Messy^Sarcoma^Beta", "MSX-008315", "19620923"),
}


@dataclass(frozen=True)
class ExpectedSeries:
    """What the scan must report for one series."""

    modality: str
    number_of_slices: int
    orientation: Orientation
    pixel_spacing: tuple[float, float]
    slice_spacing: float | None
    uniform: bool
    gaps: int = 0
    image_kind: ImageKind = ImageKind.ORIGINAL


@dataclass
class MessyExport:
    """A messy export on disk and the expected scan result."""

    root: Path
    series: dict[str, ExpectedSeries] = field(default_factory=dict)
    non_image: dict[Path, tuple[str, str]] = field(default_factory=dict)
    junk: dict[Path, SkipReason] = field(default_factory=dict)
    identifiers: set[str] = field(default_factory=set)
    image_files: int = 0


class Namer:
    """Deep, meaningless folder names and extension-less file names (deterministic per salt)."""

    def __init__(self, root: Path, salt: str = "") -> None:
        self.root = root
        self.salt = salt
        self.count = 0

    def next(self) -> Path:
        self.count += 1
        digest = hashlib.sha256(f"{self.salt}{self.count}".encode()).hexdigest()
        folder = self.root / f"DIR{digest[0]}" / f"SUB{digest[1:3]}" / f"Z{digest[3]}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"IM{digest[4:14].upper()}"


def _spacing_from_nifti(series_dir: Path) -> tuple[float, float, float]:
    """(row spacing, column spacing, slice spacing) from the sts NIfTI copy (mm)."""
    zooms = nib.Nifti1Image.from_filename(
        series_dir / "nifti" / "image" / "image.nii.gz"
    ).header.get_zooms()
    # NIfTI axes are [column, row, slice]: zooms = (column step, row step, slice step).
    return float(zooms[1]), float(zooms[0]), float(zooms[2])


def file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    """File meta information of an Explicit VR Little Endian Part 10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _non_image_dataset(sop_class: str, modality: str, template: Dataset) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = file_meta(sop_class, ds.SOPInstanceUID)
    ds.Modality = modality
    ds.StudyInstanceUID = template.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = template.PatientID
    ds.PatientName = template.PatientName
    return ds


def _referenced_series(rs: Dataset) -> str:
    """The SeriesInstanceUID an RTSTRUCT's contours refer to (read with pydicom)."""
    frame_ref = rs.ReferencedFrameOfReferenceSequence[0]
    return str(
        frame_ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
    )


def build_messy_export(data_dir: Path, dest: Path) -> MessyExport:
    """Write the messy export under ``dest`` and return the expected scan result.

    Parameters
    ----------
    data_dir
        The shared real data (read only).
    dest
        An empty folder to write into (e.g. ``tmp_path / "export"``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    export = MessyExport(root=dest)
    namer = Namer(dest)

    # --- sts: rewritten identifiers, STS_002 CT missing one middle slice
    for patient, kinds in (("STS_001", ("CT", "MR_T1", "PET")), ("STS_002", ("CT",))):
        name, pid, birth = FAKE_PATIENTS[patient]
        export.identifiers |= {name, pid, birth, name.replace("^", " ")}
        for kind in kinds:
            series_dir = data_dir / "sts" / patient / kind
            files = sorted((series_dir / "dicom" / "image").iterdir())
            drop = files[len(files) // 2] if patient == "STS_002" else None
            series_uid = modality = ""
            for source in files:
                if source == drop:
                    continue
                ds = pydicom.dcmread(source)
                ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, pid, birth
                ds.save_as(namer.next())
                series_uid, modality = ds.SeriesInstanceUID, ds.Modality
                export.image_files += 1
            row, col, z = _spacing_from_nifti(series_dir)
            export.series[series_uid] = ExpectedSeries(
                modality=modality,
                number_of_slices=len(files) - (drop is not None),
                orientation=Orientation.AXIAL,
                pixel_spacing=(row, col),
                slice_spacing=z,
                uniform=drop is None,
                gaps=int(drop is not None),
                image_kind=ImageKind.DERIVED if modality in ("PT", "MR") else ImageKind.ORIGINAL,
            )
            rs = pydicom.dcmread(series_dir / "dicom" / "mask" / "RS.dcm")
            rs.PatientName, rs.PatientID, rs.PatientBirthDate = name, pid, birth
            target = namer.next()
            rs.save_as(target)
            export.non_image[target] = ("RTSTRUCT", _referenced_series(rs))

    # --- lung1: bytes copied unchanged (original identifiers)
    lung = data_dir / "lung1" / "LUNG1-001"
    lung_files = sorted((lung / "image").iterdir())
    for source in lung_files:
        shutil.copyfile(source, namer.next())
        export.image_files += 1
    first = pydicom.dcmread(lung_files[0], stop_before_pixels=True)
    export.identifiers |= {str(first.PatientID), str(first.PatientName)}
    if first.get("PatientBirthDate"):
        export.identifiers.add(str(first.PatientBirthDate))
    export.series[first.SeriesInstanceUID] = ExpectedSeries(
        modality="CT",
        number_of_slices=134,
        orientation=Orientation.AXIAL,
        pixel_spacing=(0.9765625, 0.9765625),
        slice_spacing=3.0,
        uniform=True,
    )
    rs_target = namer.next()
    shutil.copyfile(next((lung / "mask_rtstruct").iterdir()), rs_target)
    export.non_image[rs_target] = ("RTSTRUCT", _referenced_series(pydicom.dcmread(rs_target)))

    # duplicates of two lung1 files (same SOPInstanceUID) in another folder
    dup_dir = dest / "copy of export" / "again"
    dup_dir.mkdir(parents=True)
    for i, source in enumerate(lung_files[:2]):
        shutil.copyfile(source, dup_dir / f"zz_dup{i}")
        export.junk[dup_dir / f"zz_dup{i}"] = SkipReason.DUPLICATE_INSTANCE

    # --- junk
    junk_dir = dest / "misc" / "stuff"
    junk_dir.mkdir(parents=True)
    (junk_dir / "notes.txt").write_text("Scanned on the old PACS; see ticket 42.\n")
    export.junk[junk_dir / "notes.txt"] = SkipReason.NOT_DICOM
    (junk_dir / "README").write_bytes(b"\x08\x00 not really DICOM at all" * 3)
    export.junk[junk_dir / "README"] = SkipReason.NOT_DICOM
    (junk_dir / "EMPTY").write_bytes(b"")
    export.junk[junk_dir / "EMPTY"] = SkipReason.EMPTY
    (junk_dir / "TRUNC").write_bytes(lung_files[5].read_bytes()[:300])
    export.junk[junk_dir / "TRUNC"] = SkipReason.TRUNCATED

    template = pydicom.dcmread(lung_files[10])

    dicomdir = Dataset()
    dicomdir.file_meta = file_meta("1.2.840.10008.1.3.10", generate_uid())
    dicomdir.FileSetID = "MESSY"
    dicomdir.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    dicomdir.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    dicomdir.FileSetConsistencyFlag = 0
    dicomdir.DirectoryRecordSequence = Sequence()
    dicomdir.save_as(dest / "DICOMDIR", enforce_file_format=True)
    export.junk[dest / "DICOMDIR"] = SkipReason.DICOMDIR

    sr = _non_image_dataset("1.2.840.10008.5.1.4.1.1.88.11", "SR", template)
    sr.ValueType = "CONTAINER"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "No focal lesion."
    sr.ContentSequence = Sequence([item])
    sr_path = namer.next()
    sr.save_as(sr_path, enforce_file_format=True)
    export.junk[sr_path] = SkipReason.UNSUPPORTED_SOP_CLASS

    pr = _non_image_dataset("1.2.840.10008.5.1.4.1.1.11.1", "PR", template)
    ref = Dataset()
    ref.SeriesInstanceUID = template.SeriesInstanceUID
    pr.ReferencedSeriesSequence = Sequence([ref])
    pr.PresentationLUTShape = "IDENTITY"
    pr_path = namer.next()
    pr.save_as(pr_path, enforce_file_format=True)
    export.junk[pr_path] = SkipReason.UNSUPPORTED_SOP_CLASS

    no_pixels = pydicom.dcmread(lung_files[20])
    del no_pixels.PixelData
    no_pixels.SOPInstanceUID = generate_uid()
    no_pixels.file_meta.MediaStorageSOPInstanceUID = no_pixels.SOPInstanceUID
    no_pixels_path = namer.next()
    no_pixels.save_as(no_pixels_path)
    export.junk[no_pixels_path] = SkipReason.NO_PIXEL_DATA

    localizer = pydicom.dcmread(lung_files[60])
    localizer.SOPInstanceUID = generate_uid()
    localizer.file_meta.MediaStorageSOPInstanceUID = localizer.SOPInstanceUID
    localizer.SeriesInstanceUID = generate_uid()
    localizer.SeriesNumber = 99
    localizer.SeriesDescription = "Topogram"
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    localizer.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    localizer.save_as(namer.next())
    export.image_files += 1
    export.series[localizer.SeriesInstanceUID] = ExpectedSeries(
        modality="CT",
        number_of_slices=1,
        orientation=Orientation.CORONAL,
        pixel_spacing=(0.9765625, 0.9765625),
        slice_spacing=None,
        uniform=True,
        image_kind=ImageKind.LOCALIZER,
    )
    return export
