"""No patient name, ID or birth date in any log line, output path, report or sidecar.

A synthetic export carries distinctive identifiers in the places real exports put
them: the patient attributes, free-text descriptions and the folder names. A batch
run (log file and terminal at INFO, library warnings included) and a conversion
must leave none of them anywhere but in the DICOM SEG, which keeps the source's
patient identity as the standard requires.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_tumor.export.convert import convert_series
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.logs import RUN_LOG_NAME, routed_logging
from monai_tumor.pipeline.batch import BatchOptions, SeriesStatus, run_batch
from tests.support.dicom_factory import lps_affine, write_series
from tests.support.pipeline_doubles import ThresholdSegmenter, fake_bundle_info

NAME_FAMILY, NAME_GIVEN = "Quentinzebra", "Xylophona"
PATIENT_ID = "PHI4471829"
BIRTH_DATE = "19230417"
IDENTIFIERS = (NAME_FAMILY, NAME_GIVEN, PATIENT_ID, BIRTH_DATE)


def _export(root: Path) -> Path:
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    stored = np.zeros((16, 14, 8), dtype=np.int16)
    stored[4:9, 3:8, 1:4] = 300
    folder = root / f"{PATIENT_ID}_{NAME_FAMILY}" / f"CT_{BIRTH_DATE}"
    files = write_series(folder, stored, affine_lps=aff)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PatientName = f"{NAME_FAMILY}^{NAME_GIVEN}"
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = BIRTH_DATE
        ds.SeriesDescription = f"CHEST {PATIENT_ID} {NAME_FAMILY}"
        ds.StudyDescription = f"CT for {NAME_FAMILY}^{NAME_GIVEN}"
        ds.save_as(path)
    return folder


def _text_of(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("latin-1")


def _leaks(text: str) -> list[str]:
    folded = text.casefold()
    return [i for i in IDENTIFIERS if i.casefold() in folded]


@pytest.fixture
def fake_bundle(tmp_path: Path) -> BundleInfo:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps({"selections": [{"name": "ct", "conditions": {"Modality": "(?i)^CT$"}}]})
    )
    return fake_bundle_info(tmp_path, selection_rules=rules)


def test_no_identifier_in_logs_paths_reports_or_sidecars(
    tmp_path: Path, fake_bundle: BundleInfo
) -> None:
    series = _export(tmp_path / "export")
    out = tmp_path / "out"
    terminal = io.StringIO()
    with routed_logging(verbose=True, log_file=out / RUN_LOG_NAME, stream=terminal):
        result = run_batch(
            tmp_path / "export",
            out,
            bundle=fake_bundle,
            # The scan index is a cache of the export (its file paths included), kept
            # beside it rather than with the outputs; see docs/security.md.
            options=BatchOptions(progress=False, workers=1, index_path=tmp_path / "index.sqlite"),
            segmenter=ThresholdSegmenter(),
        )
        converted = convert_series(series, out / "converted" / "ct.nii.gz")
    assert [r.status for r in result.records] == [SeriesStatus.DONE]
    assert converted.sidecar.is_file()
    # What the run wrote: report, per-series outputs, index, log; all but the SEG clean.
    written = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"summary.json", "summary.csv", "index.html", "lesions.json", "mask.nii.gz"} <= names
    assert {RUN_LOG_NAME, "overlay.png", "ct.json"} <= names
    segs = [p for p in written if p.name == "seg.dcm"]
    assert len(segs) == 1
    for path in written:
        relative = path.relative_to(out).as_posix()
        assert not _leaks(relative), f"identifier in output path {relative}"
        if path.suffix == ".dcm":
            continue
        assert not _leaks(_text_of(path)), f"identifier in {relative}: {_leaks(_text_of(path))}"
    log_text = (out / RUN_LOG_NAME).read_text()
    assert "done" in log_text  # the log is not empty: the INFO records are there
    assert not _leaks(log_text) and not _leaks(terminal.getvalue())
    # The SEG keeps the patient's identity, as it must.
    seg = pydicom.dcmread(segs[0])
    assert seg.PatientID == PATIENT_ID and str(seg.PatientBirthDate) == BIRTH_DATE
