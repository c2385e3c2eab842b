"""A messy DICOM export for the batch tests, with the per-series outcome each bundle must report.

:func:`build_batch_export` writes (copies; the shared data is only read) into a
destination folder, under deep meaningless folders and extension-less names:

==========================  =========================================================
study                       series (label: what it is)
==========================  =========================================================
STS_002 (sts, real CT)      ``sts002_ct``: 48-slice CT, and its RTSTRUCT (GTV seed);
                            ``sts002_pet``: PET (``DERIVED\\SECONDARY``, unsupported
                            for both bundles); ``sts002_mr``: T1 MR (``DERIVED``);
                            ``sts002_ct_localizer``: a coronal CT scout (LOCALIZER)
STS_003 (sts, real CT)      ``sts003_ct_corrupt``: 51-slice CT whose middle slice is
                            RLE Lossless with its data cut short (headers read fine,
                            the scan says decodable, decoding fails), and its RTSTRUCT
BraTS pat0003 (full)        ``brats_flair``, ``brats_t1c``, ``brats_flair_mpr``
                            (coronal reformat, DERIVED), ``brats_localizer``
                            (:func:`brats_dicom.write_brats_study`)
BraTS pat0004 (40 slices)   ``brats_missing_flair``: FLAIR only, no T1c
BraTS pat0006 (40 slices)   ``brats_corrupt_flair`` (one slice cut short, as above),
                            ``brats_corrupt_t1c``
==========================  =========================================================

plus junk that the scan skips (never a series): a text file, a zero-byte file,
a truncated DICOM (first 300 bytes), a DICOMDIR and a Basic Text SR.

:meth:`BatchExport.expected` gives, for the ``lung_nodule_ct`` (CT) or
``brats_glioma_mri`` (glioma) bundle, each series' expected status
(``done``/``skipped``/``failed``), an :class:`Outcome` category, and a regular
expression the record's reason must match (case-insensitive ``re.search``).

Build time about 5 s; about 700 files, 80 MB. Use one session-scoped fixture
(:func:`batch_export` below, registered by ``tests/conftest.py``).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import RLELossless, generate_uid

from monai_tumor.ingest.enums import SkipReason
from tests.support.brats_dicom import BratsStudy, brats_case_dir, write_brats_study
from tests.support.messy_export import Namer, file_meta

__all__ = [
    "CT_BUNDLE",
    "GLIOMA_BUNDLE",
    "BatchExport",
    "ExpectedOutcome",
    "ExportSeries",
    "Outcome",
    "batch_export",
    "build_batch_export",
    "corrupt_pixel_data",
    "link_sts_ct",
]

CT_BUNDLE = "lung_nodule_ct"
GLIOMA_BUNDLE = "brats_glioma_mri"
_CROP = (60, 100)  # slices of the small BraTS studies (through the tumour)


class Outcome(str, Enum):
    """Why a series ends with its status (the category behind the reason text)."""

    #: Segmented; outputs written.
    DONE = "done"
    #: Chosen as a non-reference input (T1c) of another series, whose record holds the outputs.
    COMPANION_INPUT = "companion_input"
    #: Rejected by the selection rules while the study has every required input.
    NOT_SELECTED = "not_selected"
    #: The study lacks a required input, so none of its series is processed.
    MISSING_INPUT = "missing_input"
    #: A seeded (VOI) bundle without any seed for this series.
    NO_SEEDS = "no_seeds"
    #: Selected, but its pixel data cannot be decoded.
    READ_ERROR = "read_error"

    @property
    def status(self) -> str:
        """The batch status this outcome has: ``done``, ``skipped`` or ``failed``."""
        if self is Outcome.DONE:
            return "done"
        if self is Outcome.READ_ERROR:
            return "failed"
        return "skipped"


@dataclass(frozen=True)
class ExpectedOutcome:
    """What a batch run must report for one series.

    Attributes
    ----------
    outcome
        The category.
    reason
        Regular expression the record's reason must match (``re.search``,
        ignoring case); ``""`` matches anything.
    error_type
        Exception class name of a failure (``"IngestError"``), else ``None``.
    """

    outcome: Outcome
    reason: str = ""
    error_type: str | None = None

    @property
    def status(self) -> str:
        """``done``, ``skipped`` or ``failed``."""
        return self.outcome.status


@dataclass(frozen=True)
class ExportSeries:
    """One image series written into the export."""

    label: str
    series_uid: str
    study_uid: str
    modality: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class BatchExport:
    """The export on disk and what each bundle must do with it.

    Attributes
    ----------
    root
        The export folder.
    series
        Label (see the module docstring) -> series written.
    junk
        Files the scan must skip, with the reason.
    rtstructs
        Series label -> the RTSTRUCT (GTV contour) drawn on it. The sts
        RTSTRUCTs name a SeriesInstanceUID that is *not* the image series'
        (it was re-identified after cropping): match them to their series by
        FrameOfReferenceUID.
    brats, brats_missing, brats_corrupt
        The three BraTS studies (UIDs, source NIfTI, labels).
    corrupt_files
        The files whose pixel data cannot be decoded.
    identifiers
        Patient IDs written (logs and reports must not contain them).
    """

    root: Path
    series: Mapping[str, ExportSeries]
    junk: Mapping[Path, SkipReason]
    rtstructs: Mapping[str, Path]
    brats: BratsStudy
    brats_missing: BratsStudy
    brats_corrupt: BratsStudy
    corrupt_files: tuple[Path, ...]
    identifiers: frozenset[str] = field(default_factory=frozenset)

    def uid(self, label: str) -> str:
        """SeriesInstanceUID of a series by label."""
        return self.series[label].series_uid

    def label_of(self, series_uid: str) -> str:
        """Label of a series by SeriesInstanceUID."""
        return next(label for label, s in self.series.items() if s.series_uid == series_uid)

    def expected(
        self, bundle: str, *, seeds_from_export: bool = True
    ) -> dict[str, ExpectedOutcome]:
        """Expected outcome of every image series for one bundle.

        Parameters
        ----------
        bundle
            ``"lung_nodule_ct"`` or ``"brats_glioma_mri"``, or a path ending in one.
        seeds_from_export
            For the CT (seeded VOI) bundle: whether the run takes seeds from the
            RTSTRUCTs in the export (``BatchOptions.seeds_from_export=True``;
            note that option is off by default). Without seeds the two CT series that would be
            segmented (``sts002_ct``) or fail (``sts003_ct_corrupt``) are
            skipped for lack of seeds. Ignored for the glioma bundle.

        Returns
        -------
        dict
            SeriesInstanceUID -> expected outcome, for every series of the export.
        """
        name = Path(bundle).name
        if name not in _EXPECTED:
            raise ValueError(f"no expectations for bundle {name!r}; have {sorted(_EXPECTED)}")
        table = dict(_EXPECTED[name])
        if name == CT_BUNDLE and not seeds_from_export:
            for label in ("sts002_ct", "sts003_ct_corrupt"):
                table[label] = ExpectedOutcome(Outcome.NO_SEEDS, r"seed")
        return {self.uid(label): outcome for label, outcome in table.items()}


def _missing(name: str) -> ExpectedOutcome:
    return ExpectedOutcome(Outcome.MISSING_INPUT, rf"(lack|missing|no series matched).*\b{name}\b")


_DECODE = ExpectedOutcome(Outcome.READ_ERROR, r"decode", "IngestError")

#: Bundle -> series label -> expected outcome (CT bundle: with seeds from the export's RTSTRUCTs).
_EXPECTED: dict[str, dict[str, ExpectedOutcome]] = {
    CT_BUNDLE: {
        "sts002_ct": ExpectedOutcome(Outcome.DONE),
        "sts002_pet": ExpectedOutcome(Outcome.NOT_SELECTED, r"Modality"),
        "sts002_mr": ExpectedOutcome(Outcome.NOT_SELECTED, r"Modality"),
        "sts002_ct_localizer": ExpectedOutcome(Outcome.NOT_SELECTED, r"LOCALIZER"),
        "sts003_ct_corrupt": _DECODE,
        "brats_flair": _missing("ct"),
        "brats_t1c": _missing("ct"),
        "brats_flair_mpr": _missing("ct"),
        "brats_localizer": _missing("ct"),
        "brats_missing_flair": _missing("ct"),
        "brats_corrupt_flair": _missing("ct"),
        "brats_corrupt_t1c": _missing("ct"),
    },
    GLIOMA_BUNDLE: {
        "sts002_ct": _missing("flair"),
        "sts002_pet": _missing("flair"),
        "sts002_mr": _missing("flair"),
        "sts002_ct_localizer": _missing("flair"),
        "sts003_ct_corrupt": _missing("flair"),
        "brats_flair": ExpectedOutcome(Outcome.DONE),
        "brats_t1c": ExpectedOutcome(Outcome.COMPANION_INPUT, r"t1c"),
        "brats_flair_mpr": ExpectedOutcome(Outcome.NOT_SELECTED, r"DERIVED"),
        "brats_localizer": ExpectedOutcome(Outcome.NOT_SELECTED, r"LOCALIZER"),
        "brats_missing_flair": _missing("t1c"),
        "brats_corrupt_flair": _DECODE,
        "brats_corrupt_t1c": ExpectedOutcome(Outcome.COMPANION_INPUT, r"t1c"),
    },
}


# ----------------------------------------------------------------------------- building


def link_sts_ct(data_dir: Path, export: Path, cases: tuple[str, ...]) -> Path:
    """A plain export of real CTs: per sts case a folder of symlinks to its CT and RTSTRUCT.

    Slices are named ``0000``, ``0001``, ... and the RTSTRUCT ``rs``; returns ``export``.
    """
    for case in cases:
        series = data_dir / "sts" / case / "CT" / "dicom"
        (export / case).mkdir(parents=True)
        for i, f in enumerate(sorted((series / "image").iterdir())):
            (export / case / f"{i:04d}").symlink_to(f)
        (export / case / "rs").symlink_to(series / "mask" / "RS.dcm")
    return export


def corrupt_pixel_data(path: Path) -> None:
    """Re-encode one single-frame file as RLE Lossless and cut its data short.

    The header (and the scan's view of it: RLE is decodable here) stays valid;
    decoding the pixels fails, as after an interrupted transfer of a compressed
    image. The RLE header of the fragment is kept, the segments are lost.
    """
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    raw = bytearray(ds.PixelData)
    # encapsulated: item (Basic Offset Table), item (fragment), sequence delimiter
    bot_length = struct.unpack_from("<I", raw, 4)[0]
    fragment = 8 + bot_length + 8
    keep = 200  # the 64-byte RLE header and a little data
    raw = raw[: fragment + keep] + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    struct.pack_into("<I", raw, fragment - 4, keep)
    ds.PixelData = bytes(raw)
    ds.save_as(path)


def _copy_series(source_dir: Path, namer: Namer) -> tuple[list[Path], Dataset]:
    written = []
    first: Dataset | None = None
    for source in sorted(source_dir.iterdir()):
        target = namer.next()
        shutil.copyfile(source, target)
        written.append(target)
        if first is None:
            first = pydicom.dcmread(source, stop_before_pixels=True)
    assert first is not None
    return written, first


def _brats_series(study: BratsStudy, prefix: str) -> dict[str, ExportSeries]:
    return {
        f"{prefix}_{role}": ExportSeries(
            f"{prefix}_{role}", s.series_uid, study.study_uid, "MR", s.files
        )
        for role, s in study.series.items()
    }


def build_batch_export(data_dir: Path, out_dir: Path) -> BatchExport:
    """Write the batch export under ``out_dir`` (see the module docstring).

    Parameters
    ----------
    data_dir
        The shared real data (only read).
    out_dir
        An empty folder to write into (e.g. ``tmp_path_factory.mktemp("export")``).

    Returns
    -------
    BatchExport
        The export and what the CT and glioma bundles must report for it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    namer = Namer(out_dir, salt="batch/")
    series: dict[str, ExportSeries] = {}
    rtstructs: dict[str, Path] = {}
    identifiers: set[str] = set()

    # --- sts: STS_002 CT + PET + MR (one study) with the CT's RTSTRUCT, plus a CT scout
    sts = data_dir / "sts"
    for kind, label in (("CT", "sts002_ct"), ("PET", "sts002_pet"), ("MR_T1", "sts002_mr")):
        files, first = _copy_series(sts / "STS_002" / kind / "dicom" / "image", namer)
        series[label] = ExportSeries(
            label,
            str(first.SeriesInstanceUID),
            str(first.StudyInstanceUID),
            str(first.Modality),
            tuple(files),
        )
        identifiers.add(str(first.PatientID))
    ct_files = series["sts002_ct"].files
    target = namer.next()
    shutil.copyfile(sts / "STS_002" / "CT" / "dicom" / "mask" / "RS.dcm", target)
    rtstructs["sts002_ct"] = target

    scout = pydicom.dcmread(ct_files[len(ct_files) // 2])
    scout.SOPInstanceUID = generate_uid()
    scout.file_meta.MediaStorageSOPInstanceUID = scout.SOPInstanceUID
    scout.SeriesInstanceUID = generate_uid()
    scout.SeriesNumber = 99
    scout.SeriesDescription = "Topogram 0.6 T20f"
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    scout_path = namer.next()
    scout.save_as(scout_path)
    series["sts002_ct_localizer"] = ExportSeries(
        "sts002_ct_localizer",
        str(scout.SeriesInstanceUID),
        str(scout.StudyInstanceUID),
        "CT",
        (scout_path,),
    )

    # --- STS_003 CT with one undecodable slice, and its RTSTRUCT (so a seeded run selects it)
    files, first = _copy_series(sts / "STS_003" / "CT" / "dicom" / "image", namer)
    identifiers.add(str(first.PatientID))
    by_position = sorted(
        files,
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    broken_ct = by_position[len(by_position) // 2]
    corrupt_pixel_data(broken_ct)
    series["sts003_ct_corrupt"] = ExportSeries(
        "sts003_ct_corrupt",
        str(first.SeriesInstanceUID),
        str(first.StudyInstanceUID),
        "CT",
        tuple(files),
    )
    target = namer.next()
    shutil.copyfile(sts / "STS_003" / "CT" / "dicom" / "mask" / "RS.dcm", target)
    rtstructs["sts003_ct_corrupt"] = target

    # --- BraTS: a full study, a study without T1c, a study with an undecodable FLAIR slice
    brats_root = out_dir / "MR"
    brats = write_brats_study(
        brats_case_dir(data_dir, "brats_2013_pat0003_1"), brats_root, patient_id="GLIOMA-0003"
    )
    missing = write_brats_study(
        brats_case_dir(data_dir, "brats_2013_pat0004_1"),
        brats_root,
        patient_id="GLIOMA-0004",
        sequences=("flair",),
        distractors=(),
        slices=_CROP,
    )
    corrupt = write_brats_study(
        brats_case_dir(data_dir, "brats_2013_pat0006_1"),
        brats_root,
        patient_id="GLIOMA-0006",
        distractors=(),
        slices=_CROP,
    )
    broken_mr = corrupt.flair.files[len(corrupt.flair.files) // 2]
    corrupt_pixel_data(broken_mr)
    series.update(_brats_series(brats, "brats"))
    series["brats_missing_flair"] = _brats_series(missing, "brats_missing")["brats_missing_flair"]
    series.update(_brats_series(corrupt, "brats_corrupt"))
    identifiers |= {brats.patient_id, missing.patient_id, corrupt.patient_id}

    # --- junk the scan skips
    junk: dict[Path, SkipReason] = {}
    junk_dir = out_dir / "misc"
    junk_dir.mkdir()
    (junk_dir / "notes.txt").write_text("Exported from the old PACS; see ticket 42.\n")
    junk[junk_dir / "notes.txt"] = SkipReason.NOT_DICOM
    (junk_dir / "EMPTY").write_bytes(b"")
    junk[junk_dir / "EMPTY"] = SkipReason.EMPTY
    (junk_dir / "TRUNC").write_bytes(ct_files[5].read_bytes()[:300])
    junk[junk_dir / "TRUNC"] = SkipReason.TRUNCATED

    dicomdir = Dataset()
    dicomdir.file_meta = file_meta("1.2.840.10008.1.3.10", generate_uid())
    dicomdir.FileSetID = "BATCH"
    dicomdir.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    dicomdir.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    dicomdir.FileSetConsistencyFlag = 0
    dicomdir.DirectoryRecordSequence = Sequence()
    dicomdir.save_as(out_dir / "DICOMDIR", enforce_file_format=True)
    junk[out_dir / "DICOMDIR"] = SkipReason.DICOMDIR

    template = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    sr = Dataset()
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.SOPInstanceUID = generate_uid()
    sr.file_meta = file_meta(sr.SOPClassUID, sr.SOPInstanceUID)
    sr.Modality = "SR"
    sr.StudyInstanceUID = template.StudyInstanceUID
    sr.SeriesInstanceUID = generate_uid()
    sr.PatientID = template.PatientID
    sr.ValueType = "CONTAINER"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "Soft-tissue mass, see GTV."
    sr.ContentSequence = Sequence([item])
    sr_path = namer.next()
    sr.save_as(sr_path, enforce_file_format=True)
    junk[sr_path] = SkipReason.UNSUPPORTED_SOP_CLASS

    return BatchExport(
        root=out_dir,
        series=series,
        junk=junk,
        rtstructs=rtstructs,
        brats=brats,
        brats_missing=missing,
        brats_corrupt=corrupt,
        corrupt_files=(broken_ct, broken_mr),
        identifiers=frozenset(identifiers),
    )


@pytest.fixture(scope="session")
def batch_export(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BatchExport:
    """The batch export, built once per test session.

    Registered for every test by ``pytest_plugins`` in ``tests/conftest.py``.
    """
    return build_batch_export(data_dir, tmp_path_factory.mktemp("batch_export"))
