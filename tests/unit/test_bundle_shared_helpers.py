"""The helpers both bundles carry are copies of one source, ``bundles/_shared/helpers.py``.

Bundles must stand alone, so each keeps its own copy in ``scripts/``; this test keeps the
copies from drifting apart: every shared definition must be textually identical to the
canonical one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.bundle_modules import is_classification_bundle

REPO = Path(__file__).resolve().parents[2]
CANONICAL = REPO / "bundles" / "_shared" / "helpers.py"
BUNDLES = sorted(
    p
    for p in (REPO / "bundles").iterdir()
    if (p / "configs").is_dir() and not is_classification_bundle(p)
)


def _definitions(path: Path) -> dict[str, str]:
    """Source text of every top-level function and class of a module, by name."""
    source = path.read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for node in ast.parse(source, filename=str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            segment = ast.get_source_segment(source, node)
            assert segment is not None
            found[node.name] = segment
    return found


def _shared() -> dict[str, tuple[str, ...]]:
    tree = ast.parse(CANONICAL.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "SHARED":
            assert node.value is not None
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    raise AssertionError(f"{CANONICAL} has no SHARED table")


def test_both_bundles_are_checked() -> None:
    assert {b.name for b in BUNDLES} >= {"brats_glioma_mri", "lung_nodule_ct"}


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_copies_equal_the_canonical_source(bundle: Path) -> None:
    canonical = _definitions(CANONICAL)
    for relative, names in _shared().items():
        copies = _definitions(bundle / relative)
        for name in names:
            assert name in canonical, f"{CANONICAL} lacks {name}"
            assert copies.get(name) == canonical[name], (
                f"{bundle.name}/{relative}: {name} differs from bundles/_shared/helpers.py; "
                "change the canonical source and paste it into every bundle"
            )


def test_a_drifted_copy_is_caught(tmp_path: Path) -> None:
    canonical = _definitions(CANONICAL)["latest_checkpoint"]
    drifted = tmp_path / "datalist.py"
    drifted.write_text(canonical.replace("checkpoint*.pt", "ckpt*.pt"), encoding="utf-8")
    assert _definitions(drifted)["latest_checkpoint"] != canonical
