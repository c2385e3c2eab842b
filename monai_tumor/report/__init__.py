"""Stage: report - what a user opens in a browser to check a run's results by eye.

:mod:`~monai_tumor.report.viewer` writes a per-series 3D viewer page (NiiVue) with a
display copy of the image and mask; :mod:`~monai_tumor.report.assets` ships the pinned
NiiVue build and the pages' scripts; :mod:`~monai_tumor.report.serve` serves an output
folder on loopback for browsers that block pages opened from files.

Public names are listed once, in ``__init__.pyi``, and imported on first use
(``lazy_loader``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
