"""Acquisition fields of a series for JSON sidecars, with no patient identifiers.

The field names follow DICOM keywords (as dcm2niix's BIDS sidecars do for most
of them). Only acquisition and equipment attributes are copied; every
attribute that identifies or describes the patient (names, IDs, birth date,
sex, age, dates and times, institution, operators) is left out by design: the
list below is an allow-list, not a deny-list. Free-text fields
(SeriesDescription, ProtocolName, ...) are also scrubbed of the patient's name
and ID, which exports sometimes copy into them.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import IS, DSfloat

__all__ = [
    "ACQUISITION_FIELDS",
    "REDACTED",
    "acquisition_fields",
    "identifier_strings",
    "redact_free_text",
    "redact_identifiers",
]

#: DICOM keywords copied into sidecars when present (an allow-list).
ACQUISITION_FIELDS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "BodyPartExamined",
    "SeriesDescription",
    "ProtocolName",
    "SeriesNumber",
    "ImageType",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "SequenceName",
    "MRAcquisitionType",
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
    "FlipAngle",
    "EchoTrainLength",
    "SliceThickness",
    "SpacingBetweenSlices",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "ConvolutionKernel",
    "ReconstructionDiameter",
    "ContrastBolusAgent",
    "Units",
    "DecayCorrection",
    "RescaleType",
    "PhotometricInterpretation",
    "BitsStored",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SOPClassUID",
)


#: Replacement for identifier text found inside free-text fields.
REDACTED = "[redacted]"


def identifier_strings(dataset: Dataset | None) -> list[str]:
    """Patient name (and its parts), ID and other IDs as they may appear in free text.

    Parameters
    ----------
    dataset
        A header of the patient's series, or ``None`` (no identifiers known).

    Returns
    -------
    list of str
        Strings of at least three characters, longest first, for
        :func:`redact_identifiers`. Keep them in memory only; never log them.
    """
    if dataset is None:
        return []
    values = [
        str(dataset.get(keyword, "") or "").strip()
        for keyword in ("PatientID", "PatientName", "OtherPatientIDs")
    ]
    return _split_identifiers([v for v in values if v])


def redact_identifiers(text: str, identifiers: list[str]) -> str:
    """Replace every case-insensitive occurrence of ``identifiers`` in ``text``.

    Parameters
    ----------
    text
        Free text (a selection reason, an error message, a description).
    identifiers
        From :func:`identifier_strings`.

    Returns
    -------
    str
        ``text`` with each identifier replaced by :data:`REDACTED`.
    """
    scrubbed: str = _scrub(text, identifiers)
    return scrubbed


def redact_free_text(text: str, *, patient_id: str | None) -> str:
    """Replace occurrences of the patient's ID inside a free-text value.

    Exports often carry the PatientID inside SeriesDescription or ProtocolName
    (e.g. ``"IBSI_1_STS_002_MR_T1_image"``); such text must not reach logs,
    tables or outputs.

    Parameters
    ----------
    text
        A free-text attribute value (SeriesDescription, StudyDescription, ...).
    patient_id
        PatientID (0010,0020) of the same instance, or ``None``.

    Returns
    -------
    str
        ``text`` with every case-insensitive occurrence of the ID (and of its
        parts of three or more characters) replaced by :data:`REDACTED`.
    """
    if not patient_id or not patient_id.strip():
        return text
    scrubbed: str = _scrub(text, list(_id_identifiers(patient_id.strip())))
    return scrubbed


@functools.lru_cache(maxsize=256)
def _id_identifiers(patient_id: str) -> tuple[str, ...]:
    # memoised: a scan calls redact_free_text for every file of the same few patients
    return tuple(_split_identifiers([patient_id]))


def _split_identifiers(values: list[str]) -> list[str]:
    found: list[str] = []
    for value in values:
        found.append(value)
        found.extend(part for part in value.replace("^", " ").split() if len(part) >= 3)
    # longest first so "SMITH^JOHN" is replaced before "SMITH"
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def _scrub(value: Any, identifiers: list[str]) -> Any:
    if isinstance(value, str):
        folded = value.casefold()
        for ident in identifiers:
            # cheap containment test first: the scan calls this for every file
            if ident.casefold() in folded:
                value = re.sub(re.escape(ident), REDACTED, value, flags=re.IGNORECASE)
                folded = value.casefold()
        return value
    if isinstance(value, list):
        return [_scrub(v, identifiers) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, DSfloat | float):
        return float(value)
    if isinstance(value, IS | int):
        return int(value)
    if isinstance(value, bytes):
        return None
    return str(value)


def acquisition_fields(dataset: Dataset) -> dict[str, Any]:
    """Return the allow-listed acquisition attributes of a DICOM header.

    Parameters
    ----------
    dataset
        Any instance of the series (header only is enough).

    Returns
    -------
    dict
        DICOM keyword to JSON-serialisable value, for every keyword in
        :data:`ACQUISITION_FIELDS` present and non-empty in ``dataset``.
        Never contains patient identifiers: occurrences of the patient's name
        or ID inside free-text values are replaced by ``"[redacted]"``.
    """
    identifiers = identifier_strings(dataset)
    out: dict[str, Any] = {}
    for keyword in ACQUISITION_FIELDS:
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        converted = _jsonable(value)
        if converted is not None:
            out[keyword] = _scrub(converted, identifiers)
    return out
