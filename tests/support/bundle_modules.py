"""Load one of a bundle's ``scripts/*.py`` files as a module of its own, for unit tests.

Every bundle names its helper package ``scripts``, so importing ``scripts.x`` in the test
process would pick whichever bundle came first. Each file is loaded under a private name
instead (``_<bundle>_<name>``), registered in ``sys.modules`` (dataclasses look their module
up there), and never as ``scripts``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["is_classification_bundle", "load_bundle_script", "run_bundle_standalone"]


def is_classification_bundle(bundle: Path) -> bool:
    """``monai_tumor.task`` of the bundle's metadata is ``"classification"``.

    Classification bundles (``lung_nodule_malignancy``) write ``predictions.csv``, not label
    maps: the segmentation layouts and the shared segmentation helpers do not apply to them
    (``bundle verify`` covers both kinds); their own test file checks metadata, TorchScript
    and standalone runs.
    """
    import json

    meta = bundle / "configs" / "metadata.json"
    if not meta.is_file():
        return False
    block = json.loads(meta.read_text(encoding="utf-8")).get("monai_tumor") or {}
    return block.get("task") == "classification"


# Runs `python -m monai.bundle ...` with monai_tumor made unimportable: the bundle must be
# self-contained (monai, torch, nibabel only).
_STANDALONE = (
    "import sys, runpy; sys.modules['monai_tumor'] = None; "
    "sys.argv = ['monai.bundle'] + sys.argv[1:]; "
    "runpy.run_module('monai.bundle', run_name='__main__')"
)


def run_bundle_standalone(
    bundle: Path, args: list[str], data_dir: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m monai.bundle ARGS`` in ``bundle`` without monai_tumor; fail on error."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MONAI_TUMOR_DATA=str(data_dir))
    proc = subprocess.run(
        [sys.executable, "-c", _STANDALONE, *args],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln]
        pytest.fail(f"bundle run failed: {errors[:3]}\n{proc.stderr[-3000:]}")
    return proc


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
