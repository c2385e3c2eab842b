"""Typed loaders for the tests: library calls typed wider than what the tests load.

``nib.load`` is typed as returning the ``FileBasedImage`` base class (no ``shape``,
``affine``, ``dataobj``, ``get_fdata``), and pydicom's ``get_testdata_file`` as
``str | Dataset | None``. Each is narrowed once here, with an assertion.
"""

from __future__ import annotations

import os

import nibabel as nib
from pydicom.data import get_testdata_file


def load_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """``nib.load`` for a NIfTI file (``Nifti2Image`` subclasses ``Nifti1Image``)."""
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image), f"{path}: not NIfTI ({type(img).__name__})"
    return img


def pydicom_testdata(name: str) -> str:
    """Path of a file from pydicom's test data (``get_testdata_file(name)``)."""
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom test file {name!r} not found"
    return path
