"""Shared fixtures: where the real data lives, skip/fail rules for it, a patient key, a cache.

The tests are laid out as

- ``tests/unit/``: fast tests of one module each (synthetic data, or a few real files);
  ``pytest tests/unit`` is the inner loop;
- ``tests/e2e/``: tests that run whole bundles, batches or the CLI end to end (training
  smoke runs, kill-and-resume, standalone bundles, DICOM in to DICOM SEG out);
- ``tests/support/``: builders of synthetic and real-data test exports, imported by
  tests as ``tests.support.<module>``; the modules holding fixtures are registered below.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monai_tumor.bundle.imports import SCRIPTS_PACKAGE
from monai_tumor.config import CACHE_ENV_VAR, DATA_ENV_VAR, PATIENT_KEY_ENV_VAR, data_root

pytest_plugins = ["tests.support.annotation_server", "tests.support.batch_export"]

#: The patient key of the test session (tests never touch the user's key file).
TEST_PATIENT_KEY = "monai-tumor-test-patient-key-0123456789"


@pytest.fixture(scope="session", autouse=True)
def patient_key_env() -> Iterator[bytes]:
    """Hash patient IDs with a fixed test key, inherited by CLI subprocesses too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PATIENT_KEY_ENV_VAR, TEST_PATIENT_KEY)
        yield TEST_PATIENT_KEY.encode("utf-8")


@pytest.fixture(scope="session", autouse=True)
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep default scan indexes in a session folder, never in the user's real cache."""
    cache = tmp_path_factory.mktemp("monai-tumor-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV_VAR, str(cache))
        yield cache


def _bundle_imports() -> tuple[list[str], set[str]]:
    prefix = SCRIPTS_PACKAGE + "."
    scripts = {n for n in sys.modules if n == SCRIPTS_PACKAGE or n.startswith(prefix)}
    return list(sys.path), scripts


@pytest.fixture(autouse=True)
def no_leaked_bundle_imports(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that leaves a bundle's ``scripts`` modules or root behind in the process.

    pytest-xdist shares a worker between test files in an order that changes from run to run,
    so a leak would otherwise surface (or not) in whichever later test happens to look.
    """
    path, scripts = _bundle_imports()
    yield
    path_after, scripts_after = _bundle_imports()
    added = [p for p in path_after if p not in path]
    if added or scripts_after - scripts:
        pytest.fail(
            f"{request.node.nodeid} left bundle imports behind: sys.path + {added}, "
            f"modules + {sorted(scripts_after - scripts)} (use monai_tumor.bundle.imports."
            "bundle_scripts)"
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of the shared real data (``$MONAI_TUMOR_DATA``, default ``../shared/data``).

    Missing outside CI: the test is skipped with a message saying what to set.
    Missing in CI (``CI=true``): the test fails.
    """
    root = data_root()
    if not (root / "README.md").is_file():
        message = (
            f"real data not found at {root}; set {DATA_ENV_VAR} to the folder holding "
            "sts/, lung1/, brats/, lidc_nodules/, ct_jpeg2000/, dcm_qa_ts/, dcmqi_seg/"
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return root
