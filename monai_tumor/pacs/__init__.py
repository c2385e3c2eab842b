"""PACS connections: DICOMweb (QIDO-RS, WADO-RS, STOW-RS) and DICOM networking (DIMSE).

Public names are listed once, in ``__init__.pyi`` (read by type checkers), and imported
on first use (scientific-python SPEC 1, ``lazy_loader``), so importing the package does
not pull in the HTTP and DICOM network stacks until they are used.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
