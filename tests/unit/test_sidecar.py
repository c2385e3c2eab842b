from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from monai_tumor.ingest.sidecar import ACQUISITION_FIELDS, acquisition_fields

IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
)


def test_allow_list_has_no_identifying_keywords() -> None:
    assert not set(ACQUISITION_FIELDS) & set(IDENTIFYING)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "rel",
    ["lung1/LUNG1-001/image/1-001.dcm", "sts/STS_002/MR_T1/dicom/image/000000.dcm"],
)
def test_real_header_fields_are_json_and_identifier_free(data_dir: Path, rel: str) -> None:
    ds = pydicom.dcmread(data_dir / rel, stop_before_pixels=True)
    fields = acquisition_fields(ds)
    text = json.dumps(fields)
    assert fields["Modality"] == ds.Modality
    assert fields["SeriesInstanceUID"] == ds.SeriesInstanceUID
    for keyword in ("PatientName", "PatientID"):
        value = str(ds.get(keyword, "")).strip()
        if len(value) > 3:
            assert value not in text
    assert not set(fields) & set(IDENTIFYING)


def test_identifiers_inside_free_text_are_redacted() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "PAT-0042"
    ds.Modality = "MR"
    ds.SeriesDescription = "PAT-0042 T1 post Doe"
    ds.ProtocolName = "jane DOE flair"
    fields = acquisition_fields(ds)
    text = json.dumps(fields)
    assert "PAT-0042" not in text
    assert "doe" not in text.lower()
    assert "jane" not in text.lower()
    assert fields["SeriesDescription"].startswith("[redacted] T1 post")
