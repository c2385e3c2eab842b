"""One bundle's ``scripts`` package at a time (owner of ``sys.path``/``sys.modules`` changes).

Every Model Zoo bundle ships its helpers as a top-level package named ``scripts`` and puts its
own root on ``sys.path``; two bundles used in one process would otherwise see whichever
``scripts`` was imported first, and the bundle roots would pile up on ``sys.path``. Loading,
verifying and training a bundle all go through :func:`bundle_scripts`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["SCRIPTS_PACKAGE", "bundle_scripts"]

#: Top-level package name of a bundle's helpers (Model Zoo convention).
SCRIPTS_PACKAGE = "scripts"

# Re-entrant: a bundle may be loaded while another block of the same thread holds it.
_IMPORT_LOCK = threading.RLock()


def _evict() -> dict[str, Any]:
    names = [n for n in sys.modules if n == SCRIPTS_PACKAGE or n.startswith(SCRIPTS_PACKAGE + ".")]
    return {n: sys.modules.pop(n) for n in names}


@contextmanager
def bundle_scripts(root: str | Path) -> Iterator[None]:
    """Make ``import scripts`` find ``root/scripts`` for the duration of the block.

    Any ``scripts`` modules imported before are set aside and restored afterwards, those
    imported inside the block are forgotten, and ``sys.path`` is restored exactly (a config
    that inserts its ``bundle_root`` leaves nothing behind). Threads take turns.

    Parameters
    ----------
    root
        The bundle folder (the one holding ``scripts/``).
    """
    with _IMPORT_LOCK:
        saved_modules = _evict()
        saved_path = list(sys.path)
        sys.path.insert(0, str(root))
        try:
            yield
        finally:
            _evict()
            sys.path[:] = saved_path
            sys.modules.update(saved_modules)
