"""Copies of an instance: the intact one is used, a truncated one is skipped with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_tumor.errors import IngestError
from monai_tumor.ingest.enums import SkipReason
from monai_tumor.ingest.headers import inspect_file
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.reader import read_series
from monai_tumor.ingest.records import InstanceHeader
from monai_tumor.ingest.scan import scan_export
from tests.support.dicom_factory import lps_affine, write_series

KEY = b"truncation-test-key-0123"


def _export(root: Path, *, transfer_syntax: str = "1.2.840.10008.1.2.1") -> list[Path]:
    """A 6-slice CT, and in another folder (sorting first) a cut copy of its slice 2."""
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    stored = np.arange(16 * 14 * 6, dtype=np.int16).reshape(16, 14, 6)
    files = write_series(
        root / "series", stored, affine_lps=aff, transfer_syntax=pydicom.uid.UID(transfer_syntax)
    )
    junk = root / "a_junk"
    junk.mkdir()
    data = files[2].read_bytes()
    (junk / "cut.dcm").write_bytes(data[: len(data) - 200])
    return files


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
def test_header_scan_knows_a_file_is_truncated(tmp_path: Path, syntax: str) -> None:
    files = _export(tmp_path, transfer_syntax=syntax)  # native, and RLE (encapsulated)
    cut = inspect_file(tmp_path / "a_junk" / "cut.dcm", patient_key=KEY)
    intact = inspect_file(files[2], patient_key=KEY)
    assert isinstance(cut, InstanceHeader) and isinstance(intact, InstanceHeader)
    assert intact.truncated == ""
    assert "the file holds" in cut.truncated or "without its sequence delimiter" in cut.truncated


def test_the_intact_copy_is_used_and_the_cut_one_listed(tmp_path: Path) -> None:
    files = _export(tmp_path)
    index_path = tmp_path / "index.sqlite"
    result = scan_export(tmp_path, index_path=index_path, workers=1, progress=False)
    (series,) = result.series
    assert series.number_of_slices == 6 and series.uniform
    (skipped,) = [s for s in result.skipped if s.path.name == "cut.dcm"]
    assert skipped.reason is SkipReason.TRUNCATED
    assert "truncated copy" in skipped.detail and "the file holds" in skipped.detail
    with SeriesIndex(index_path) as index:
        chosen = index.files_for_series(series.series_instance_uid)
    assert sorted(chosen) == sorted(files)
    volume = read_series(chosen)
    assert volume.shape[-1] == 6


def test_an_instance_with_no_intact_copy_fails_naming_the_file(tmp_path: Path) -> None:
    files = _export(tmp_path)
    files[2].unlink()  # the cut copy is all there is of slice 2
    index_path = tmp_path / "index.sqlite"
    result = scan_export(tmp_path, index_path=index_path, workers=1, progress=False)
    (series,) = result.series
    with SeriesIndex(index_path) as index:
        chosen = index.files_for_series(series.series_instance_uid)
    assert tmp_path / "a_junk" / "cut.dcm" in chosen
    with pytest.raises(IngestError, match=r"cut\.dcm.*truncated"):
        read_series(chosen)
