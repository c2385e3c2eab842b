"""Evaluation: Dice, HD95 and surface Dice per class and case (MONAI metrics).

Public names are listed once, in ``__init__.pyi`` (read by type checkers), and imported
on first use (scientific-python SPEC 1, ``lazy_loader``), so importing the package stays
cheap: the header scan must not pay for torch and MONAI.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
