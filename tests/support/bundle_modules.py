"""Load one of a bundle's ``scripts/*.py`` files as a module of its own, for unit tests.

Every bundle names its helper package ``scripts``, so importing ``scripts.x`` in the test
process would pick whichever bundle came first. Each file is loaded under a private name
instead (``_<bundle>_<name>``), registered in ``sys.modules`` (dataclasses look their module
up there), and never as ``scripts``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_bundle_script"]


def load_bundle_script(bundle: Path, name: str) -> ModuleType:
    """Load ``bundle/scripts/<name>.py`` as the module ``_<bundle name>_<name>``.

    Parameters
    ----------
    bundle
        The bundle folder.
    name
        The file name without ``.py``.

    Returns
    -------
    ModuleType
        The executed module.
    """
    spec = importlib.util.spec_from_file_location(
        f"_{bundle.name}_{name}", bundle / "scripts" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
