"""Write a BraTS case (NIfTI) as a DICOM MR study, for selection and end-to-end tests.

The shared data has BraTS cases as NIfTI volumes (``brats/<split>/<case>/``:
``Flair_subtrMeanDivStd.nii.gz``, ``T1c_subtrMeanDivStd.nii.gz``,
``OTMultiClass.nii.gz``; 240 x 240 x 155 at 1 mm, already z-scored float32).
:func:`write_brats_study` writes one case as the study a scanner would send:

* one StudyInstanceUID and one FrameOfReferenceUID for every series;
* ``flair``: axial 2D FLAIR (SeriesDescription ``AX FLAIR``, Siemens-style
  ProtocolName/SequenceName ``t2_tirm_tra_dark-fluid`` / ``*tir2d1_16``);
* ``t1c``: axial 3D T1 MPRAGE after gadolinium (``AX T1 MPRAGE POST GD``,
  ContrastBolusAgent set);
* distractors (``distractors=``): ``flair_mpr``, a coronal reformat of the FLAIR
  (ImageType ``DERIVED\\SECONDARY\\MPR``, 240 slices, i.e. *more* slices than
  the axial FLAIR, so a rule that forgets to exclude derived images picks it),
  and ``localizer``, a three-plane scout (ImageType ``...\\LOCALIZER``, three
  single-slice stacks);
* MR Image Storage, one file per slice, Explicit VR Little Endian, files of
  all series mixed under shuffled, extension-less names in nested folders.

Pixels
------
MR Image Storage allows 16-bit integers only, so each series is stored as
``uint16`` with one RescaleSlope/RescaleIntercept for the whole series:
``intercept`` = the series minimum (written with 10 significant digits, so
``float32(intercept)`` is exactly that minimum: the constant background
reads back unchanged) and ``slope`` = range / 65534. A value read back as
``stored * slope + intercept`` differs from the NIfTI by at most
``slope / 2`` (quantisation) plus float32 rounding: :attr:`BratsSeries.tolerance`
is ``slope / 2 + 1e-5``. For the four shared cases ``slope`` is 1.3e-4 to
2.9e-4, so the error is at most 1.5e-4 (measured on brats_2013_pat0003_1:
8.8e-5 FLAIR, 1.2e-4 T1c). The data's own distinct values are >= 0.0078
apart, so no two NIfTI values collapse into one stored value, and the glioma
bundle's label map from the DICOM study equals the one from the NIfTI files
voxel for voxel (measured on brats_2013_pat0003_1).

Geometry
--------
The NIfTI affine (RAS) is converted to LPS with :func:`monai_tumor.geometry.ras_to_lps`;
ImageOrientationPatient is the unit column and row steps, PixelSpacing the
step lengths (:func:`~monai_tumor.geometry.spacing_from_affine`), and
ImagePositionPatient of slice ``k`` is :func:`~monai_tumor.geometry.voxel_to_patient`
of voxel ``[0, 0, k]``. The fixture checks that
:func:`~monai_tumor.geometry.affine_from_dicom` rebuilds the NIfTI affine
from what it wrote, and refuses affines whose slice axis is not along the
slice normal (those would read back reordered or sheared).

Import it in tests as ``from tests.support.brats_dicom import write_brats_study``;
other code (``scripts/demo.sh``) puts the repository root on ``sys.path`` first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from monai_tumor.geometry import (
    affine_from_dicom,
    frame_to_voxel,
    lps_to_ras,
    ras_to_lps,
    slice_normal,
    spacing_from_affine,
    voxel_to_patient,
)

__all__ = [
    "DISTRACTORS",
    "MR_IMAGE_STORAGE",
    "SEQUENCES",
    "BratsSeries",
    "BratsStudy",
    "brats_case_dir",
    "write_brats_study",
]

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
#: Sequences the fixture can write (roles of real-pixel series).
SEQUENCES: tuple[str, ...] = ("flair", "t1c")
#: Distractor series the fixture can add.
DISTRACTORS: tuple[str, ...] = ("flair_mpr", "localizer")
#: Source files per role: the brats/ layout first, then BraTS 2017+ naming (brats2018/).
_SOURCE_GLOB = {"flair": ("Flair*.nii*", "*_flair.nii*"), "t1c": ("T1c*.nii*", "*_t1ce.nii*")}
_LEVELS = 65534  # uint16 levels used (one spare so DS rounding of the slope never overflows)

#: Per-role header attributes (acquisition parameters of a typical 3 T brain protocol).
_PROTOCOL: dict[str, dict[str, object]] = {
    "flair": {
        "SeriesNumber": 4,
        "SeriesDescription": "AX FLAIR",
        "ProtocolName": "t2_tirm_tra_dark-fluid",
        "SequenceName": "*tir2d1_16",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
        "ScanningSequence": ["SE", "IR"],
        "SequenceVariant": ["SK", "SP", "MP"],
        "ScanOptions": ["IR", "PFP"],
        "MRAcquisitionType": "2D",
        "RepetitionTime": "9000",
        "EchoTime": "81",
        "InversionTime": "2500",
        "FlipAngle": "150",
        "EchoTrainLength": 16,
    },
    "t1c": {
        "SeriesNumber": 9,
        "SeriesDescription": "AX T1 MPRAGE POST GD",
        "ProtocolName": "t1_mprage_tra_post",
        "SequenceName": "*tfl3d1_16ns",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
        "ScanningSequence": ["GR", "IR"],
        "SequenceVariant": ["SK", "SP", "MP"],
        "ScanOptions": ["IR"],
        "MRAcquisitionType": "3D",
        "RepetitionTime": "2300",
        "EchoTime": "2.98",
        "InversionTime": "900",
        "FlipAngle": "9",
        "EchoTrainLength": 1,
        "ContrastBolusAgent": "GADOBUTROL 1.0 MMOL/ML",
        "ContrastBolusRoute": "IV",
        "ContrastBolusVolume": "7.5",
    },
    "flair_mpr": {
        "SeriesNumber": 5,
        "SeriesDescription": "FLAIR MPR COR",
        "ProtocolName": "t2_tirm_tra_dark-fluid",
        "SequenceName": "*tir2d1_16",
        "ImageType": ["DERIVED", "SECONDARY", "MPR", "NORM"],
        "ScanningSequence": ["SE", "IR"],
        "SequenceVariant": ["SK", "SP", "MP"],
        "ScanOptions": ["IR", "PFP"],
        "MRAcquisitionType": "2D",
        "RepetitionTime": "9000",
        "EchoTime": "81",
        "InversionTime": "2500",
        "FlipAngle": "150",
        "EchoTrainLength": 16,
    },
    "localizer": {
        "SeriesNumber": 1,
        "SeriesDescription": "localizer",
        "ProtocolName": "localizer",
        "SequenceName": "*fl2d1",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "NORM", "LOCALIZER"],
        "ScanningSequence": ["GR"],
        "SequenceVariant": ["SP", "OSP"],
        "ScanOptions": [],
        "MRAcquisitionType": "2D",
        "RepetitionTime": "8.6",
        "EchoTime": "4",
        "FlipAngle": "20",
        "EchoTrainLength": 1,
    },
}


@dataclass(frozen=True)
class BratsSeries:
    """One written series and what reading it back must give.

    Attributes
    ----------
    role
        ``"flair"``, ``"t1c"``, ``"flair_mpr"`` or ``"localizer"``.
    series_uid
        SeriesInstanceUID.
    series_number, description
        SeriesNumber and SeriesDescription as written.
    files
        Paths written, in slice order ``k`` (ascending along the slice normal).
        The localizer's three files are three single-slice stacks.
    source_nifti
        The NIfTI whose voxels the series holds (the FLAIR file for the distractors).
    affine_ras
        Expected RAS voxel-to-world affine of the series read back (mm).
        ``None`` for the localizer (three stacks).
    slope, intercept
        RescaleSlope / RescaleIntercept as written (parsed back from the DS strings).
    tolerance
        Largest expected ``|read back - NIfTI|``: ``slope / 2 + 1e-5``.
    """

    role: str
    series_uid: str
    series_number: int
    description: str
    files: tuple[Path, ...]
    source_nifti: Path
    affine_ras: npt.NDArray[np.float64] | None
    slope: float
    intercept: float

    @property
    def tolerance(self) -> float:
        """Largest expected absolute difference from the NIfTI after reading back."""
        return self.slope / 2 + 1e-5

    @property
    def number_of_slices(self) -> int:
        """Files (= slices) written."""
        return len(self.files)


@dataclass(frozen=True)
class BratsStudy:
    """A BraTS case written as a DICOM MR study.

    Attributes
    ----------
    root
        The folder the study was written into.
    case
        Case folder name (``brats_2013_pat0003_1``).
    case_dir
        The source case folder in the shared data.
    patient_id
        PatientID written (tests may assert it never leaks into logs).
    study_uid, frame_of_reference_uid
        Shared by every series.
    series
        Role -> written series (``flair``, ``t1c`` and any distractors).
    label_nifti
        Reference label map (``OTMultiClass.nii.gz``: 0-4, stored as float; or BraTS 2017+
        ``<case>_seg.nii.gz``: 0, 1, 2, 4).
    brainmask_nifti
        ``brainmask.nii.gz`` of the case (``Path()`` for BraTS 2018 cases, which have none).
    """

    root: Path
    case: str
    case_dir: Path
    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    series: Mapping[str, BratsSeries] = field(default_factory=dict)
    label_nifti: Path = Path()
    brainmask_nifti: Path = Path()

    @property
    def flair(self) -> BratsSeries:
        """The FLAIR series."""
        return self.series["flair"]

    @property
    def t1c(self) -> BratsSeries:
        """The post-contrast T1 series."""
        return self.series["t1c"]

    @property
    def series_uids(self) -> dict[str, str]:
        """Role -> SeriesInstanceUID."""
        return {role: s.series_uid for role, s in self.series.items()}

    @property
    def files(self) -> list[Path]:
        """Every file written."""
        return [f for s in self.series.values() for f in s.files]


def brats_case_dir(data_dir: Path, case: str) -> Path:
    """The folder of a BraTS case in the shared data, whatever its split.

    Parameters
    ----------
    data_dir
        The shared data root (``tests/conftest.py``'s ``data_dir``).
    case
        Case folder name, e.g. ``"brats_2013_pat0003_1"`` or ``"Brats18_2013_11_1"``.
    """
    for folder in (
        data_dir / "brats" / "train",
        data_dir / "brats" / "validation",
        data_dir / "brats2018",
    ):
        candidate = folder / case
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no BraTS case {case!r} under {data_dir / 'brats'}/{{train,validation}} or "
        f"{data_dir / 'brats2018'}"
    )


# ----------------------------------------------------------------------------- helpers


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for ``value``."""
    for digits in (10, 9, 8):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value!r} as a DS of 16 characters")


def _ds_list(values: Iterable[float]) -> list[str]:
    return [_ds(float(v)) for v in values]


def _source(case_dir: Path, role: str) -> Path:
    for pattern in _SOURCE_GLOB[role]:
        found = sorted(case_dir.glob(pattern))
        if len(found) == 1:
            return found[0]
    raise FileNotFoundError(
        f"expected one of {_SOURCE_GLOB[role]} in {case_dir}, found "
        f"{sorted(p.name for p in case_dir.iterdir())}"
    )


def _reference_label(case_dir: Path) -> Path:
    """``OTMultiClass.nii.gz`` (brats/) or ``<case>_seg.nii.gz`` (BraTS 2017+ naming)."""
    for candidate in (case_dir / "OTMultiClass.nii.gz", case_dir / f"{case_dir.name}_seg.nii.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no OTMultiClass.nii.gz or {case_dir.name}_seg.nii.gz in {case_dir}")


@dataclass(frozen=True)
class _Quantised:
    stored: npt.NDArray[np.uint16]
    slope: float
    intercept: float
    slope_text: str
    intercept_text: str


def _quantise(volume: npt.NDArray[np.floating]) -> _Quantised:
    """uint16 stored values plus one slope/intercept reproducing ``volume`` (see module doc)."""
    vmin, vmax = float(volume.min()), float(volume.max())
    intercept_text = _ds(vmin)
    slope_text = _ds(max(vmax - vmin, 1e-6) / _LEVELS)
    slope, intercept = float(slope_text), float(intercept_text)
    scaled = np.rint((volume.astype(np.float64) - intercept) / slope)
    stored = np.clip(scaled, 0, 65535).astype(np.uint16)
    return _Quantised(stored, slope, intercept, slope_text, intercept_text)


@dataclass(frozen=True)
class _Plane:
    """One slice to write: frame in voxel order ``[column, row]`` and its LPS geometry."""

    pixels: npt.NDArray[np.uint16]
    iop: list[float]
    position: npt.NDArray[np.float64]
    pixel_spacing: list[float]
    thickness: float


def _planes(stored: npt.NDArray[np.uint16], affine_lps: npt.NDArray[np.float64]) -> list[_Plane]:
    """Slices ``k`` of a volume with its LPS affine, geometry through monai_tumor.geometry."""
    spacing = spacing_from_affine(affine_lps)  # (column step, row step, slice step) mm
    iop = [*(affine_lps[:3, 0] / spacing[0]), *(affine_lps[:3, 1] / spacing[1])]
    normal = slice_normal(iop)
    step = affine_lps[:3, 2]
    if not np.allclose(step, normal * spacing[2], atol=1e-6):
        raise ValueError(
            "the slice axis of this affine is not along +(row x column): a DICOM reader "
            "would reorder or shear it, so the written study would not read back as the NIfTI"
        )
    n = stored.shape[2]
    positions = voxel_to_patient(affine_lps, np.stack([np.zeros(n), np.zeros(n), np.arange(n)], 1))
    pixel_spacing = [float(spacing[1]), float(spacing[0])]  # (row spacing, column spacing)
    rebuilt = affine_from_dicom(iop, positions[0], pixel_spacing, float(spacing[2]), ras=False)
    if not np.allclose(rebuilt, affine_lps, atol=1e-6):
        raise AssertionError("affine_from_dicom does not rebuild the affine written")
    return [
        _Plane(stored[:, :, k], iop, positions[k], pixel_spacing, float(spacing[2]))
        for k in range(n)
    ]


def _coronal_reformat(
    stored: npt.NDArray[np.uint16], affine_lps: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float64]]:
    """Coronal MPR of an axial volume: ``w[a, b, c] = v[a, c, K-1-b]``.

    Index bookkeeping only: the new affine is the old one composed with the
    index map (new -> old), so every voxel keeps its world position.
    """
    k_last = stored.shape[2] - 1
    new_to_old = np.array(
        [[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, k_last], [0, 0, 0, 1]], dtype=np.float64
    )
    return np.ascontiguousarray(stored[:, :, ::-1].transpose(0, 2, 1)), affine_lps @ new_to_old


def _localizer_planes(
    stored: npt.NDArray[np.uint16], affine_lps: npt.NDArray[np.float64]
) -> list[_Plane]:
    """Axial, coronal and sagittal middle slices (a three-plane scout)."""
    ni, nj, nk = stored.shape
    axial = _planes(stored[:, :, nk // 2 : nk // 2 + 1], _shifted(affine_lps, (0, 0, nk // 2)))
    cor, cor_aff = _coronal_reformat(stored, affine_lps)
    coronal = _planes(cor[:, :, nj // 2 : nj // 2 + 1], _shifted(cor_aff, (0, 0, nj // 2)))
    # sagittal: s[a, b] = v[I//2, a, K-1-b]; new index (a, b, c) -> old (I//2 - c, a, K-1-b)
    # (row x column = (+j) x (-k) = -i: the slice axis runs towards decreasing i)
    sag_map = np.array(
        [[0, 0, -1, ni // 2], [1, 0, 0, 0], [0, -1, 0, nk - 1], [0, 0, 0, 1]], dtype=np.float64
    )
    sag = np.ascontiguousarray(stored[ni // 2, :, ::-1])[:, :, None]
    sagittal = _planes(sag, affine_lps @ sag_map)
    return axial + coronal + sagittal


def _shifted(
    affine: npt.NDArray[np.float64], index: tuple[int, int, int]
) -> npt.NDArray[np.float64]:
    """The affine of a sub-volume starting at voxel ``index``."""
    out = affine.copy()
    out[:3, 3] = voxel_to_patient(affine, np.asarray(index, dtype=np.float64))
    return out


class _Namer:
    """Deterministic, meaningless nested names; all series share the folders."""

    def __init__(self, root: Path, seed: int, salt: str) -> None:
        self.root, self.seed, self.salt = root, seed, salt

    def __call__(self, role: str, k: int) -> Path:
        h = hashlib.sha256(f"{self.salt}/{self.seed}/{role}/{k}".encode()).hexdigest()
        folder = self.root / f"{h[0].upper()}{h[1]}" / f"X{h[2].upper()}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"IM{h[3:15].upper()}"


def _patient_dataset(patient_id: str, study_uid: str, for_uid: str, case: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.Modality = "MR"
    ds.Manufacturer = "monai-tumor test fixture"
    ds.ManufacturerModelName = "BraTS 2013 resampled"
    ds.InstitutionName = "BraTS"
    ds.MagneticFieldStrength = "3"
    ds.PatientName = f"Glioma^{case.split('_')[2] if case.count('_') >= 2 else case}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.StudyDate = "20130101"
    ds.StudyTime = "080000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MR BRAIN W/WO CONTRAST"
    ds.BodyPartExamined = "BRAIN"
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleType = "US"
    ds.BurnedInAnnotation = "NO"
    return ds


def _write_series(
    *,
    role: str,
    base: Dataset,
    planes: list[_Plane],
    quantised: _Quantised,
    series_uid: str,
    namer: _Namer,
    uid_salt: str,
) -> tuple[Path, ...]:
    ds = base
    for key, value in _PROTOCOL[role].items():
        setattr(ds, key, value)
    if "ContrastBolusAgent" not in _PROTOCOL[role]:
        for key in ("ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusVolume"):
            if key in ds:
                delattr(ds, key)
    if "InversionTime" not in _PROTOCOL[role] and "InversionTime" in ds:
        del ds.InversionTime
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDate, ds.SeriesTime = "20130101", f"08{int(ds.SeriesNumber):02d}00"
    ds.AcquisitionNumber = 1
    ds.RescaleSlope = quantised.slope_text
    ds.RescaleIntercept = quantised.intercept_text
    written: list[Path] = []
    for k, plane in enumerate(planes):
        normal = slice_normal(plane.iop)
        frame = np.ascontiguousarray(frame_to_voxel(plane.pixels))  # [column,row] -> [row,column]
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[uid_salt, role, "sop", str(k)])
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = _ds_list(plane.iop)
        ds.ImagePositionPatient = _ds_list(plane.position)
        ds.SliceLocation = _ds(float(plane.position @ normal))
        ds.PixelSpacing = _ds_list(plane.pixel_spacing)
        ds.SliceThickness = _ds(plane.thickness)
        ds.SpacingBetweenSlices = _ds(plane.thickness)
        ds.Rows, ds.Columns = frame.shape
        ds.WindowCenter = _ds(float(quantised.intercept + quantised.slope * 0.5 * frame.max()))
        ds.WindowWidth = _ds(float(max(quantised.slope * frame.max(), 1e-3)))
        ds.PixelData = frame.astype("<u2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = namer(role, k)
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return tuple(written)


# ----------------------------------------------------------------------------- public


def write_brats_study(
    case_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    patient_id: str | None = None,
    seed: int = 0,
    sequences: Iterable[str] = SEQUENCES,
    distractors: Iterable[str] = DISTRACTORS,
    slices: tuple[int, int] | None = None,
) -> BratsStudy:
    """Write a BraTS case as a DICOM MR study (see the module docstring).

    Parameters
    ----------
    case_dir
        ``brats/<split>/<case>`` in the shared data (only read).
    out_dir
        Folder to write into (created); may already hold other studies.
    patient_id
        PatientID to write; default ``"BRATS-<case>"``. Also salts the UIDs,
        so the same case written for two patient IDs gives two studies.
    seed
        Salts file names and UIDs. The same ``(case, patient_id, seed)``
        always gives the same UIDs and file names (idempotent rewrites).
    sequences
        Real-pixel series to write, a subset of ``("flair", "t1c")`` (e.g.
        only ``("flair",)`` for a study missing its T1c).
    distractors
        Extra series, a subset of ``("flair_mpr", "localizer")``; both need
        ``"flair"`` in ``sequences``.
    slices
        ``(start, stop)``: write only NIfTI slices ``start <= k < stop`` (a
        smaller study, for tests that never run a model on it). The expected
        affine is then that of the sub-volume and the NIfTI no longer matches
        the series voxel for voxel: compare with ``nifti[..., start:stop]``.

    Returns
    -------
    BratsStudy
        Paths, UIDs and expected geometry and values of every series.
    """
    case_path = Path(case_dir)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    case = case_path.name
    patient_id = patient_id or f"BRATS-{case}"
    roles = list(sequences)
    extra = list(distractors)
    unknown = [r for r in roles if r not in SEQUENCES] + [d for d in extra if d not in DISTRACTORS]
    if unknown:
        raise ValueError(f"unknown series {unknown}; expected {SEQUENCES} and {DISTRACTORS}")
    if extra and "flair" not in roles:
        raise ValueError(f"distractors {extra} are made from the FLAIR: add 'flair' to sequences")

    salt = f"{case}/{patient_id}/{seed}"
    study_uid = generate_uid(entropy_srcs=[salt, "study"])
    for_uid = generate_uid(entropy_srcs=[salt, "frame-of-reference"])
    namer = _Namer(root, seed, salt)
    base = _patient_dataset(patient_id, study_uid, for_uid, case)
    written: dict[str, BratsSeries] = {}
    flair_q: _Quantised | None = None
    flair_aff: npt.NDArray[np.float64] | None = None
    for role in roles:
        source = _source(case_path, role)
        image = nib.Nifti1Image.from_filename(source)
        affine_ras = np.asarray(image.affine, dtype=np.float64)
        volume = np.asarray(image.dataobj, dtype=np.float32)
        if slices is not None:
            volume = volume[:, :, slices[0] : slices[1]]
            if not 0 <= slices[0] < slices[1] <= image.shape[2]:
                raise ValueError(f"slices {slices} outside 0..{image.shape[2]}")
            affine_ras = _shifted(affine_ras, (0, 0, slices[0]))
        affine_lps = ras_to_lps(affine_ras)
        q = _quantise(volume)
        series_uid = generate_uid(entropy_srcs=[salt, role, "series"])
        files = _write_series(
            role=role,
            base=base,
            planes=_planes(q.stored, affine_lps),
            quantised=q,
            series_uid=series_uid,
            namer=namer,
            uid_salt=salt,
        )
        written[role] = _series(role, series_uid, files, source, affine_ras, q)
        if role == "flair":
            flair_q, flair_aff = q, affine_lps
    for role in extra:
        assert flair_q is not None and flair_aff is not None
        if role == "flair_mpr":
            stored, affine_lps = _coronal_reformat(flair_q.stored, flair_aff)
            planes = _planes(stored, affine_lps)
            expected: npt.NDArray[np.float64] | None = lps_to_ras(affine_lps)
        else:
            planes = _localizer_planes(flair_q.stored, flair_aff)
            expected = None
        series_uid = generate_uid(entropy_srcs=[salt, role, "series"])
        files = _write_series(
            role=role,
            base=base,
            planes=planes,
            quantised=flair_q,
            series_uid=series_uid,
            namer=namer,
            uid_salt=salt,
        )
        written[role] = _series(
            role, series_uid, files, written["flair"].source_nifti, expected, flair_q
        )
    return BratsStudy(
        root=root,
        case=case,
        case_dir=case_path,
        patient_id=patient_id,
        study_uid=study_uid,
        frame_of_reference_uid=for_uid,
        series=written,
        label_nifti=_reference_label(case_path),
        brainmask_nifti=brainmask
        if (brainmask := case_path / "brainmask.nii.gz").is_file()
        else Path(),
    )


def _series(
    role: str,
    series_uid: str,
    files: tuple[Path, ...],
    source: Path,
    affine_ras: npt.NDArray[np.float64] | None,
    q: _Quantised,
) -> BratsSeries:
    protocol = _PROTOCOL[role]
    return BratsSeries(
        role=role,
        series_uid=series_uid,
        series_number=int(str(protocol["SeriesNumber"])),
        description=str(protocol["SeriesDescription"]),
        files=files,
        source_nifti=source,
        affine_ras=affine_ras,
        slope=q.slope,
        intercept=q.intercept,
    )
