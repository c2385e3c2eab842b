"""The lazily loaded packages' ``__init__.pyi`` stubs: imports and ``__all__`` agree.

Each stub lists a public name twice, once as an import (what ``lazy_loader`` loads) and once
in ``__all__`` (what type checkers re-export from a stub). These tests keep the two lists
and the runtime package in step.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "monai_tumor"
STUBS = sorted(PACKAGE.glob("*/__init__.pyi"))


def _stub_names(stub: Path) -> tuple[list[str], list[str]]:
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    imported = [
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    declared: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            declared = list(ast.literal_eval(node.value))
    return imported, declared


def test_every_lazy_package_has_a_stub() -> None:
    lazy = sorted(
        p.parent.name
        for p in PACKAGE.glob("*/__init__.py")
        if "attach_stub" in p.read_text(encoding="utf-8")
    )
    assert lazy == [s.parent.name for s in STUBS]


@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.parent.name)
def test_stub_all_lists_exactly_its_imports(stub: Path) -> None:
    imported, declared = _stub_names(stub)
    assert len(declared) == len(set(declared)), "a name is listed twice in __all__"
    assert sorted(declared) == sorted(imported)


@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.parent.name)
def test_runtime_package_exports_the_stub_names(stub: Path) -> None:
    _, declared = _stub_names(stub)
    module = importlib.import_module(f"monai_tumor.{stub.parent.name}")
    assert sorted(module.__all__) == sorted(declared)
    for name in declared:
        assert getattr(module, name) is not None, name
