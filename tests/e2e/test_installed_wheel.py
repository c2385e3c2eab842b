"""``monai-tumor bundle verify`` from an installed wheel, in a fresh venv, outside the repository.

Why this is a faithful check of what a user gets: the wheel is built from the package
sources alone (copied out of the checkout, so nothing of the repository comes along) and
installed with pip into a new virtual environment; the command runs from another folder,
with ``PYTHONPATH`` and ``MONAI_TUMOR_DATA`` unset, so the schema, the smoke-run module and
everything else must come from the installed package. The only shortcut is the
dependencies: instead of downloading torch, MONAI, ... again, a ``.pth`` file puts the
test environment's site-packages on the new venv's path (after its own site-packages,
so the installed monai_tumor wins; ``.pth`` files inside that folder, such as an editable
install of this checkout, are not processed). The versions are then exactly those the
test suite runs with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from monai_tumor.report.assets import NIIVUE_FILE, NIIVUE_SHA256, VIEWER_ASSETS
from tests.support.tiny_bundle import make_tiny_bundle

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the monai-tumor wheel installed; returns (its bin folder, env)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "monai_tumor", src / "monai_tumor", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MONAI_TUMOR_DATA"}}
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "-q", "-w", str(root / "dist"), str(src)], cwd=root, env=env)
    (wheel,) = (root / "dist").glob("monai_tumor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "monai_tumor/bundle/schemas/meta_schema_20240725.json" in names
    assert "monai_tumor/bundle/smoke_run.py" in names

    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], cwd=root, env=env)
    python = venv / "bin" / "python"
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        cwd=root,
        env=env,
    ).stdout.strip()
    shared = sysconfig.get_path("purelib")
    (Path(site) / "_test_dependencies.pth").write_text(shared + "\n", encoding="utf-8")
    _run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], cwd=root, env=env)
    return venv / "bin", env


def test_installed_package_is_the_wheel(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bin_dir, env = installed
    out = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import monai_tumor, monai_tumor.bundle as b; print(monai_tumor.__file__); "
            "print(b.default_schema()); print(monai_tumor.__version__)",
        ],
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    venv = bin_dir.parent
    assert all(Path(p).is_relative_to(venv) for p in out[:2]), out
    assert not any(Path(p).is_relative_to(REPO) for p in out[:2]), out
    assert out[2] != "0+unknown"  # read from the installed distribution's metadata


def test_bundle_verify_from_the_installed_wheel(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bin_dir, env = installed
    bundle = make_tiny_bundle(tmp_path / "bundle")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = subprocess.run(
        [str(bin_dir / "monai-tumor"), "bundle", "verify", str(bundle), "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert report["passed"] and set(statuses.values()) == {"pass"}, report
    # the schema came from the package, the smoke run ran the installed smoke_run module
    schema = next(c for c in report["checks"] if c["name"] == "metadata_schema")
    assert "meta_schema_20240725.json" in schema["message"]


def test_viewer_assets_from_the_installed_wheel(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """NiiVue and the pages' scripts ship in the wheel: a run gets them with no checkout."""
    bin_dir, env = installed
    code = (
        "import sys; from monai_tumor.report.assets import install_viewer_assets; "
        "print(install_viewer_assets(sys.argv[1]))"
    )
    out = _run([str(bin_dir / "python"), "-c", code, str(tmp_path)], cwd=tmp_path, env=env)
    folder = Path(out.stdout.strip())
    assert sorted(p.name for p in folder.iterdir()) == sorted(VIEWER_ASSETS)
    data = (folder / NIIVUE_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == NIIVUE_SHA256
