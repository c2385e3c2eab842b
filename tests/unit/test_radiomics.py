"""Radiomics: settings, per-lesion MIRP features, IBSI 1 reference values on the phantoms."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

import monai_tumor
from monai_tumor.errors import ConfigError
from monai_tumor.postprocess.lesions import lesion_mask, measure_lesions
from monai_tumor.radiomics import RadiomicsSettings, lesion_features, load_radiomics_settings
from monai_tumor.radiomics.ibsi import mirp_name, read_reference

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def test_settings_round_trip_and_mirp_arguments() -> None:
    s = RadiomicsSettings.from_dict(
        {
            "_comment": "ignored",
            "modality": "CT",
            "new_spacing_mm": 1.0,
            "resegmentation_range": [-1000, 400],
            "discretisation": "fixed_bin_size",
            "bin_width": 25,
        }
    )
    kwargs = s.mirp_kwargs()
    assert kwargs["new_spacing"] == 1.0
    assert kwargs["resegmentation_intensity_range"] == [-1000.0, 400.0]
    assert kwargs["base_discretisation_method"] == "fixed_bin_size"
    assert kwargs["base_discretisation_bin_width"] == 25.0
    assert kwargs["glcm_spatial_method"] == "3d_volume_merge"
    d = s.to_dict()
    assert d["library"].startswith("mirp ")
    assert d["monai_tumor"] == monai_tumor.__version__
    assert d["resegmentation_range"] == [-1000.0, 400.0]
    mr = RadiomicsSettings(
        modality="MR",
        new_spacing_mm=None,
        resegmentation_range=None,
        discretisation="fixed_bin_number",
        bin_width=None,
        n_bins=32,
        by_slice=True,
    )
    kwargs = mr.mirp_kwargs()
    assert "new_spacing" not in kwargs and "resegmentation_intensity_range" not in kwargs
    assert kwargs["base_discretisation_n_bins"] == 32
    assert kwargs["glcm_spatial_method"] == "2d_average"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"discretisation": "kmeans"}, "discretisation"),
        ({"discretisation": "fixed_bin_number", "n_bins": None}, "n_bins"),
        ({"families": ["glcm", "wavelet"]}, "wavelet"),
        ({"resegmentation_range": [400, -1000]}, "low >= high"),
        ({"spacing": 1.0}, "unknown keys"),
        ({"modality": "US"}, "modality"),
    ],
)
def test_settings_reject_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RadiomicsSettings.from_dict(values, source="radiomics.json")


def test_bundle_radiomics_configs_load() -> None:
    ct = load_radiomics_settings(BUNDLES / "lung_nodule_ct")
    mr = load_radiomics_settings(BUNDLES / "brats_glioma_mri")
    assert ct is not None and ct.new_spacing_mm == 1.0 and ct.bin_width == 25.0
    assert ct.resegmentation_range == (-1000.0, 400.0)
    assert mr is not None and mr.discretisation == "fixed_bin_number" and mr.n_bins == 32
    assert load_radiomics_settings(BUNDLES / "lung_nodule_malignancy") is None


def test_bad_radiomics_config_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "radiomics.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"radiomics\.json"):
        load_radiomics_settings(tmp_path)


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        ("morph_volume", "morph_volume"),
        ("cm_joint_max_2D_avg", "cm_joint_max_d1_2d_avg"),
        ("cm_joint_max_2D_comb", "cm_joint_max_d1_2d_s_mrg"),
        ("cm_joint_max_2_5D_avg", "cm_joint_max_d1_2.5d_d_mrg"),
        ("cm_joint_max_3D_comb", "cm_joint_max_d1_3d_v_mrg"),
        ("rlm_sre_3D_avg", "rlm_sre_3d_avg"),
        ("szm_sze_2_5D", "szm_sze_2.5d"),
        ("ngl_lde_3D", "ngl_lde_d1_a0.0_3d"),
        ("ngt_coarseness_2D", "ngt_coarseness_2d"),
        ("img_dim_x_init_img", None),
        ("int_mask_vox_count_init_roi", None),
    ],
)
def test_reference_tags_map_to_mirp_names(tag: str, name: str | None) -> None:
    assert mirp_name(tag) == name


def _lidc(data_dir: Path, case: str) -> tuple[MetaTensor, MetaTensor]:
    load = LoadImage(image_only=True, ensure_channel_first=True)
    image = load(data_dir / "lidc_nodules" / "image" / f"{case}.nii.gz")
    mask = load(data_dir / "lidc_nodules" / "nodule_mask" / f"{case}.nii.gz")
    return image, mask


@pytest.mark.realdata
def test_lesion_features_on_a_real_nodule(data_dir: Path) -> None:
    image, mask = _lidc(data_dir, "LIDC-IDRI-0003_R_2")
    lesions = measure_lesions(mask, image)
    settings = RadiomicsSettings(families=("morph", "stat", "glcm"))
    (feats,) = lesion_features(image, mask, lesions[:1], settings=settings)
    values = feats.features
    # MIRP's mesh volume of the 1 mm resampled mask agrees with the voxel count volume
    assert values["morph_volume"] == pytest.approx(lesions[0].volume_ml * 1000, rel=0.15)
    # intensity statistics inside the (re-segmented) nodule, in HU
    component = lesion_mask(mask, lesions[0])
    hu = np.asarray(image[0])[component]
    hu = hu[(hu >= -1000) & (hu <= 400)]
    assert values["stat_mean"] == pytest.approx(float(hu.mean()), abs=25.0)
    assert any(k.startswith("cm_joint_max_d1_3d_v_mrg_fbs_w25.0") for k in values)
    payload = feats.to_dict()
    assert payload["settings"]["bin_width"] == 25.0
    json.dumps(payload)  # JSON-ready


@pytest.mark.realdata
def test_two_lesions_get_their_own_features(data_dir: Path) -> None:
    image, mask = _lidc(data_dir, "LIDC-IDRI-0003_R_2")
    arr = np.asarray(mask[0]).astype(np.uint8)
    two = np.zeros_like(arr)
    two[: arr.shape[0] // 2] = arr[: arr.shape[0] // 2]
    shifted = np.zeros_like(arr)
    shifted[-6:-1, -6:-1, :2] = 1  # a small separate blob
    two = np.maximum(two, shifted)
    mt = MetaTensor(torch.as_tensor(two)[None], affine=mask.affine)
    lesions = measure_lesions(mt, image)
    assert len(lesions) == 2
    out = lesion_features(image, mt, lesions, settings=RadiomicsSettings(families=("morph",)))
    vols = [f.features["morph_vol_approx"] for f in out]
    assert vols[0] > vols[1]
    assert [f.lesion_index for f in out] == [1, 2]


@pytest.mark.realdata
def test_reference_tables_are_read(data_dir: Path) -> None:
    rows = read_reference(data_dir / "ibsi" / "reference_values" / "ibsi_1_dig_phantom.csv")
    tags = {t for t, _, _ in rows}
    assert ("morph_volume", 556.0, 4.0) in rows
    assert len(rows) > 400 and "cm_joint_max_3D_comb" in tags
    assert all(math.isfinite(v) for _, v, _ in rows)


_FEATURES_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np, torch
from monai.data import MetaTensor
from monai_tumor.postprocess.lesions import measure_lesions
from monai_tumor.radiomics import RadiomicsSettings, lesion_features
rng = np.random.default_rng(3)
img = rng.normal(0.0, 100.0, (40, 40, 30)).astype(np.float32)
mask = np.zeros((40, 40, 30), np.uint8)
mask[8:28, 8:28, 5:20] = 1  # 6000 voxels: MIRP estimates Moran's I / Geary's C
affine = np.diag([0.8, 0.8, 2.0, 1.0])
image = MetaTensor(torch.as_tensor(img)[None], affine=torch.as_tensor(affine))
label = MetaTensor(torch.as_tensor(mask)[None], affine=torch.as_tensor(affine))
(f,) = lesion_features(image, label, measure_lesions(label, image),
                       settings=RadiomicsSettings(families=("morph",)))
print(json.dumps([f.features["morph_moran_i"], f.features["morph_geary_c"]]))
"""


def test_estimated_features_are_the_same_in_every_process(tmp_path: Path) -> None:
    """MIRP's Monte-Carlo Moran's I / Geary's C depend on the lesion only.

    Not on the process, nor on its temporary folder (two processes with different TMPDIRs),
    and nothing is written there.
    """
    values = []
    for name in ("a", "b"):
        tmp = tmp_path / name
        tmp.mkdir()
        run = subprocess.run(
            [sys.executable, "-c", _FEATURES_IN_A_FRESH_PROCESS],
            capture_output=True,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp)},
            check=True,
            cwd=tmp,
        )
        values.append(json.loads(run.stdout.strip().splitlines()[-1]))
        assert not list(tmp.iterdir())
    assert values[0] == values[1]
    assert all(math.isfinite(v) for v in values[0])
