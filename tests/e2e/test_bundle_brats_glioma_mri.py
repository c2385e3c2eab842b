"""The brats_glioma_mri bundle: training, cross-validation, inference, metadata, TorchScript.

Workflows run in a subprocess through ``python -m monai.bundle`` with ``monai_tumor`` blocked
(``sys.modules["monai_tumor"] = None``), so the bundle is exercised exactly as a Model Zoo
user would run it. The expected Dice of the released ensemble comes from
``configs/metadata.json`` (``eval_metrics.released_ensemble_per_case``), the numbers the model
card reports.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from importlib.resources import as_file
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.bundle.verify import default_schema
from tests.support.bundle_modules import load_bundle_script

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "brats_glioma_mri"
CONFIGS = BUNDLE / "configs"
HELD_OUT_CASE = "brats_2013_pat0003_1"  # BraTS 2013 layout, intensities z-scored by the site
BRATS18_CASE = "Brats18_2013_11_1"  # BraTS 2018 file naming, raw intensities


def _metadata() -> dict[str, Any]:
    return json.loads((CONFIGS / "metadata.json").read_text())


def _bundle_module(name: str) -> ModuleType:
    return load_bundle_script(BUNDLE, name)


# Made unimportable in the workflow subprocess: the project itself, and the packages of the
# project's venv that a bare "torch + monai + nibabel" install would not have.
BLOCKED = ("monai_tumor", "scipy", "skimage", "SimpleITK", "itk", "pydicom", "cucim", "cupy")


def _run_bundle(
    args: list[str], *, cwd: Path, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """``python -m monai.bundle ARGS`` with ``monai_tumor`` (and non-bundle deps) unimportable."""
    return _run_blocked(
        f"import runpy; sys.argv = ['monai.bundle', *{args!r}]; "
        "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)",
        cwd=cwd,
        timeout=timeout,
    )


def _run_blocked(code: str, *, cwd: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a fresh process where the :data:`BLOCKED` modules cannot load."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.modules.update(dict.fromkeys({BLOCKED!r})); {code}",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


# --- label conversion (BraTS 2013 labels include 3, non-enhancing tumour) ---------------------


def test_label_conversion_puts_label_3_into_tc_and_wt() -> None:
    transforms = _bundle_module("transforms")
    label = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).reshape(1, 5, 1, 1)
    channels = transforms.brats_labels_to_tc_wt_et(label)[:, :, 0, 0]
    expected_tc_wt_et = [[0, 1, 0, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert channels.tolist() == expected_tc_wt_et
    # MONAI's BraTS 2018+ converter drops label 3 from TC and WT: why the bundle has its own.
    from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

    monai_out = ConvertToMultiChannelBasedOnBratsClasses()(label)
    assert isinstance(monai_out, torch.Tensor)  # a tensor in, a tensor out
    monai_channels = monai_out[:, :, 0, 0].int()
    assert monai_channels[0, 3] == 0 and monai_channels[1, 3] == 0


def test_channels_to_label_map_is_nested_and_round_trips() -> None:
    transforms = _bundle_module("transforms")
    label = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).reshape(1, 5, 1, 1)
    back = transforms.tc_wt_et_to_brats_labels(transforms.brats_labels_to_tc_wt_et(label))
    assert back.flatten().tolist() == [0, 1, 2, 1, 4]  # 3 (non-enhancing) is reported as core 1
    # ET outside TC/WT is still painted 4, so the recovered regions stay nested.
    only_et = torch.zeros(3, 1, 1, 1)
    only_et[2] = 1
    assert transforms.tc_wt_et_to_brats_labels(only_et).item() == 4


# --- metadata, network shape, TorchScript -----------------------------------------------------


def test_metadata_valid_against_the_shipped_schema() -> None:
    from monai.bundle import verify_metadata

    with as_file(default_schema()) as schema:
        verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    fmt = _metadata()["network_data_format"]
    assert fmt["inputs"]["image"]["channel_def"] == {"0": "FLAIR", "1": "T1c"}
    # keyed by the written label values (what MONAI Label names), not the 3 network channels
    assert fmt["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "Tumour core (non-enhancing)",
        "2": "Edema",
        "4": "Enhancing tumour",
    }


def test_verify_net_in_out() -> None:
    from monai.bundle import verify_net_in_out

    with bundle_scripts(BUNDLE):  # network_def is the bundle's scripts.ensemble class
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(CONFIGS / "metadata.json"),
            config_file=str(CONFIGS / "inference.json"),
            bundle_root=str(BUNDLE),
            n=2,
            device="cpu",
        )


def test_torchscript_matches_state_dict() -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    with bundle_scripts(BUNDLE):
        net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", map_location="cpu"))
    net.eval()
    scripted = torch.jit.load(str(BUNDLE / "models" / "model.ts"), map_location="cpu")
    scripted.eval()
    x = torch.randn(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-4, rtol=1e-4)
    for path in (BUNDLE / "models" / "model.pt", BUNDLE / "models" / "model.ts"):
        assert path.stat().st_size < 25 * 1024 * 1024


# --- inference on two shared cases, as Model Zoo users run it ------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
def test_inference_on_both_layouts_matches_the_card(data_dir: Path, tmp_path: Path) -> None:
    case_dir = data_dir / "brats" / "validation" / HELD_OUT_CASE
    dataset_dir = tmp_path / "in"
    dataset_dir.mkdir()
    (dataset_dir / HELD_OUT_CASE).symlink_to(case_dir, target_is_directory=True)
    # a second case in BraTS file naming (<case>_flair.nii.gz, <case>_t1ce.nii.gz, raw intensities)
    brats18 = data_dir / "brats2018" / BRATS18_CASE
    (dataset_dir / BRATS18_CASE).symlink_to(brats18, target_is_directory=True)
    out = tmp_path / "out"
    proc = _run_bundle(
        [
            "run",
            "--config_file",
            str(CONFIGS / "inference.json"),
            "--meta_file",
            str(CONFIGS / "metadata.json"),
            "--logging_file",
            str(CONFIGS / "logging.conf"),
            "--bundle_root",
            str(BUNDLE),
            "--dataset_dir",
            str(dataset_dir),
            "--output_dir",
            str(out),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{BRATS18_CASE}.nii.gz", f"{HELD_OUT_CASE}.nii.gz"]
    other = nib.Nifti1Image.from_filename(str(out / f"{BRATS18_CASE}.nii.gz"))
    other_flair = nib.Nifti1Image.from_filename(str(brats18 / f"{BRATS18_CASE}_flair.nii.gz"))
    assert other.shape == other_flair.shape
    np.testing.assert_allclose(other.affine, other_flair.affine, atol=1e-4)
    assert set(np.unique(np.asarray(other.dataobj)).tolist()) <= {0, 1, 2, 4}

    pred_img = nib.Nifti1Image.from_filename(str(out / f"{HELD_OUT_CASE}.nii.gz"))
    flair = nib.Nifti1Image.from_filename(str(case_dir / "Flair_subtrMeanDivStd.nii.gz"))
    assert pred_img.shape == flair.shape
    np.testing.assert_allclose(pred_img.affine, flair.affine, atol=1e-4)
    pred = np.asarray(pred_img.dataobj)
    assert set(np.unique(pred).tolist()) <= {0, 1, 2, 4}

    expected = _metadata()["eval_metrics"]["released_ensemble_per_case"]
    refs = {
        HELD_OUT_CASE: (pred, case_dir / "OTMultiClass.nii.gz"),
        BRATS18_CASE: (np.asarray(other.dataobj), brats18 / f"{BRATS18_CASE}_seg.nii.gz"),
    }
    for case, (label, ref_path) in refs.items():
        ref = np.rint(np.asarray(nib.Nifti1Image.from_filename(str(ref_path)).dataobj)).astype(int)
        # Regions recovered from the label map exactly as the model card defines them.
        measured = {
            "TC": _dice(np.isin(label, (1, 4)), np.isin(ref, (1, 3, 4))),
            "WT": _dice(label > 0, ref > 0),
            "ET": _dice(label == 4, ref == 4),
        }
        for region, value in measured.items():
            assert abs(value - expected[case][region]) <= 0.02, (case, measured, expected[case])


@pytest.mark.parametrize("bundle", ["brats_glioma_mri", "lung_nodule_ct"])
@pytest.mark.parametrize("seed", range(4))
def test_largest_component_scipy_and_torch_paths_agree(bundle: str, seed: int) -> None:
    """The fast scipy path (project venv) equals the torch fallback (bare bundle runtime)."""
    module = load_bundle_script(REPO / "bundles" / bundle, "transforms")
    rng = np.random.default_rng(seed)
    for _ in range(25):
        shape = tuple(int(s) for s in rng.integers(1, 14, 3))
        mask = torch.from_numpy(rng.random(shape) < rng.uniform(0.05, 0.5))
        fast = module.largest_component(mask)
        nz = torch.nonzero(mask)
        slow = torch.zeros_like(mask)
        if nz.shape[0]:
            lo, hi = nz.min(0).values, nz.max(0).values + 1
            box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            slow[box] = module._largest_torch(mask[box], 8)
        assert torch.equal(fast, slow)
        if nz.shape[0]:
            assert fast.any() and not (fast & ~mask).any()


#: The transform right before the optional denoise/enhance steps, per bundle and config.
ANCHORS = {
    "brats_glioma_mri": {"train": "Spacingd", "inference": "MetaSafeSpacingd"},
    "lung_nodule_ct": {"train": "ScaleIntensityRanged", "inference": "ScaleIntensityRanged"},
}


@pytest.mark.parametrize("bundle", sorted(ANCHORS))
@pytest.mark.parametrize("config", ["train", "inference"])
@pytest.mark.parametrize(
    ("denoise", "enhance", "expected"),
    [
        (False, False, ("Identityd", "Identityd")),
        ("false", "False", ("Identityd", "Identityd")),
        ("true", False, ("MedianSmoothd", "Identityd")),
        (False, True, ("Identityd", "HistogramNormalized")),
    ],
)
def test_preprocessing_ideas_are_switchable_monai_transforms(
    bundle: str,
    config: str,
    denoise: object,
    enhance: object,
    expected: tuple[str, str],
) -> None:
    """Denoising and enhancement enter both chains as MONAI transforms, off by default."""
    root = REPO / "bundles" / bundle
    raw = json.loads((root / "configs" / f"{config}.json").read_text(encoding="utf-8"))
    assert raw["denoise"] is False and raw["enhance"] is False  # released weights: both off
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(root / "configs" / f"{config}.json")
    parser["bundle_root"] = str(root)
    parser["denoise"], parser["enhance"] = denoise, enhance
    key = "deterministic_transforms" if config == "train" else "preprocessing#transforms"
    with bundle_scripts(root):  # both bundles ship a top-level `scripts` package
        chain = parser.get_parsed_content(key, instantiate=True)
    names = [type(t).__name__ for t in chain]
    at = names.index(ANCHORS[bundle][config])
    assert tuple(names[at + 1 : at + 3]) == expected
    channels = 2 if bundle == "brats_glioma_mri" else 1
    image = torch.linspace(-3.0, 5.0, channels * 8 * 8 * 4).reshape(channels, 8, 8, 4)
    out = {"image": image}
    for transform in chain[at + 1 : at + 3]:
        out = transform(out)
    assert out["image"].shape == image.shape
    if expected == ("Identityd", "Identityd"):
        assert torch.equal(torch.as_tensor(out["image"]), image)


# --- datalist: both file layouts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"], (0, 1)),
        (["{case}_flair.nii.gz", "{case}_t1ce.nii.gz", "{case}_seg.nii.gz"], (0, 1)),
        (["{case}_t1gd.nii.gz", "{case}_flair.nii.gz", "{case}_t1.nii.gz"], (1, 0)),
        (["{case}-t2f.nii.gz", "{case}-t1c.nii.gz", "{case}-t1n.nii.gz", "{case}-t2w.nii"], (0, 1)),
    ],
)
def test_inference_datalist_reads_both_layouts(
    tmp_path: Path, names: list[str], expected: tuple[int, int]
) -> None:
    datalist = _bundle_module("datalist")
    case = "Brats18_CBICA_XYZ_1"
    (tmp_path / case).mkdir()
    files = [n.format(case=case) for n in names]
    for name in files:
        (tmp_path / case / name).write_bytes(b"")
    (item,) = datalist.inference_datalist(str(tmp_path))
    assert item["case"] == case
    assert [Path(p).name for p in item["image"]] == [files[expected[0]], files[expected[1]]]


def test_inference_datalist_names_the_folder_and_the_patterns(tmp_path: Path) -> None:
    datalist = _bundle_module("datalist")
    good = tmp_path / "case_a"
    good.mkdir()
    for name in ("case_a_flair.nii.gz", "case_a_t1ce.nii.gz"):
        (good / name).write_bytes(b"")
    bad = tmp_path / "case_b"
    bad.mkdir()
    (bad / "case_b_flair.nii.gz").write_bytes(b"")  # no T1c in any naming
    (bad / "case_b_t1.nii.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as info:
        datalist.inference_datalist(str(tmp_path))
    message = str(info.value)
    assert str(bad) in message
    for pattern in (
        "Flair*.nii*",
        "T1c*.nii*",
        "<case>_flair.nii*",
        "<case>_t1ce.nii*",
        "<case>_t1gd.nii*",
        "<case>-t2f.nii*",
        "<case>-t1c.nii*",
    ):
        assert pattern in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no case folder"):
        datalist.inference_datalist(str(tmp_path / "empty"))


# --- TTA agreement (read by the pipeline's plausibility review) ---------------------------------


def test_tta_inferer_records_agreement_of_its_passes() -> None:
    transforms = _bundle_module("transforms")
    from monai.inferers import SimpleInferer

    x = torch.zeros(1, 2, 8, 8, 8)
    x[0, :, 1:3, 1:3, 1:3] = 1.0  # off-centre: flipped passes see it elsewhere

    def lopsided(t: torch.Tensor) -> torch.Tensor:
        logits = torch.full((t.shape[0], 3, 8, 8, 8), -5.0)
        logits[:, 1, :4, :4, :4] = 5.0  # WT always in one corner of the array: passes disagree
        logits[:, 0] = torch.where(t[:, 0] > 0, 5.0, -5.0)  # TC follows the image: agree
        return logits

    tta = transforms.FlipTTASigmoidInferer(SimpleInferer(), spatial_axes=(0, 1, 2))
    out = tta(x, lopsided)
    agreement = out.meta["tta_agreement"]
    assert agreement["passes"] == 8
    assert agreement["TC"] == 1.0 and agreement["ET"] == 1.0  # ET empty everywhere: 1
    assert agreement["WT"] < 0.2
    plain = transforms.FlipTTASigmoidInferer(SimpleInferer(), enabled="false")(x, lopsided)
    assert "tta_agreement" not in getattr(plain, "meta", {})


def test_split_is_patient_level_five_fold() -> None:
    split = json.loads((REPO / "data" / "datasets" / "brats26_split.json").read_text())
    cases = {c["case"]: c for c in split["cases"]}
    assert len(cases) == 26 and len(split["folds"]) == 5
    validation = [set(f["validation"]) for f in split["folds"]]
    assert set().union(*validation) == set(cases)
    assert sum(len(v) for v in validation) == 26  # each case validated exactly once
    for fold, val in zip(split["folds"], validation, strict=True):
        assert not val & set(fold["training"])
        assert set(fold["training"]) | val == set(cases)
        patients_val = {cases[c]["patient"] for c in val}
        assert not patients_val & {cases[c]["patient"] for c in fold["training"]}
    assert cases["Brats18_2013_20_1"]["patient"] == cases["brats_2013_pat0006_1"]["patient"]
    datalist = _bundle_module("datalist")
    items = datalist.load_split(
        str(REPO / "data" / "datasets" / "brats26_split.json"), "/d", 1, "validation"
    )
    assert {it["patient"] for it in items} >= {"brats_2013_pat0006_1"}  # copied, not joined
    assert all(p.startswith("/d/") for it in items for p in [*it["image"], it["label"]])
    limited = datalist.load_split(
        str(REPO / "data" / "datasets" / "brats26_split.json"), "/d", 1, "validation", limit=2
    )
    assert [it["case"] for it in limited] == [it["case"] for it in items][:2]


# --- the 26-case recipe: normalisation, ET rule, ensemble, training and cross-validation ---------


def _preprocess(config: Path, paths: list[str]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(BUNDLE)
    with bundle_scripts(BUNDLE):
        chain = parser.get_parsed_content("preprocessing")
    return chain({"image": paths})["image"]


@pytest.mark.realdata
def test_network_input_identical_for_raw_and_site_zscored_volume(
    data_dir: Path, tmp_path: Path
) -> None:
    case = "Brats18_CBICA_AQN_1"
    raw = [str(data_dir / "brats2018" / case / f"{case}_{m}.nii.gz") for m in ("flair", "t1ce")]
    zscored = []
    for path in raw:
        img = nib.Nifti1Image.from_filename(path)
        x = np.asarray(img.dataobj, dtype=np.float64)
        brain = x != 0
        mean, std = x[brain].mean(), x[brain].std()
        z = np.where(brain, (x - mean) / std, (0 - mean) / std)  # the site's constant background
        out = tmp_path / Path(path).name.replace(".nii.gz", "_z.nii.gz")
        nib.save(nib.Nifti1Image(z.astype(np.float32), img.affine), str(out))
        zscored.append(str(out))
        assert z[brain].min() < 0  # brain voxels below the mean: "non-zero" no longer finds them
    config = CONFIGS / "inference.json"
    a, b = _preprocess(config, raw), _preprocess(config, zscored)
    assert a.shape == b.shape
    torch.testing.assert_close(a.affine, b.affine)
    torch.testing.assert_close(a.as_tensor(), b.as_tensor(), atol=2e-5, rtol=0)
    brain = a.as_tensor().abs().sum(0) > 0
    for c in range(2):  # z-scored inside the brain
        assert abs(float(a[c][brain].mean())) < 0.1


def test_brain_zscore_is_invariant_to_increasing_linear_maps() -> None:
    transforms = _bundle_module("transforms")
    rng = np.random.default_rng(0)
    x = torch.zeros(2, 20, 20, 12, dtype=torch.float64)
    x[:, 4:16, 3:17, 2:10] = torch.from_numpy(rng.gamma(2.0, 100.0, (2, 12, 14, 8)))
    x[0, 8, 8, 5] = 32767.0  # a saturated voxel is clipped, not allowed to flatten the brain
    ref, mask = transforms.brain_zscore(x)
    for scale, shift in ((0.01, -3.0), (7.0, 250.0)):
        y = x * scale + shift
        y[:, ~mask[0]] = y[:, mask[0]].min() - 1.0  # background: the site's own constant
        out, mask_y = transforms.brain_zscore(y)
        assert torch.equal(mask, mask_y)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert float(ref.max()) < 10.0
    assert torch.equal(ref[:, ~mask[0]], torch.zeros_like(ref[:, ~mask[0]]))


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 4097])
def test_brain_zscore_quantiles_are_torch_quantile(n: int) -> None:
    """Order statistics by one partition: torch.quantile's linear rule, exactly."""
    transforms = _bundle_module("transforms")
    values = torch.from_numpy(np.random.default_rng(n).gamma(2.0, 50.0, n))
    values[: n // 3] = values[0]  # ties
    q = torch.tensor([0.001, 0.5, 0.999], dtype=torch.float64)
    assert torch.equal(transforms._quantiles(values, q), torch.quantile(values, q))


def test_brain_zscore_on_the_brain_box_equals_the_whole_volume() -> None:
    """Normalising only the brain's bounding box gives the whole-volume result bit for bit."""
    transforms = _bundle_module("transforms")
    rng = np.random.default_rng(1)
    x = torch.full((2, 30, 26, 20), -1.5, dtype=torch.float32)
    x[:, 5:21, 3:17, 8:19] = torch.from_numpy(rng.normal(0.0, 1.0, (2, 16, 14, 11))).float()
    out, mask = transforms.brain_zscore(x)
    t = x.to(torch.float64)  # the definition, on the whole volume
    ref = torch.zeros_like(t)
    q = torch.tensor([0.001, 0.999], dtype=torch.float64)
    for c in range(2):
        vals = t[c][mask[0]]
        lo, hi = (float(v) for v in torch.quantile(vals, q))
        clipped = vals.clamp(lo, hi)
        ref[c][mask[0]] = (clipped - clipped.mean()) / float(clipped.std())
    assert torch.equal(out, ref.to(torch.float32))
    empty, none = transforms.brain_zscore(torch.zeros(2, 4, 4, 4))
    assert not none.any() and not empty.any()


@pytest.mark.parametrize(
    ("et_voxels", "min_voxels", "kept"), [(5, 10, False), (5, 5, True), (5, 0, True)]
)
def test_small_enhancing_tumour_becomes_core(et_voxels: int, min_voxels: int, kept: bool) -> None:
    transforms = _bundle_module("transforms")
    pred = torch.zeros(3, 10, 10, 10)
    pred[1, 2:8, 2:8, 2:8] = 1  # WT
    pred[0, 3:6, 3:6, 3:6] = 1  # TC
    pred[2].view(-1)[torch.nonzero(pred[0].view(-1))[:et_voxels, 0]] = 1
    out = transforms.SmallEnhancingToCored(keys="pred", min_voxels=min_voxels)({"pred": pred})
    assert int(out["pred"][2].sum()) == (et_voxels if kept else 0)
    assert torch.equal(out["pred"][0], pred[0]) and torch.equal(out["pred"][1], pred[1])


def test_ensemble_averages_member_probabilities(tmp_path: Path) -> None:
    with bundle_scripts(BUNDLE):
        from scripts.ensemble import SigmoidUNetEnsemble, assemble_folds

        kwargs = {
            "spatial_dims": 3,
            "in_channels": 2,
            "out_channels": 3,
            "channels": [4, 8],
            "strides": [2],
            "num_res_units": 1,
            "norm": "instance",
        }
        members = []
        for seed in range(3):
            torch.manual_seed(seed)
            single = SigmoidUNetEnsemble(1, **kwargs).eval()
            path = tmp_path / f"fold{seed}.pt"
            torch.save({"model": single.members[0].state_dict(), "epoch": 3}, path)
            members.append((single, path))
        ensemble = SigmoidUNetEnsemble(3, **kwargs).eval()
        ensemble.load_state_dict(
            torch.load(assemble_folds([p for _, p in members], tmp_path / "m.pt"))
        )
        x = torch.randn(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            mean = torch.stack([torch.sigmoid(m(x)) for m, _ in members]).mean(0)
            torch.testing.assert_close(torch.sigmoid(ensemble(x)), mean, atol=1e-5, rtol=1e-4)
        bad = SigmoidUNetEnsemble(1, **{**kwargs, "channels": [4, 16]})
        torch.save(bad.members[0].state_dict(), tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="member 1"):
            assemble_folds([members[0][1], tmp_path / "bad.pt"], tmp_path / "x.pt")


@pytest.mark.slow
@pytest.mark.realdata
def test_train_a_fold_then_crossval_scores_it(data_dir: Path, tmp_path: Path) -> None:
    """A tiny fold through the bundle's own train.json, then scripts.crossval on its case."""
    run = tmp_path / "fold0"
    proc = _run_bundle(
        [
            "run",
            "--config_file",
            str(CONFIGS / "train.json"),
            "--bundle_root",
            str(BUNDLE),
            "--data_root",
            str(data_dir),
            "--fold",
            "0",
            "--num_members",
            "1",
            "--limit_train",
            "2",
            "--limit_val",
            "1",
            "--ckpt_dir",
            str(run / "models"),
            "--output_dir",
            str(run / "eval"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--max_epochs",
            "2",
            "--val_interval",
            "1",
            "--save_interval",
            "1",
            "--num_samples",
            "1",
            "--pixdim",
            "[4.0, 4.0, 4.0]",
            "--patch_size",
            "[32, 32, 32]",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    models = run / "models"
    assert sorted(p.name for p in models.iterdir()) == ["model.pt"]  # no training state there
    ckpt = run / "eval" / "checkpoints" / "checkpoint_last.pt"
    state = torch.load(ckpt, map_location="cpu")  # full state, for --resume_training true
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    assert state["trainer"]["max_epochs"] == 2
    assert state["trainer"]["iteration"] == 4  # 2 epochs x 2 training cases, batch size 1
    with open(run / "eval" / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in rows)
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert (run / "eval" / "training_curve.png").stat().st_size > 0
    out = tmp_path / "cv"
    args = ["--split_file", str(REPO / "data" / "datasets" / "brats26_split.json")]
    args += ["--config_file", "configs/inference.json", "--data_root", str(data_dir)]
    args += ["--ckpt", str(tmp_path / "fold{fold}" / "eval" / "checkpoints" / "checkpoint_last.pt")]
    args += ["--out_dir", str(out), "--folds", "0", "--limit", "1"]
    # the fold model was trained at 4 mm on 32^3 patches; crossval runs the recipe's 2 mm grid
    cv = _run_blocked(
        f"sys.argv = ['crossval', *{args!r}]; sys.path.insert(0, '.'); "
        "from scripts.crossval import main; raise SystemExit(main())",
        cwd=BUNDLE,
        timeout=600,
    )
    assert cv.returncode == 0, cv.stderr[-4000:]
    rows = json.loads((out / "cases.json").read_text())
    case = _first_validation_case()
    assert {r["case"] for r in rows} == {case}
    assert len({r["variant"] for r in rows}) == 16  # TTA x largest component x 4 ET rules
    for r in rows:
        assert all(0.0 <= r[region] <= 1.0 for region in ("TC", "WT", "ET"))
    summary = json.loads((out / "summary.json").read_text())
    plain = summary["tta=0,lcc=0,et_min=0"]
    assert plain["cases"] == 1 and set(plain["per_fold"]) == {"0"}
    label = nib.Nifti1Image.from_filename(str(out / f"{case}.nii.gz"))
    assert label.shape == (240, 240, 155)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= {0, 1, 2, 4}


def _first_validation_case() -> str:
    """First validation case of fold 0 in the split file's case order (what --limit 1 keeps)."""
    split = json.loads((REPO / "data" / "datasets" / "brats26_split.json").read_text())
    val = set(split["folds"][0]["validation"])
    return next(c["case"] for c in split["cases"] if c["case"] in val)
