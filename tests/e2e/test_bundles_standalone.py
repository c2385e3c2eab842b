"""Each real bundle runs from a bare venv (torch, monai, nibabel; no monai_tumor) on real data.

The venv is built once per session: ``python -m venv`` then ``pip install torch==2.13.0
monai[fire,ignite]==<installed> nibabel`` (torch from the local wheel pip is configured
with). ``fire`` is what ``python -m monai.bundle`` needs for its command line and
``ignite`` what Model Zoo style configs (``SupervisedEvaluator``, ``CheckpointLoader``)
need: both are MONAI's own optional extras, not project code.

Inputs come from the shared data, read in place (symlinked into a temporary
``dataset_dir``), chosen by the bundle's declared input layout only
(``metadata["monai_tumor"]["input_layout"]``, see docs/bundle_format.md):
``case_folders`` -> one BraTS validation case, ``files`` -> three LIDC nodule VOIs,
unless the layout names ``example_inputs`` (globs relative to the data root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_tumor.bundle.verify import LayoutKind, read_input_layout
from tests.support.bundle_modules import is_classification_bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(
    p
    for p in (REPO / "bundles").glob("*")
    if (p / "configs" / "inference.json").is_file()
    and (p / "configs" / "metadata.json").is_file()
    and not is_classification_bundle(p)
)
DEFAULT_INPUTS = {
    LayoutKind.CASE_FOLDERS: ["brats/validation/brats_2013_pat0003_1"],
    LayoutKind.FILES: [
        "lidc_nodules/image/LIDC-IDRI-0001_R_1.nii.gz",
        "lidc_nodules/image/LIDC-IDRI-0003_R_2.nii.gz",
        "lidc_nodules/image/LIDC-IDRI-0004_R_1.nii.gz",
    ],
}


def _installed(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a fresh venv holding only torch, monai (+fire, ignite) and nibabel."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    python = root / "bin" / "python"
    torch_version = _installed("torch").split("+")[0]
    packages = [
        f"torch=={torch_version}",
        f"monai[fire,ignite]=={_installed('monai')}",
        "nibabel",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *packages],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python


def _bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_bare_venv_has_no_monai_tumor(bare_python: Path) -> None:
    listed = subprocess.run(
        [str(bare_python), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env=_bare_env(),
        check=True,
    )
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"torch", "monai", "nibabel"} <= names
    assert "monai-tumor" not in names
    for absent in ("scipy", "pydicom", "highdicom", "simpleitk", "scikit-image"):
        assert absent not in names, f"{absent} leaked into the bare venv"
    probe = subprocess.run(
        [str(bare_python), "-c", "import monai_tumor"],
        capture_output=True,
        cwd=bare_python.parent,
        env=_bare_env(),
        check=False,
    )
    assert probe.returncode != 0
    assert sys.prefix != str(bare_python.parent.parent)


def _stage_inputs(bundle: Path, data_dir: Path, dataset_dir: Path) -> dict[str, Path]:
    """Symlink the real inputs into ``dataset_dir``; return case -> a file on the input grid."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    layout = read_input_layout(meta)
    raw = meta["monai_tumor"]["input_layout"].get("example_inputs")
    patterns = list(raw) if raw else DEFAULT_INPUTS[layout.kind]
    sources = sorted({p for pattern in patterns for p in data_dir.glob(pattern)})
    assert sources, f"no example inputs for {bundle.name} in {data_dir}: {patterns}"
    dataset_dir.mkdir()
    cases: dict[str, Path] = {}
    for src in sources:
        (dataset_dir / src.name).symlink_to(src, target_is_directory=src.is_dir())
        if layout.kind is LayoutKind.CASE_FOLDERS:
            grid = sorted(src.glob(layout.image_files[0]))
            assert grid, f"{src} has no {layout.image_files[0]}"
            cases[src.name] = grid[0]
        else:
            cases[src.name.removesuffix(".gz").removesuffix(".nii")] = src
    return cases


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundle_runs_standalone(
    bundle: Path, bare_python: Path, data_dir: Path, tmp_path: Path
) -> None:
    cases = _stage_inputs(bundle, data_dir, tmp_path / "in")
    out = tmp_path / "out"
    command = [
        str(bare_python),
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--logging_file",
        str(bundle / "configs" / "logging.conf"),
        "--bundle_root",
        str(bundle),
        "--dataset_dir",
        str(tmp_path / "in"),
        "--output_dir",
        str(out),
    ]
    proc = subprocess.run(
        command,
        cwd=tmp_path,
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    errors = [ln.strip() for ln in proc.stderr.splitlines() if "Error: " in ln]
    assert proc.returncode == 0, (list(dict.fromkeys(errors))[:5], proc.stderr[-2000:])
    for case, source in cases.items():
        written = out / f"{case}.nii.gz"
        found = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        assert written.is_file(), f"{written.name} not written; output_dir has {found[:10]}"
        pred, image = (
            nib.Nifti1Image.from_filename(str(written)),
            nib.Nifti1Image.from_filename(str(source)),
        )
        assert pred.shape[:3] == image.shape[:3]
        assert all(s == 1 for s in pred.shape[3:])
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-3)
        labels = np.unique(np.asarray(pred.dataobj))
        assert np.all(labels == np.round(labels)) and labels.min() >= 0
