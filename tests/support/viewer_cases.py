"""A synthetic CT result for the viewer tests: two lesions, patient identifiers in its headers.

The identifiers are there to be looked for, and never found, in the viewer's files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from tests.support.dicom_factory import lps_affine, write_series

__all__ = ["IDENTIFIERS", "synthetic_ct", "write_identified_series"]

IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "PID7731", "PatientBirthDate": "19700402"}


def synthetic_ct() -> np.ndarray:
    """40 x 36 x 12 CT: body at 40 HU, lesion 1 (7x7x5 voxels) and lesion 2 (4x4x3) at 300."""
    stored = np.full((40, 36, 12), -800, dtype=np.int16)
    stored[3:37, 3:33, :] = 40
    stored[6:13, 8:15, 3:8] = 300
    stored[25:29, 20:24, 6:9] = 300
    return stored


def write_identified_series(folder: Path) -> list[Path]:
    """The synthetic CT as DICOM whose headers carry a patient name, ID and birth date."""
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.7), slice_step=2.5)
    aff[:3, 3] = [-20.0, 35.0, -60.0]
    files = write_series(folder, synthetic_ct(), affine_lps=aff)
    for path in files:
        ds = pydicom.dcmread(path)
        for key, value in IDENTIFIERS.items():
            setattr(ds, key, value)
        ds.save_as(path)
    return files
