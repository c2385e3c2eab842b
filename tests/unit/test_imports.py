"""Tests for monai_tumor.bundle.imports: one bundle's `scripts` package at a time."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from monai_tumor.bundle.imports import SCRIPTS_PACKAGE, bundle_scripts


def _make_bundle(root: Path, marker: str) -> Path:
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "__init__.py").write_text(f"MARKER = {marker!r}\n")
    (root / "scripts" / "helpers.py").write_text("VALUE = 1\n")
    return root


@pytest.fixture
def clean_scripts() -> Iterator[None]:
    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] == SCRIPTS_PACKAGE}
    saved_path = list(sys.path)
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == SCRIPTS_PACKAGE]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path[:] = saved_path


@pytest.mark.usefixtures("clean_scripts")
def test_each_bundle_sees_its_own_scripts(tmp_path: Path) -> None:
    first = _make_bundle(tmp_path / "first", "first")
    second = _make_bundle(tmp_path / "second", "second")
    with bundle_scripts(first):
        assert importlib.import_module("scripts").MARKER == "first"
        importlib.import_module("scripts.helpers")
    with bundle_scripts(second):
        assert importlib.import_module("scripts").MARKER == "second"
    assert SCRIPTS_PACKAGE not in sys.modules and "scripts.helpers" not in sys.modules
    assert str(first) not in sys.path and str(second) not in sys.path


@pytest.mark.usefixtures("clean_scripts")
@pytest.mark.parametrize("fails", [False, True], ids=["normal", "exception"])
def test_sys_path_and_modules_are_restored(tmp_path: Path, fails: bool) -> None:
    bundle = _make_bundle(tmp_path / "b", "b")
    earlier = types.ModuleType(SCRIPTS_PACKAGE)
    sys.modules[SCRIPTS_PACKAGE] = earlier
    path_before = list(sys.path)
    expect: AbstractContextManager[object] = pytest.raises(RuntimeError) if fails else nullcontext()
    with expect, bundle_scripts(bundle):
        assert SCRIPTS_PACKAGE not in sys.modules  # the earlier one is set aside
        sys.path.insert(0, str(tmp_path / "inserted by a config"))
        importlib.import_module("scripts")
        if fails:
            raise RuntimeError("config failed")
    assert sys.path == path_before
    assert sys.modules[SCRIPTS_PACKAGE] is earlier


@pytest.mark.usefixtures("clean_scripts")
def test_nested_use_in_one_thread(tmp_path: Path) -> None:
    outer = _make_bundle(tmp_path / "outer", "outer")
    inner = _make_bundle(tmp_path / "inner", "inner")
    with bundle_scripts(outer):
        assert importlib.import_module("scripts").MARKER == "outer"
        with bundle_scripts(inner):
            assert importlib.import_module("scripts").MARKER == "inner"
        assert importlib.import_module("scripts").MARKER == "outer"
