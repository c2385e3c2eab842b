"""Start-up of a process that segments (``monai-tumor infer`` and ``batch``).

:func:`prepare_inference_process` imports MONAI without the optional packages inference never
touches, freezes the import heap for the garbage collector, and sets numpy's and OpenMP's
behaviour for large arrays and waiting threads; see its docstring for what each step saves.

``import monai`` imports every MONAI submodule (``monai/__init__.py`` calls
``load_submodules``), and through MONAI's ``optional_import`` each of them imports whatever
optional package is installed, used or not. Two of them cost an inference process a third of
its MONAI import time and serve nothing it does:

- PyTorch Ignite (``monai.engines``, ``monai.handlers``: training and evaluation loops),
  about 0.7 s on a 2-core CPU, most of it ``torch.distributed`` pulled in by Ignite's
  checkpoint handler;
- ``matplotlib.pyplot`` (``monai.visualize``, notebook helpers), about 0.35 s.

A ``monai-tumor infer`` or ``batch`` process runs bundles through MONAI's transforms, inferers
and ``ConfigParser`` only (the network, pre- and post-processing of ``inference.json``; never
its evaluator or handlers) and draws its overlays with matplotlib's object API, not pyplot.
:func:`import_monai_for_inference` therefore imports MONAI while these two are hidden from
the import system, then hides nothing any more: code that imports them afterwards gets them.
MONAI keeps its own placeholders for what it could not import, so in that process
``monai.engines``/``monai.handlers`` raise MONAI's "optional dependency not installed"
error when used. The console script calls it for the inference commands only (never for
``serve``, which trains, or inside a library call), and only when MONAI is not imported yet.
MONAI has no switch for lazy submodule loading; this is the smallest way to get one.
"""

from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Literal

__all__ = [
    "INFERENCE_SKIPPED_MODULES",
    "ModuleBlocker",
    "import_monai_for_inference",
    "prepare_inference_process",
]

#: Optional packages hidden while MONAI is imported by :func:`import_monai_for_inference`.
INFERENCE_SKIPPED_MODULES: tuple[str, ...] = ("ignite", "matplotlib.pyplot")


class ModuleBlocker(importlib.abc.MetaPathFinder):
    """A meta path finder that makes the named modules, and their submodules, unimportable.

    Parameters
    ----------
    blocked
        Module names, top-level (``"ignite"``) or dotted (``"matplotlib.pyplot"``).
    reason
        Completes the error message after the module's name.
    """

    def __init__(self, blocked: Iterable[str], reason: str = "is blocked") -> None:
        self.blocked = frozenset(blocked)
        self.reason = reason

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """Raise ModuleNotFoundError for a blocked module; defer to the other finders otherwise."""
        parts = fullname.split(".")
        if any(".".join(parts[:n]) in self.blocked for n in range(1, len(parts) + 1)):
            raise ModuleNotFoundError(f"{fullname} {self.reason}", name=fullname)
        return None


def import_monai_for_inference(skip: Sequence[str] = INFERENCE_SKIPPED_MODULES) -> bool:
    """Import MONAI with ``skip`` hidden (see the module docstring), if not imported yet.

    Parameters
    ----------
    skip
        Top-level or dotted module names MONAI must not import. Modules already imported
        stay as they are.

    Returns
    -------
    bool
        ``True`` if this call imported MONAI; ``False`` if MONAI was already imported
        (nothing changed).
    """
    if "monai" in sys.modules:
        return False
    finder = ModuleBlocker(skip, "is not loaded while MONAI is imported for inference")
    sys.meta_path.insert(0, finder)
    try:
        import monai  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
    return True


def prepare_inference_process(
    modules: Sequence[str] = ("monai_tumor.pipeline",),
    *,
    openmp_wait_policy: Literal["PASSIVE", "ACTIVE"] | None = None,
) -> None:
    """Start-up of a process that segments: imports, garbage collector, memory, OpenMP.

    1. MONAI is imported by :func:`import_monai_for_inference`, then ``modules``, with the
       garbage collector paused; everything they created is then frozen (``gc.freeze``):
       those are module-level objects that live as long as the process. Without this, the
       collector re-scans that million-object heap in every full collection: 0.7 s of a
       10 s cold ``monai-tumor infer`` on 2 CPUs went to full collections.
    2. numpy's transparent-huge-page advice for large arrays is turned off, unless the
       user set ``NUMPY_MADVISE_HUGEPAGE`` (numpy's own switch): with the kernel's usual
       ``defrag=madvise`` setting, a fresh 20-70 MB array at times waited 0.15-0.45 s for
       the kernel to assemble huge pages (measured on a whole-brain volume; 0.02 s with the
       advice off), and a segmentation allocates many of them.
    3. With ``openmp_wait_policy`` (``"PASSIVE"`` for ``batch``), ``OMP_WAIT_POLICY`` is set
       for torch's OpenMP threads, unless the user set it or torch is already imported (the
       OpenMP runtime reads it once, when torch loads). Passive threads sleep instead of
       spinning while they wait: a batch run overlaps reading and writing threads with the
       network, and on a shared machine spinning threads slow everything else down.

    Parameters
    ----------
    modules
        Modules to import while the collector is paused.
    openmp_wait_policy
        ``"PASSIVE"`` or ``"ACTIVE"``; ``None`` leaves OpenMP's default.
    """
    if (
        openmp_wait_policy is not None
        and "OMP_WAIT_POLICY" not in os.environ
        and "torch" not in sys.modules
    ):
        os.environ["OMP_WAIT_POLICY"] = openmp_wait_policy
    if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
        import numpy as np

        # numpy reads the variable once at import; this is the function it calls with it
        set_advice = getattr(getattr(np, "_core", None), "multiarray", None)
        set_advice = getattr(set_advice, "_set_madvise_hugepage", None)
        if callable(set_advice):
            set_advice(False)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        import_monai_for_inference()
        for name in modules:
            importlib.import_module(name)
    finally:
        if was_enabled:
            gc.enable()
    gc.freeze()
