"""Run a bundle's workflow with only the bundle runtime importable (``bundle verify``'s smoke run).

Started by :func:`monai_tumor.bundle.verify.verify_bundle` in a subprocess as::

    python -m monai_tumor.bundle.smoke_run ARGS_JSON RUNTIME_JSON

``ARGS_JSON`` holds the keyword arguments of :func:`monai.bundle.run` (``config_file``,
``bundle_root``, ``dataset_dir``, ...); ``RUNTIME_JSON`` lists the distributions a bundle
may use (:data:`monai_tumor.bundle.verify.BUNDLE_RUNTIME`). Before the workflow starts,
every top-level module whose distributions all lie outside the dependency closure of
that runtime, and ``monai_tumor`` itself, is made unimportable, so the run behaves like
one in a bare ``pip install torch "monai[fire,ignite]" nibabel`` environment: MONAI's
optional imports then report those packages as missing, exactly as they would there.

This module imports only the standard library (and ``monai_tumor.startup``, which imports
nothing else) before the block is in place.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
from collections.abc import Iterable, Sequence

from monai_tumor.startup import ModuleBlocker

__all__ = ["blocked_modules", "main", "runtime_closure"]

#: Always allowed: packaging tools present in every environment.
_BASE = frozenset({"pip", "setuptools", "wheel"})
#: Never importable by a bundle, whatever is installed.
_OWN_PACKAGE = "monai_tumor"


def _canon(name: str) -> str:
    """Normalised distribution name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(runtime: Iterable[str]) -> set[str]:
    """Distributions a bundle may import: ``runtime`` and their non-extra requirements.

    Parameters
    ----------
    runtime
        Distribution names (e.g. ``("torch", "monai", "nibabel")``).

    Returns
    -------
    set of str
        Normalised names of the installed distributions in the closure, plus pip,
        setuptools and wheel.
    """
    roots = {_canon(n) for n in runtime}
    allowed: set[str] = set(_BASE)
    stack = sorted(roots)
    while stack:
        name = stack.pop()
        if name in allowed and name not in roots:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        allowed.add(name)
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            dep = _canon(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
            if dep not in allowed:
                stack.append(dep)
    return allowed


def blocked_modules(runtime: Iterable[str]) -> set[str]:
    """Top-level modules a bundle may not import.

    Every installed top-level module none of whose distributions is in
    :func:`runtime_closure`, and ``monai_tumor``; never a standard-library module.
    """
    allowed = runtime_closure(runtime)
    blocked = {_OWN_PACKAGE}
    for module, dists in md.packages_distributions().items():
        if not any(_canon(d) in allowed for d in dists):
            blocked.add(module)
    return blocked - set(sys.stdlib_module_names)


def main(argv: Sequence[str] | None = None) -> None:
    """Block everything outside the bundle runtime, then ``monai.bundle.run(**args)``.

    Parameters
    ----------
    argv
        ``[ARGS_JSON, RUNTIME_JSON]``; default ``sys.argv[1:]``.
    """
    args_json, runtime_json = list(sys.argv[1:] if argv is None else argv)
    args = json.loads(args_json)
    blocker = ModuleBlocker(
        blocked_modules(json.loads(runtime_json)),
        "is not available to bundles (only torch, monai, nibabel and their dependencies; "
        "blocked by monai-tumor bundle verify)",
    )
    # `python -m` imported this package (and its parents) before the block existed: forget
    # them, so that a bundle's `import monai_tumor...` goes through the finders and fails.
    for name in [n for n in sys.modules if n.partition(".")[0] in blocker.blocked]:
        del sys.modules[name]
    sys.meta_path.insert(0, blocker)
    from monai.bundle import run

    run(**args)


if __name__ == "__main__":
    main()
