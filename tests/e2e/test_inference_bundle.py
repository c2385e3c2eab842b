"""Tests for monai_tumor.inference.bundle: bundles run in-process, label maps on the source grid."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
import torch
from monai.data import MetaTensor

from monai_tumor.errors import BundleError, ConfigError, UnsupportedInputError
from monai_tumor.geometry import lps_to_ras, voxel_to_patient
from monai_tumor.inference import (
    BundleKind,
    LoadedBundle,
    Seed,
    load_bundle,
    read_bundle_info,
    seeds_from_mask,
    seeds_from_rtstruct,
)
from monai_tumor.inference.bundle import Precision
from monai_tumor.inference.device import available_cpus, native_bf16
from monai_tumor.ingest.groundtruth import rtstruct_to_mask
from monai_tumor.ingest.reader import read_series
from monai_tumor.ingest.selection import load_inputs
from monai_tumor.transforms.voi import VOIGrowth

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
GLIOMA = BUNDLES / "brats_glioma_mri"
NODULE = BUNDLES / "lung_nodule_ct"
SPLIT = BUNDLES.parent / "data" / "datasets" / "lidc_nodules_split.json"


def _dice(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2.0 * (x & y).sum() / max(int(x.sum() + y.sum()), 1))


@pytest.fixture(scope="module")
def glioma() -> LoadedBundle:
    return load_bundle(GLIOMA, device="cpu")


@pytest.fixture(scope="module")
def nodule() -> LoadedBundle:
    return load_bundle(NODULE, device="cpu")


# --------------------------------------------------------------------------- bundle info


def test_bundle_info_of_both_bundles() -> None:
    g, n = read_bundle_info(GLIOMA), read_bundle_info(NODULE)
    assert (g.name, g.kind, g.input_names, g.reference_input) == (
        "brats_glioma_mri",
        BundleKind.WHOLE_IMAGE,
        ("flair", "t1c"),
        "flair",
    )
    assert (n.name, n.kind, n.input_names) == ("lung_nodule_ct", BundleKind.VOI, ("ct",))
    assert g.label_values == (1, 2, 4) and n.label_values == (1,)
    assert n.voi is not None and n.voi.shape == (48, 48, 16)
    assert n.display_window == (-1350.0, 150.0) and g.display_window is None  # lung window
    assert g.segments[2].property_type.value == "108369006"  # SNOMED CT Neoplasm
    assert g.selection_rules.name == "series_selection.json" and g.selection_rules.is_file()
    assert len(g.weights_sha256) == 64
    assert g.cache_key() == read_bundle_info(GLIOMA).cache_key() != n.cache_key()
    assert g.cache_key().startswith(f"brats_glioma_mri-{g.version}-") and g.version
    prov = g.provenance()
    assert set(prov) == {
        "bundle",
        "bundle_version",
        "weights_sha256",
        "configs_sha256",
        "monai",
        "torch",
        "monai_tumor",
    }
    assert prov["weights_sha256"] == g.weights_sha256
    assert len(g.configs_sha256) == 64 and prov["configs_sha256"] == g.configs_sha256


@pytest.mark.parametrize("edit", ["configs/inference.json", "scripts/transforms.py"])
def test_cache_key_follows_config_and_script_edits(tmp_path: Path, edit: str) -> None:
    """Switching e.g. `denoise` on without a version bump must not reuse old results."""
    root = _copy_bundle(tmp_path)
    before = read_bundle_info(root)
    assert before.configs_sha256 == read_bundle_info(root).configs_sha256
    path = root / edit
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    after = read_bundle_info(root)
    assert after.weights_sha256 == before.weights_sha256
    assert after.configs_sha256 != before.configs_sha256
    assert after.cache_key() != before.cache_key()


_NODULE_VOI = {"size_mm": [33.75, 33.75, 20.0], "spacing_mm": [0.703125, 0.703125, 1.25]}


def test_voi_recentring_and_coarse_growth_are_read(tmp_path: Path) -> None:
    assert read_bundle_info(NODULE).voi_recentre == 3  # 0.3.2 re-centres, grows not
    assert read_bundle_info(NODULE).voi_growth is None
    root = _copy_bundle(tmp_path)
    growth = {"max_size_mm": [192, 192, 192], "factor": 1.5, "coarse": True}
    _edit_meta(root, voi={**_NODULE_VOI, "growth": growth})
    info = read_bundle_info(root)
    assert info.voi_recentre == 0
    assert info.voi_growth == VOIGrowth(max_size_mm=(192.0, 192.0, 192.0), coarse=True)


def _copy_bundle(tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(NODULE, dst, ignore=shutil.ignore_patterns("eval", "__pycache__", "*.ts"))
    return dst


def _edit_meta(root: Path, **block: object) -> None:
    path = root / "configs" / "metadata.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    for key, value in block.items():
        if value is None:
            meta["monai_tumor"].pop(key, None)
        else:
            meta["monai_tumor"][key] = value
    path.write_text(json.dumps(meta, indent=4), encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"segments": None}, "segments must be a non-empty list"),
        ({"segments": [{"number": 1, "label": "x", "category": {}, "type": {}}]}, "category"),
        ({"input_names": ["flair"]}, "not selection names"),
        ({"voi": {"size_mm": [1, 2], "spacing_mm": [1, 1, 1]}}, "voi.size_mm"),
        ({"display_window": {"center": -600, "width": 0}}, "display_window"),
        ({"display_window": [-600, 1500]}, "display_window"),
        ({"voi": {**_NODULE_VOI, "recentre": -1}}, "voi.recentre must be an integer 0-10"),
        ({"voi": {**_NODULE_VOI, "recentre": True}}, "voi.recentre must be an integer 0-10"),
        (
            {"voi": {**_NODULE_VOI, "growth": {"max_size_mm": [9, 9, 9], "coarse": "yes"}}},
            "voi.growth.coarse must be true or false",
        ),
        ({"cpu_precision": "fp16"}, r"cpu_precision must be one of \['fp32', 'bf16'\]"),
    ],
)
def test_invalid_metadata_block_is_a_bundle_error(
    tmp_path: Path, edit: dict[str, object], message: str
) -> None:
    root = _copy_bundle(tmp_path)
    _edit_meta(root, **edit)
    with pytest.raises(BundleError, match=message):
        read_bundle_info(root)


def test_missing_bundle_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        read_bundle_info(tmp_path / "nothing")
    root = _copy_bundle(tmp_path)
    (root / "models" / "model.pt").unlink()
    with pytest.raises(BundleError, match=r"models/model\.pt"):
        read_bundle_info(root)


def test_weights_that_do_not_fit_the_network(tmp_path: Path) -> None:
    root = _copy_bundle(tmp_path)
    shutil.copy(GLIOMA / "models" / "model.pt", root / "models" / "model.pt")
    with pytest.raises(BundleError, match="does not fit network_def"):
        load_bundle(root, device="cpu")


def test_both_bundles_in_one_process(glioma: LoadedBundle, nodule: LoadedBundle) -> None:
    """Each bundle got its own `scripts` package; nothing of it stays on sys.path/sys.modules."""
    g_post = {type(t).__name__ for t in glioma.postprocessing.transforms}
    n_post = {type(t).__name__ for t in nodule.postprocessing.transforms}
    assert "TcWtEtToBratsLabelsd" in g_post and "SaveImaged" not in g_post
    assert "KeepLargestComponentd" in n_post and "TcWtEtToBratsLabelsd" not in n_post
    assert type(nodule.inferer).__name__ == "FlipTTAInferer"
    assert "scripts" not in sys.modules
    assert str(GLIOMA) not in sys.path and str(NODULE) not in sys.path
    assert all(type(t).__name__ != "LoadImaged" for t in glioma.preprocessing.transforms)
    # loading again (e.g. a second worker) works and gives the same weights
    again = load_bundle(GLIOMA, device="cpu")
    for a, b in zip(again.network.parameters(), glioma.network.parameters(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- glioma


@pytest.mark.realdata
@pytest.mark.slow
def test_glioma_on_a_shared_brats_case(data_dir: Path, glioma: LoadedBundle) -> None:
    """A shared case through load_inputs: BraTS labels on the input grid, model-card Dice."""
    case = "brats_2013_pat0003_1"
    folder = data_dir / "brats" / "validation" / case
    image = load_inputs(
        {
            "flair": folder / "Flair_subtrMeanDivStd.nii.gz",
            "t1c": folder / "T1c_subtrMeanDivStd.nii.gz",
        },
        reference=glioma.info.reference_input,
        order=glioma.info.input_names,
    )
    before = image.clone()
    label = glioma.segment(image)

    assert isinstance(label, MetaTensor)
    assert label.shape == (1, *image.shape[1:]) and label.dtype == torch.uint8
    assert torch.equal(label.affine, image.affine)
    assert torch.equal(image, before)  # the input is not modified
    assert set(torch.unique(label).tolist()) <= {0, 1, 2, 4}
    assert label.meta["filename_or_obj"] == image.meta["filename_or_obj"]
    assert label.meta["bundle"]["bundle"] == "brats_glioma_mri"
    assert not label.as_tensor().is_inference()  # callers may change it in place
    label.as_tensor()[0, 0, 0, 0] = label.as_tensor()[0, 0, 0, 0]

    ref = np.rint(
        np.asarray(nib.Nifti1Image.from_filename(folder / "OTMultiClass.nii.gz").dataobj)
    ).astype(int)
    pred = label[0].numpy()
    found = {
        "TC": _dice(np.isin(pred, [1, 4]), np.isin(ref, [1, 3, 4])),
        "WT": _dice(pred > 0, ref > 0),
        "ET": _dice(pred == 4, ref == 4),
    }
    meta = json.loads((GLIOMA / "configs" / "metadata.json").read_text(encoding="utf-8"))
    card = meta["eval_metrics"]["released_ensemble_per_case"][case]
    for region, value in card.items():
        assert found[region] == pytest.approx(value, abs=0.02), (region, found)


def test_glioma_refuses_a_wrong_channel_count(glioma: LoadedBundle) -> None:
    one = MetaTensor(torch.zeros(1, 8, 8, 8), affine=torch.eye(4, dtype=torch.float64))
    with pytest.raises(UnsupportedInputError, match=r"1 channel\(s\).*flair, t1c"):
        glioma.segment(one)
    with pytest.raises(UnsupportedInputError, match="MetaTensor"):
        glioma.segment(torch.zeros(2, 8, 8, 8))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- synthetic grids

GRIDS = [
    pytest.param(0.0, (1, 1, 1), (0.7, 0.7, 1.25), id="axial"),
    pytest.param(17.0, (-1, 1, -1), (0.8, 0.6, 2.0), id="oblique-17-flipped"),
    pytest.param(-30.0, (1, -1, 1), (0.9, 0.9, 1.0), id="oblique-30"),
]


def _nodule_phantom(
    angle_deg: float, flips: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[MetaTensor, npt.NDArray[np.bool_], tuple[float, float, float]]:
    """Lung-like CT (-850 HU + noise) with a 6 mm radius nodule (40 HU), off-centre."""
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0, 0, 1.0]])
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = rotation @ np.diag(np.asarray(flips) * np.asarray(spacing))
    affine_lps[:3, 3] = [31.5, -47.25, -102.0]
    shape = (80, 70, 30)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = voxel_to_patient(affine_lps, grid)
    centre = voxel_to_patient(affine_lps, [37.3, 33.1, 10.4])  # off-centre on every axis
    mask = np.linalg.norm(world - centre, axis=-1) <= 6.0
    noise = np.random.default_rng(0).normal(0.0, 20.0, shape)
    values = (np.where(mask, 40.0, -850.0) + noise).astype(np.float32)
    image = MetaTensor(
        torch.as_tensor(values)[None], affine=torch.as_tensor(lps_to_ras(affine_lps))
    )
    x, y, z = (float(v) for v in centre)
    return image, mask, (x, y, z)


@pytest.mark.parametrize(("angle", "flips", "spacing"), GRIDS)
def test_voi_bundle_on_oblique_and_flipped_grids(
    nodule: LoadedBundle,
    angle: float,
    flips: tuple[int, int, int],
    spacing: tuple[float, float, float],
) -> None:
    """Seed at a phantom nodule: the pasted mask is the nodule on the source grid."""
    image, mask, centre = _nodule_phantom(angle, flips, spacing)
    label = nodule.segment(image, seeds=[Seed(centre)])
    assert label.shape == image.shape and torch.equal(label.affine, image.affine)
    assert label.dtype == torch.uint8 and not label.as_tensor().is_inference()
    assert _dice(label[0], mask) > 0.85


def test_whole_image_bundle_on_an_oblique_flipped_grid(tmp_path: Path) -> None:
    """The nodule bundle without its VOI key runs on the whole image: Invertd lands on the grid."""
    root = _copy_bundle(tmp_path)
    _edit_meta(root, voi=None)
    bundle = load_bundle(root, device="cpu")
    assert bundle.info.kind == BundleKind.WHOLE_IMAGE
    image, mask, _ = _nodule_phantom(17.0, (-1, 1, -1), (0.8, 0.6, 2.0))
    label = bundle.segment(image)
    assert label.shape == image.shape and torch.equal(label.affine, image.affine)
    predicted = label[0].numpy() > 0
    # Where the mask lands is what this test is about (Dice is not: run on a whole image, the
    # model - trained on crops whose nodules reach the crop's first/last slice - draws this
    # sharp synthetic sphere too wide and with a tail along the slice axis; the real-data
    # tests measure accuracy). Alignment in every voxel axis:
    assert (predicted & mask).sum() >= 0.95 * mask.sum()  # the whole nodule is covered
    area_pred, area_ref = predicted.sum(axis=(0, 1)), mask.sum(axis=(0, 1))
    assert abs(int(np.argmax(area_pred)) - int(np.argmax(area_ref))) <= 1  # slice axis
    slices = np.flatnonzero(area_ref)
    in_plane_pred = np.argwhere(predicted[:, :, slices])[:, :2].mean(axis=0)
    in_plane_ref = np.argwhere(mask[:, :, slices])[:, :2].mean(axis=0)
    np.testing.assert_allclose(in_plane_pred, in_plane_ref, atol=0.5)  # columns and rows


def test_a_result_off_the_input_grid_is_refused(tmp_path: Path) -> None:
    """Without Invertd the prediction stays on the 0.7 mm grid: refused, never returned."""
    root = _copy_bundle(tmp_path)
    _edit_meta(root, voi=None)
    config_path = root / "configs" / "inference.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    steps = config["postprocessing"]["transforms"]
    config["postprocessing"]["transforms"] = [s for s in steps if s["_target_"] != "Invertd"]
    config_path.write_text(json.dumps(config, indent=4), encoding="utf-8")
    phantom, _, _ = _nodule_phantom(17.0, (-1, 1, -1), (0.8, 0.6, 2.0))
    image = MetaTensor(phantom.as_tensor()[:, 20:50, 20:50, 8:20].clone(), affine=phantom.affine)
    with pytest.raises(BundleError, match="on the input grid"):
        load_bundle(root, device="cpu").segment(image)


@pytest.mark.realdata
@pytest.mark.slow
def test_in_process_equals_stock_monai_bundle_run(data_dir: Path, tmp_path: Path) -> None:
    """Same transforms, same weights: voxel for voxel what `python -m monai.bundle run` writes."""
    case = "LIDC-IDRI-0094_R_1"  # 89 x 44 x 31, the bundle's sliding window takes several patches
    source = data_dir / "lidc_nodules" / "image" / f"{case}.nii.gz"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / source.name).symlink_to(source)
    command = [sys.executable, "-m", "monai.bundle", "run"]
    command += ["--config_file", "configs/inference.json", "--bundle_root", str(NODULE)]
    command += ["--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out")]
    done = subprocess.run(
        command,
        cwd=NODULE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stock = nib.Nifti1Image.from_filename(tmp_path / "out" / source.name)

    root = _copy_bundle(tmp_path)
    _edit_meta(root, voi=None)  # the stock run segments the whole file, so do we
    image = read_series(source)
    label = load_bundle(root, device="cpu", precision="fp32").segment(image)  # as the stock run
    np.testing.assert_allclose(stock.affine, image.affine.numpy(), atol=1e-6)
    np.testing.assert_array_equal(label[0].numpy(), np.asarray(stock.dataobj))
    assert int(label.sum()) > 0


# --------------------------------------------------------------------------- nodules


def _lidc(data_dir: Path, case: str) -> tuple[MetaTensor, MetaTensor]:
    root = data_dir / "lidc_nodules"
    return (
        read_series(root / "image" / f"{case}.nii.gz"),
        read_series(root / "nodule_mask" / f"{case}.nii.gz"),
    )


def _held_out(count: int) -> list[str]:
    split = json.loads(SPLIT.read_text(encoding="utf-8"))
    return list(split["folds"][0]["validation"][:count])


@pytest.mark.realdata
@pytest.mark.slow
def test_nodule_on_held_out_lidc_vois(data_dir: Path, nodule: LoadedBundle) -> None:
    """Seed = the reference mask's centroid; 0/1 mask on the VOI file's grid, high Dice."""
    dices = []
    for case in _held_out(5):
        image, ref = _lidc(data_dir, case)
        seeds = seeds_from_mask(ref, image)
        label = nodule.segment(image, seeds=seeds[:1])
        assert label.shape == image.shape and torch.equal(label.affine, image.affine)
        assert set(torch.unique(label).tolist()) <= {0, 1}
        dices.append(_dice(label[0], ref[0]))
    assert float(np.mean(dices)) > 0.75, dices


@pytest.mark.realdata
def test_nodule_result_follows_a_flipped_grid(data_dir: Path, nodule: LoadedBundle) -> None:
    """The same voxels stored with a flipped axis (affine adjusted) give the flipped mask."""
    image, ref = _lidc(data_dir, "LIDC-IDRI-0014_R_1")
    seeds = seeds_from_mask(ref, image)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, image.shape[1] - 1
    flipped = MetaTensor(
        torch.flip(image.as_tensor(), dims=[1]),
        affine=torch.as_tensor(image.affine.numpy() @ flip),
        meta={k: v for k, v in image.meta.items() if k != "affine"},
    )
    direct = nodule.segment(image, seeds=seeds)
    mirrored = nodule.segment(flipped, seeds=seeds)
    assert torch.equal(torch.flip(mirrored.as_tensor(), dims=[1]), direct.as_tensor())
    assert direct.sum() > 0
    assert torch.equal(nodule.segment(image, seeds=seeds).as_tensor(), direct.as_tensor())


@pytest.mark.realdata
def test_batched_mirroring_gives_the_loop_mask(data_dir: Path, nodule: LoadedBundle) -> None:
    """The mirrored copies in one network call, or in calls bounded to one copy's voxels,
    give the released loop's mask in float32; bfloat16 nearly the same mask."""
    image, ref = _lidc(data_dir, "LIDC-IDRI-0014_R_1")
    seeds = seeds_from_mask(ref, image)
    inferer = nodule.inferer
    saved = (inferer.flips_per_call, inferer.max_call_voxels)
    masks = {}
    runs: list[tuple[str, int, int, Precision]] = [
        ("loop", 1, 1 << 20, "fp32"),
        ("batched", 8, 1 << 20, "fp32"),
        ("bounded", 8, 1, "fp32"),
        ("bf16", 8, 1 << 20, "bf16"),
    ]
    try:
        for name, per_call, voxels, precision in runs:
            inferer.flips_per_call, inferer.max_call_voxels = per_call, voxels
            run = dataclasses.replace(nodule, precision=precision)
            masks[name] = run.segment(image, seeds=seeds)[0].numpy()
    finally:
        inferer.flips_per_call, inferer.max_call_voxels = saved
    assert masks["loop"].sum() > 0
    np.testing.assert_array_equal(masks["batched"], masks["loop"])
    np.testing.assert_array_equal(masks["bounded"], masks["loop"])
    assert _dice(masks["bf16"], masks["loop"]) > 0.97


@pytest.mark.realdata
def test_num_threads_applies_during_the_call_only(data_dir: Path) -> None:
    image, ref = _lidc(data_dir, "LIDC-IDRI-0014_R_1")
    bundle = load_bundle(NODULE, device="cpu", num_threads=1)
    seen: list[int] = []
    forward = bundle.network.forward

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return forward(x)

    bundle.network.forward = spy
    before = torch.get_num_threads()
    bundle.segment(image, seeds=seeds_from_mask(ref, image))
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before


def test_threads_default_to_the_cpus_this_process_may_use() -> None:
    assert load_bundle(NODULE, device="cpu").num_threads == available_cpus()
    assert load_bundle(NODULE, device="cpu", num_threads=None).num_threads is None
    assert load_bundle(NODULE, device="cpu", num_threads=3).num_threads == 3


def test_precision_follows_the_bundle_and_the_cpu(tmp_path: Path) -> None:
    """bf16 only where the bundle was validated with it and the CPU computes it natively."""
    assert read_bundle_info(NODULE).cpu_precision == "bf16"
    assert read_bundle_info(GLIOMA).cpu_precision == "bf16"
    root = _copy_bundle(tmp_path)
    _edit_meta(root, cpu_precision=None)
    assert read_bundle_info(root).cpu_precision == "fp32"
    assert load_bundle(root, device="cpu").precision == "fp32"
    assert load_bundle(root, device="cpu", precision="bf16").precision == "bf16"
    assert load_bundle(NODULE, device="cpu").precision == ("bf16" if native_bf16() else "fp32")
    assert load_bundle(NODULE, device="cpu", precision="fp32").precision == "fp32"
    with pytest.raises(ConfigError, match="precision 'half'"):
        load_bundle(NODULE, device="cpu", precision="half")  # type: ignore[arg-type]


@pytest.mark.realdata
@pytest.mark.slow
def test_glioma_fast_path_agrees_with_the_stock_run(data_dir: Path, tmp_path: Path) -> None:
    """Default path (threads, bf16 where native) within Dice 0.005 of `monai.bundle run`.

    The float32 path equals the stock run voxel for voxel (same transforms and weights).
    """
    case = "brats_2013_pat0003_1"
    folder = data_dir / "brats" / "validation" / case
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / case).symlink_to(folder, target_is_directory=True)
    command = [sys.executable, "-m", "monai.bundle", "run"]
    command += ["--config_file", "configs/inference.json", "--bundle_root", str(GLIOMA)]
    command += ["--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out")]
    done = subprocess.run(
        command, cwd=GLIOMA, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stock = np.asarray(nib.Nifti1Image.from_filename(tmp_path / "out" / f"{case}.nii.gz").dataobj)
    image = load_inputs(
        {
            "flair": folder / "Flair_subtrMeanDivStd.nii.gz",
            "t1c": folder / "T1c_subtrMeanDivStd.nii.gz",
        },
        reference="flair",
        order=("flair", "t1c"),
    )
    fp32 = load_bundle(GLIOMA, device="cpu", precision="fp32").segment(image)[0].numpy()
    np.testing.assert_array_equal(fp32, stock)
    fast = load_bundle(GLIOMA, device="cpu", precision="bf16").segment(image)[0].numpy()
    for region in ((1, 4), (1, 2, 4), (4,)):  # TC, WT, ET as the model card reads them
        assert _dice(np.isin(fast, region), np.isin(stock, region)) >= 0.995, region


@pytest.mark.realdata
def test_nodule_seed_errors(data_dir: Path, nodule: LoadedBundle) -> None:
    image, _ = _lidc(data_dir, "LIDC-IDRI-0014_R_1")
    with pytest.raises(BundleError, match="no seeds were given"):
        nodule.segment(image)
    far = Seed((1000.0, -2000.0, 30.0), label="typo")
    with pytest.raises(ConfigError, match=r"seed \(typo\) at LPS \(1000\.0, -2000\.0, 30\.0\)"):
        nodule.segment(image, seeds=[far])


@pytest.mark.realdata
def test_overlapping_seeds_give_the_union(data_dir: Path, nodule: LoadedBundle) -> None:
    image, ref = _lidc(data_dir, "LIDC-IDRI-0016_R_1")
    (seed,) = seeds_from_mask(ref, image)
    other = Seed((seed.point_lps[0] + 4.0, seed.point_lps[1] - 3.0, seed.point_lps[2]))
    one = nodule.segment(image, seeds=[seed]).as_tensor()
    two = nodule.segment(image, seeds=[other]).as_tensor()
    both = nodule.segment(image, seeds=[seed, other]).as_tensor()
    assert torch.equal(both, torch.maximum(one, two))
    assert set(torch.unique(both).tolist()) == {0, 1}


@pytest.mark.realdata
def test_nodule_on_a_full_ct_seeded_from_rtstruct(data_dir: Path, nodule: LoadedBundle) -> None:
    """LUNG1-001 (512 x 512 x 134 DICOM), seed at the GTV-1 centroid: a mask on the series grid.

    GTV-1 is a large tumour (about 55,000 voxels), larger than the 34 x 34 x 20 mm VOI, so
    the mask covers the part of it inside the box and nothing outside the tumour.
    """
    ct = read_series(data_dir / "lung1" / "LUNG1-001" / "image")
    rtstruct, roi = data_dir / "lung1" / "LUNG1-001" / "mask_rtstruct" / "1-1.dcm", "GTV-1"
    seeds = seeds_from_rtstruct(rtstruct, ct, roi=roi)
    assert len(seeds) == 1
    label = nodule.segment(ct, seeds=seeds)
    assert label.shape == ct.shape and torch.equal(label.affine, ct.affine)
    assert label.meta["SeriesInstanceUID"] == ct.meta["SeriesInstanceUID"]
    assert label.meta["sop_instance_uids"] == ct.meta["sop_instance_uids"]
    gtv = rtstruct_to_mask(rtstruct, ct, roi=re.compile(re.escape(roi)))[0] > 0
    pred = label[0] > 0
    assert int(pred.sum()) > 100
    assert float((pred & gtv).sum() / pred.sum()) > 0.9
