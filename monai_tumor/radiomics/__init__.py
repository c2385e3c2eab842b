"""Per-lesion IBSI radiomics features (MIRP) and their verification on the IBSI phantoms.

Public names are listed once, in ``__init__.pyi``, and imported on first use
(``lazy_loader``): a feature worker process (:mod:`monai_tumor.radiomics.pool`) imports
MIRP without torch and MONAI.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
