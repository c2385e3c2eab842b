"""Typed test-data lookup: pydicom's ``get_testdata_file`` is typed ``str | Dataset | None``.

It is narrowed once here, with an assertion. (NIfTI files are loaded with
``nib.Nifti1Image.from_filename``, which is typed precisely, not ``nib.load``.)
"""

from __future__ import annotations

from pydicom.data import get_testdata_file


def pydicom_testdata(name: str) -> str:
    """Path of a file from pydicom's test data (``get_testdata_file(name)``)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom test file {name!r} not found"
    return path
