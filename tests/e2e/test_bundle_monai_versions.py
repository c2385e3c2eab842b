"""Both bundles' inference preprocessing under MONAI 1.6.1 and 1.5.2, fed as MONAI Label does.

MONAI Label's ``BasicInferTask`` puts the string ``image_path`` into the data dictionary.
MONAI 1.6's ``Spacingd`` calls ``.update()`` on every ``image_*`` entry of a NIfTI input
(1.5.2 did not), so the stock transform fails there; the bundles' ``MetaSafeSpacingd``
must work on both versions and leave ``image_path`` as it was. Each version runs in its
own subprocess; 1.5.2 is installed with ``--no-deps`` into the pytest cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.support.pip_target import pip_target

ROOT = Path(__file__).resolve().parents[2]
OLD_MONAI = "monai==1.5.2"

# Runs in the subprocess: argv = bundle dir, image path. Prints one JSON line.
_PROBE = r"""
import json, sys
bundle, image = sys.argv[1], sys.argv[2]
sys.path.insert(0, bundle)
import monai
from monai.bundle import ConfigParser
from monai.transforms import Spacingd

def run(swap_stock):
    parser = ConfigParser()
    parser.read_config(f"{bundle}/configs/inference.json")
    parser["bundle_root"] = bundle
    parser["device"] = "$torch.device('cpu')"
    pre = parser.get_parsed_content("preprocessing")
    if swap_stock:
        pre.transforms = tuple(
            Spacingd(keys=t.keys, pixdim=t.spacing_transform.pixdim, mode=t.mode)
            if type(t).__name__ == "MetaSafeSpacingd" else t for t in pre.transforms
        )
    data = {"image": image, "image_path": image, "model": "probe"}  # as MONAI Label sends it
    out = pre(data)
    return out

result = {"version": monai.__version__}
out = run(swap_stock=False)
result["shape"] = list(out["image"].shape)
result["image_path"] = out["image_path"]
try:
    run(swap_stock=True)
    result["stock_error"] = None
except Exception as exc:  # MONAI wraps the cause in a RuntimeError
    chain = []
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    result["stock_error"] = " <- ".join(chain)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def old_monai(request: pytest.FixtureRequest) -> Path:
    return pip_target(request.config, OLD_MONAI)


def _inputs(data_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """One real image per bundle in the form MONAI Label hands it over (one file).

    The glioma case is FLAIR and T1c stacked into one 4D NIfTI (as the bundle needs it in
    MONAI Label), cut to the central 120 x 120 x 80 voxels to keep the test quick.
    """
    case = data_dir / "brats" / "validation" / "brats_2013_pat0003_1"
    flair = nib.nifti1.load(next(case.glob("Flair*.nii*")))
    t1c = nib.nifti1.load(next(case.glob("T1c*.nii*")))
    box = (slice(60, 180), slice(60, 180), slice(40, 120))
    stacked = np.stack([np.asarray(flair.dataobj)[box], np.asarray(t1c.dataobj)[box]], axis=-1)
    glioma = tmp_path / "brats_2013_pat0003_1.nii"
    nib.save(nib.Nifti1Image(stacked.astype(np.float32), flair.slicer[box].affine), glioma)
    nodule = sorted((data_dir / "lidc_nodules" / "image").glob("LIDC-IDRI-0001_*.nii.gz"))[0]
    return {"brats_glioma_mri": glioma, "lung_nodule_ct": nodule}


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["brats_glioma_mri", "lung_nodule_ct"])
def test_preprocessing_with_monai_label_data_on_both_versions(
    bundle: str, old_monai: Path, data_dir: Path, tmp_path: Path
) -> None:
    image = _inputs(data_dir, tmp_path)[bundle]
    results = {}
    for label, extra in (("installed", None), ("old", old_monai)):
        env = dict(os.environ)
        if extra is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(extra), env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(ROOT / "bundles" / bundle), str(image)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])

    assert results["old"]["version"] == "1.5.2"
    for r in results.values():
        assert r["image_path"] == str(image)  # MONAI Label's entry survives untouched
    assert results["installed"]["shape"] == results["old"]["shape"]
    assert results["old"]["stock_error"] is None  # 1.5.2: the stock Spacingd was fine
    if results["installed"]["version"] == "1.6.1":  # the regression this works around
        assert "has no attribute 'update'" in results["installed"]["stock_error"]
