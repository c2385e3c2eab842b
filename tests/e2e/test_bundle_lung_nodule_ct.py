"""Tests for the lung_nodule_ct bundle: training smoke, standalone inference, metadata, export."""

from __future__ import annotations

import json
import subprocess
from importlib.resources import as_file
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import UNet

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.bundle.verify import default_schema
from tests.support.bundle_modules import load_bundle_script, run_bundle_standalone

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"
SPLIT = BUNDLE.parent.parent / "data" / "datasets" / "lidc_nodules_split.json"


def _run_bundle(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_bundle_standalone(BUNDLE, args, data_dir)


def _held_out_cases(count: int) -> list[str]:
    split = json.loads(SPLIT.read_text(encoding="utf-8"))
    return list(split["folds"][0]["validation"][:count])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a > 0, b > 0
    return float(2.0 * (x & y).sum() / max(x.sum() + y.sum(), 1))


def test_split_is_by_patient() -> None:
    split = json.loads(SPLIT.read_text(encoding="utf-8"))
    patient = {c["case"]: c["patient"] for c in split["cases"]}
    fold = split["folds"][0]
    train = {patient[c] for c in fold["training"]}
    val = {patient[c] for c in fold["validation"]}
    assert not train & val
    assert len(fold["training"]) + len(fold["validation"]) == len(split["cases"]) == 794
    assert all(not c["image"].startswith("/") for c in split["cases"])


def test_configs_share_preprocessing_constants() -> None:
    train = json.loads((BUNDLE / "configs" / "train.json").read_text(encoding="utf-8"))
    infer = json.loads((BUNDLE / "configs" / "inference.json").read_text(encoding="utf-8"))
    for key in ("pixdim", "patch_size", "pad_hu", "intensity", "network_def"):
        assert train[key] == infer[key], key
    split = json.loads(SPLIT.read_text(encoding="utf-8"))
    stats = split["foreground_intensity"]
    assert train["intensity"]["clip_low"] == stats["percentile_0_5"]
    assert train["intensity"]["std"] == stats["std_clipped"]


def _one_epoch(out: Path, *, limit_train: int, limit_val: int, batch_size: int) -> list[str]:
    """Arguments of a one-epoch training smoke run into ``out``, validated once."""
    return [
        *("--ckpt_dir", str(out), "--output_dir", str(out)),
        *("--limit_train", str(limit_train), "--limit_val", str(limit_val)),
        *("--batch_size", str(batch_size), "--num_samples", "1"),
        *("--max_epochs", "1", "--val_interval", "1"),
    ]


@pytest.mark.realdata
@pytest.mark.slow
def test_training_smoke_run(data_dir: Path, tmp_path: Path) -> None:
    """Two iterations of the bundle's own train.json on a tiny subset, into tmp_path."""
    _run_bundle(
        [
            "run",
            "--config_file",
            "configs/train.json",
            "--bundle_root",
            str(BUNDLE),
            "--dataset_dir",
            str(data_dir),
            *_one_epoch(tmp_path, limit_train=4, limit_val=2, batch_size=2),
        ],
        data_dir,
    )
    assert (tmp_path / "model.pt").is_file()
    assert (tmp_path / "checkpoints" / "checkpoint_last.pt").is_file()
    assert not list(tmp_path.glob("checkpoint*.pt"))  # training state stays out of ckpt_dir
    rows = (tmp_path / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("epoch,iteration,loss")
    assert len(rows) == 2


@pytest.mark.realdata
@pytest.mark.slow
def test_standalone_inference_on_held_out_vois(data_dir: Path, tmp_path: Path) -> None:
    """Model Zoo command line, monai_tumor unimportable: 0/1 masks on the input grid, Dice."""
    cases = _held_out_cases(4)
    in_dir = tmp_path / "in"
    out_dir = tmp_path / "out"
    in_dir.mkdir()
    for case in cases:
        (in_dir / f"{case}.nii.gz").symlink_to(
            data_dir / "lidc_nodules" / "image" / f"{case}.nii.gz"
        )

    _run_bundle(
        [
            "run",
            "--config_file",
            "configs/inference.json",
            "--bundle_root",
            str(BUNDLE),
            "--dataset_dir",
            str(in_dir),
            "--output_dir",
            str(out_dir),
        ],
        data_dir,
    )

    dices = []
    for case in cases:
        src = nib.Nifti1Image.from_filename(in_dir / f"{case}.nii.gz")
        out = nib.Nifti1Image.from_filename(out_dir / f"{case}.nii.gz")
        pred = np.asarray(out.dataobj)
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
        assert out.get_data_dtype() == np.uint8
        assert set(np.unique(pred).tolist()) <= {0, 1}
        ref = np.asarray(
            nib.Nifti1Image.from_filename(
                data_dir / "lidc_nodules" / "nodule_mask" / f"{case}.nii.gz"
            ).dataobj
        )
        dices.append(_dice(pred, ref))
    assert float(np.mean(dices)) > 0.7, dices


def test_metadata_and_network_shapes(tmp_path: Path) -> None:
    with as_file(default_schema()) as schema:
        verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(schema))
    # `_requires_: @bundle_path_entry` puts the bundle on sys.path and imports its `scripts`;
    # bundle_scripts gives that back afterwards (the conftest guard checks it).
    with bundle_scripts(BUNDLE):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            config_file=str(BUNDLE / "configs" / "inference.json"),
            bundle_root=str(BUNDLE),
        )
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["channel_def"]
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "nodule"}
    assert 0.0 < meta["eval_metrics"]["mean_dice"] <= 1.0


def test_torchscript_matches_state_dict() -> None:
    """model.ts (made by ckpt_export) == network_def + model.pt, every member included."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    with bundle_scripts(BUNDLE):  # no other bundle's `scripts` package in the way
        net = parser.get_parsed_content("network_def")
    assert len(net.members) == parser["network_def"]["num_members"]
    net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", map_location="cpu"))
    net.eval()
    scripted = torch.jit.load(str(BUNDLE / "models" / "model.ts"), map_location="cpu")
    scripted.eval()
    x = torch.randn(1, 1, *parser["patch_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-4)


def test_weights_are_small() -> None:
    for name in ("model.pt", "model.ts"):
        assert (BUNDLE / "models" / name).stat().st_size < 25 * 1024 * 1024


def _bundle_module(name: str) -> ModuleType:
    return load_bundle_script(BUNDLE, name)


def _bundle_transforms() -> ModuleType:
    return _bundle_module("transforms")


_SMALL_UNET: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 1,
    "norm": "instance",
}


def _small_input() -> torch.Tensor:
    return torch.randn(2, 1, 8, 8, 4, generator=torch.Generator().manual_seed(3))


def test_ensemble_output_is_log_mean_member_probability() -> None:
    ensemble = _bundle_module("ensemble").UNetEnsemble(num_members=3, **_SMALL_UNET).eval()
    x = _small_input()
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), dim=1) for m in ensemble.members]).mean(0)
        out = ensemble(x)
        scripted = torch.jit.script(ensemble)(x)
    torch.testing.assert_close(torch.softmax(out, dim=1), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.exp(out), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scripted, out)
    # members start from different random weights (separate UNet instances, not copies)
    first, second = (next(m.parameters()) for m in ensemble.members[:2])
    assert not torch.equal(first, second)


def test_one_member_ensemble_is_the_plain_unet() -> None:
    """One member returns its logits, and loads bundle 0.2.x (plain UNet) weights."""
    module = _bundle_module("ensemble")
    plain = UNet(**_SMALL_UNET).eval()
    single = module.UNetEnsemble(num_members=1, **_SMALL_UNET).eval()
    single.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(single(_small_input()), plain(_small_input()))
    pair = module.UNetEnsemble(num_members=2, **_SMALL_UNET)
    with pytest.raises(RuntimeError, match=r"members\.0"):
        pair.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="at least 1"):
        module.UNetEnsemble(num_members=0, **_SMALL_UNET)


@pytest.mark.parametrize("layout", ["plain", "wrapped", "one_member"])
def test_assemble_members_from_separate_checkpoints(layout: str, tmp_path: Path) -> None:
    module = _bundle_module("ensemble")
    sources = [UNet(**_SMALL_UNET).eval() for _ in range(2)]
    paths = []
    for index, net in enumerate(sources):
        state: dict[str, object] = dict(net.state_dict())
        if layout == "one_member":
            state = {f"members.0.{k}": v for k, v in state.items()}
        if layout == "wrapped":
            state = {"model": state, "optimizer": {}}
        paths.append(tmp_path / f"member{index}.pt")
        torch.save(state, paths[-1])
    out = module.assemble_members(paths, tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member0.pt", "member1.pt", "model.pt"]
    ensemble = module.UNetEnsemble(num_members=2, **_SMALL_UNET).eval()
    ensemble.load_state_dict(torch.load(out, map_location="cpu", weights_only=True))
    with torch.no_grad():
        for member, source in zip(ensemble.members, sources, strict=True):
            torch.testing.assert_close(member(_small_input()), source(_small_input()))


def test_assemble_members_rejects_mismatched_checkpoints(tmp_path: Path) -> None:
    module = _bundle_module("ensemble")
    small = tmp_path / "small.pt"
    torch.save(UNet(**_SMALL_UNET).state_dict(), small)
    wider = tmp_path / "wider.pt"
    torch.save(UNet(**{**_SMALL_UNET, "channels": [6, 12]}).state_dict(), wider)
    with pytest.raises(ValueError, match=r"wider\.pt: member 1 does not have"):
        module.assemble_members([small, wider], tmp_path / "out.pt")
    pair = tmp_path / "pair.pt"
    torch.save(module.UNetEnsemble(num_members=2, **_SMALL_UNET).state_dict(), pair)
    with pytest.raises(ValueError, match=r"pair\.pt: the checkpoint is an ensemble of 2"):
        module.assemble_members([pair], tmp_path / "out.pt")
    with pytest.raises(ValueError, match="at least one"):
        module.assemble_members([], tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        (False, False),
        ("true", True),
        (True, True),
    ],
)
def test_command_line_switches(value: object, expected: bool) -> None:
    """`--tta false` arrives as the string "false" and must switch TTA off."""
    assert _bundle_transforms().as_bool(value) is expected


def test_flip_tta_averages_mirrored_predictions() -> None:
    module = _bundle_transforms()
    net = torch.nn.Conv3d(1, 2, kernel_size=3, padding=1)
    base = SimpleInferer()
    x = torch.randn(1, 1, 8, 8, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        off = module.FlipTTAInferer(base, enabled="false")(x, net)
        on = module.FlipTTAInferer(base, enabled=True)(x, net)
        expected = torch.stack(
            [
                torch.flip(torch.softmax(net(torch.flip(x, d)), 1), d)
                if d
                else torch.softmax(net(x), 1)
                for d in ([], [2], [3], [2, 3], [4], [2, 4], [3, 4], [2, 3, 4])
            ]
        ).mean(0)
    torch.testing.assert_close(off, net(x))
    torch.testing.assert_close(torch.softmax(on, 1), expected, rtol=1e-5, atol=1e-6)


class _CountingInferer(SlidingWindowInferer):
    """A sliding window that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__(roi_size=(8, 8, 4), sw_batch_size=3, overlap=0.5, mode="gaussian")
        self.batches: list[int] = []

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        self.batches.append(int(inputs.shape[0]))
        return super().__call__(inputs, network, *args, **kwargs)


@pytest.mark.parametrize(
    ("per_call", "max_voxels", "calls", "batch"),
    [
        (8, 1 << 20, 1, 1),
        (8, 1 << 20, 1, 2),
        (3, 1 << 20, 3, 1),
        (8, 3, 8, 1),
        ("voxels of 3 copies", None, 3, 1),
    ],
)
def test_flip_tta_batched_copies_equal_the_loop(
    per_call: int | str, max_voxels: int | None, calls: int, batch: int
) -> None:
    """Mirrored copies stacked into one call give the loop's probabilities (1e-5), on an
    input of three windows that flipping does not map onto themselves, with instance
    norm; the voxel bound splits the copies into calls of at most that many voxels."""
    module = _bundle_transforms()
    torch.manual_seed(0)
    net = UNet(**{**_SMALL_UNET, "norm": "instance"}).eval()
    x = torch.randn(batch, 1, 13, 8, 4, generator=torch.Generator().manual_seed(2))
    if max_voxels is None:
        per_call, max_voxels = 8, 3 * x.numel()
    base = _CountingInferer()
    counted = _CountingInferer()
    with torch.no_grad():
        loop = module.FlipTTAInferer(base, flips_per_call=1, precision="float32")(x, net)
        stacked = module.FlipTTAInferer(
            counted, flips_per_call=per_call, max_call_voxels=max_voxels, precision="float32"
        )(x, net)
    assert base.batches == [batch] * 8
    assert len(counted.batches) == calls and sum(counted.batches) == 8 * batch
    assert max(counted.batches) * x[0].numel() <= max(max_voxels, x.numel())
    torch.testing.assert_close(torch.softmax(stacked, 1), torch.softmax(loop, 1), rtol=0, atol=1e-5)


class _AutocastProbe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=3, padding=1)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return self.conv(x)


@pytest.mark.parametrize("enabled", [True, False])
def test_flip_tta_precision(enabled: bool) -> None:
    """bfloat16 runs the network under autocast and returns float32 close to float32."""
    module = _bundle_transforms()
    torch.manual_seed(0)
    net = _AutocastProbe()
    x = torch.randn(1, 1, 8, 8, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = module.FlipTTAInferer(SimpleInferer(), enabled=enabled, precision="float32")(x, net)
        assert net.seen and not any(net.seen)
        net.seen.clear()
        half = module.FlipTTAInferer(SimpleInferer(), enabled=enabled, precision="bfloat16")(x, net)
        assert net.seen and all(net.seen)
    assert half.dtype == torch.float32
    torch.testing.assert_close(torch.softmax(half, 1), torch.softmax(full, 1), rtol=0, atol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"flips_per_call": 0}, "flips_per_call"), ({"precision": "auto"}, "precision")],
)
def test_flip_tta_rejects_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _bundle_transforms().FlipTTAInferer(SimpleInferer(), **kwargs)


@pytest.mark.parametrize(
    "configs", [["inference.json"], ["inference.json", "evaluate.json"]], ids=["infer", "eval"]
)
@pytest.mark.parametrize("threshold", [None, 0.3, 0.5])
def test_foreground_threshold_in_postprocessing(
    configs: list[str], threshold: float | None
) -> None:
    """The mask is p(nodule) >= fg_threshold, taken after inversion to the input grid."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / name) for name in configs])
    if threshold is not None:
        parser["fg_threshold"] = threshold
    t = float(parser.get_parsed_content("fg_threshold"))
    targets = [item["_target_"] for item in parser["postprocessing"]["transforms"]]
    start = targets.index("Invertd") + 1
    assert targets[start : start + 2] == ["Lambdad", "AsDiscreted"]
    select, discretize = (
        parser.get_parsed_content(f"postprocessing#transforms#{i}") for i in (start, start + 1)
    )
    logits = torch.randn(2, 9, 7, 5, generator=torch.Generator().manual_seed(2))
    prob = torch.softmax(logits, 0)
    mask = discretize(select({"pred": prob}))["pred"]
    assert mask.shape == (1, 9, 7, 5)
    torch.testing.assert_close(mask.float(), (prob[1:] >= t).float())
    if t == 0.5:  # the same as argmax over (background, nodule)
        torch.testing.assert_close(mask.float(), prob.argmax(0, keepdim=True).float())


def test_largest_component_keeps_the_biggest_blob() -> None:
    module = _bundle_transforms()
    mask = torch.zeros(12, 12, 6)
    mask[1:4, 1:4, 1:3] = 1
    mask[6:11, 6:11, 2:5] = 1
    kept = module.largest_component(mask)
    assert int(kept.sum()) == 75
    assert not kept[1:4, 1:4, 1:3].any()


@pytest.mark.realdata
@pytest.mark.slow
def test_voi_cut_segment_paste_round_trip(data_dir: Path, tmp_path: Path) -> None:
    """CropVOIAroundPoint at the nodule centroid -> bundle -> paste_voi_mask onto the source."""
    from monai.transforms import LoadImage

    from monai_tumor.geometry import ras_to_lps, voxel_to_patient
    from monai_tumor.transforms.voi import CropVOIAroundPoint, VOISpec, paste_voi_mask

    case = _held_out_cases(1)[0]
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    source = loader(data_dir / "lidc_nodules" / "image" / f"{case}.nii.gz")
    ref = np.asarray(
        nib.Nifti1Image.from_filename(
            data_dir / "lidc_nodules" / "nodule_mask" / f"{case}.nii.gz"
        ).dataobj
    )
    centroid = voxel_to_patient(ras_to_lps(source.affine.numpy()), np.argwhere(ref > 0).mean(0))
    # this nodule spans 37.5 mm in z: a box larger than the 20 mm default holds all of it
    voi = CropVOIAroundPoint(spec=VOISpec(size_mm=(45.0, 45.0, 40.0)))(source, centroid)
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    nib.save(
        nib.Nifti1Image(voi[0].numpy().astype(np.int16), voi.affine.numpy()),
        in_dir / f"{case}.nii.gz",
    )

    _run_bundle(
        [
            "run",
            "--config_file",
            "configs/inference.json",
            "--bundle_root",
            str(BUNDLE),
            "--dataset_dir",
            str(in_dir),
            "--output_dir",
            str(out_dir),
        ],
        data_dir,
    )

    pred_voi = loader(out_dir / f"{case}.nii.gz")
    pasted = paste_voi_mask(pred_voi, pred_voi, source)
    assert tuple(pasted.shape[1:]) == ref.shape
    assert _dice(pasted[0].numpy(), ref) > 0.7


# --------------------------------------------------------------------------- bootstrap


def _write_eval(folder: Path, values: dict[str, float]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filename,class0,mean"] + [f"{name},{v},{v}" for name, v in values.items()]
    (folder / "mean_dice_raw.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


NODULES = {
    "/d/image/LIDC-IDRI-0001_R_1.nii.gz": 0.90,
    "/d/image/LIDC-IDRI-0001_R_2.nii.gz": 0.70,
    "/d/image/LIDC-IDRI-0002_R_1.nii.gz": 0.85,
    "/d/image/LIDC-IDRI-0003_R_1.nii.gz": 0.80,
    "/d/image/LIDC-IDRI-0003_R_2.nii.gz": 0.95,
}


def test_bootstrap_resamples_patients(tmp_path: Path) -> None:
    boot = _bundle_module("bootstrap")
    values = boot.per_nodule_dice(_write_eval(tmp_path / "run", NODULES))
    assert values == NODULES
    result = boot.bootstrap_mean(values, resamples=2000, seed=0)
    assert result.mean == pytest.approx(np.mean(list(NODULES.values())))
    assert (result.nodules, result.patients) == (5, 3)
    assert result.low < result.mean < result.high
    # every resample is a mean of whole patients: bounded by the patients' extremes
    patient_means = [0.80, 0.85, 0.875]
    assert min(patient_means) <= result.low and result.high <= max(patient_means)
    assert boot.bootstrap_mean(values, resamples=2000, seed=0) == result  # seeded
    same = boot.bootstrap_mean(dict.fromkeys(NODULES, 0.8), resamples=100)
    assert same.low == pytest.approx(0.8) and same.high == pytest.approx(0.8)


def test_bootstrap_cli_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boot = _bundle_module("bootstrap")
    run = _write_eval(tmp_path / "run", NODULES)
    assert boot.main([str(run), str(run)]) == 0
    out = capsys.readouterr().out
    assert "mean Dice per nodule 0.8400" in out
    assert "paired difference +0.0000, 95 % CI +0.0000 to +0.0000" in out
    other = _write_eval(tmp_path / "other", dict(list(NODULES.items())[:3]))
    assert boot.main([str(run), str(other)]) == 2
    assert "holds other nodules" in capsys.readouterr().err
    assert boot.main([]) == 2
    with pytest.raises(ValueError, match="no LIDC-IDRI patient ID"):
        boot.bootstrap_mean({"case.nii.gz": 0.5})
    with pytest.raises(ValueError, match="no values"):
        boot.bootstrap_mean({})


def test_bootstrap_by_size_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boot = _bundle_module("bootstrap")
    masks = tmp_path / "masks"
    masks.mkdir()
    # equivalent diameters: 8 mm (a 268 mm^3 cube of 1 mm voxels) and 12.4 mm (1000 mm^3)
    for name, edge in (("LIDC-IDRI-0001_R_1", 0), ("LIDC-IDRI-0002_R_1", 10)):
        data = np.zeros((20, 20, 20), np.uint8)
        if edge:
            data[:edge, :edge, :edge] = 1
        else:
            data.reshape(-1)[:268] = 1
        nib.save(nib.Nifti1Image(data, np.eye(4)), masks / f"{name}.nii.gz")
    assert boot.equivalent_diameter_mm(masks / "LIDC-IDRI-0002_R_1.nii.gz") == pytest.approx(
        (6000 / np.pi) ** (1 / 3)
    )
    assert [boot.size_class(d) for d in (3.0, 10.0, 29.9, 30.0)] == [
        "< 10 mm",
        "10-30 mm",
        "10-30 mm",
        ">= 30 mm",
    ]
    run = _write_eval(
        tmp_path / "run",
        {"/d/image/LIDC-IDRI-0001_R_1.nii.gz": 0.7, "/d/image/LIDC-IDRI-0002_R_1.nii.gz": 0.9},
    )
    assert boot.main([str(run), "--by-size", str(masks)]) == 0
    out = capsys.readouterr().out
    assert "< 10 mm: mean Dice 0.7000" in out and "(1 nodules, 1 patients)" in out
    assert "10-30 mm: mean Dice 0.9000" in out and ">= 30 mm: no nodule" in out
    with pytest.raises(FileNotFoundError, match="reference mask"):
        boot.main([str(run), "--by-size", str(tmp_path)])


# --------------------------------------------------------------------------- lung lesions


LESION_SPLIT = BUNDLE.parent.parent / "data" / "datasets" / "lung_lesions_split.json"


def test_log_zoom_is_log_uniform_and_moves_image_and_label_together() -> None:
    zoom = _bundle_transforms().RandLogZoomd(
        keys=["image", "label"],
        prob=1.0,
        min_zoom=0.5,
        max_zoom=3.0,
        mode=["trilinear", "nearest"],
        pad_value=[-2.0, 0.0],
    )
    zoom.set_random_state(seed=0)
    factors = []
    for _ in range(400):
        zoom.randomize()
        factors.append(zoom.factor)
    logs = np.log(factors)
    assert min(factors) >= 0.5 and max(factors) <= 3.0
    # log-uniform: half the draws below the geometric mean sqrt(0.5 * 3) (uniform: 29 %)
    assert 0.42 < float(np.mean(np.asarray(factors) < np.sqrt(1.5))) < 0.58
    assert abs(float(np.mean(logs)) - float(np.log(1.5) / 2)) < 0.08

    label = torch.zeros((1, 40, 40, 24))
    label[0, 16:24, 16:24, 8:16] = 1.0  # an 8-voxel cube at the centre
    image = label * 3.0 - 1.0
    for factor, fg_ratio in ((2.0, 8.0), (0.5, 1.0 / 8.0)):
        fixed = _bundle_transforms().RandLogZoomd(
            keys=["image", "label"],
            prob=1.0,
            min_zoom=factor,
            max_zoom=factor,
            mode=["trilinear", "nearest"],
            pad_value=[-2.0, 0.0],
        )
        out = fixed({"image": image, "label": label})
        assert fixed.factor == pytest.approx(factor)
        assert out["image"].shape == image.shape and out["label"].shape == label.shape
        fg = out["label"] > 0.5
        assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
        assert float(fg.sum()) == pytest.approx(float(label.sum()) * fg_ratio, rel=0.2)
        # image and label zoomed by the same factor: the bright cube is where the label is
        assert float((out["image"] > 0.5).eq(fg).float().mean()) > 0.98
    # zooming out pads with each key's constant (air for the image, background for the label)
    assert float(out["image"][0, 0, 0, 0]) == -2.0 and float(out["label"][0, 0, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="min_zoom"):
        _bundle_transforms().RandLogZoomd(keys="image", min_zoom=2.0, max_zoom=1.0)


def _lesion_split_with_one_crop(tmp_path: Path) -> Path:
    split = json.loads(LESION_SPLIT.read_text(encoding="utf-8"))
    entry = split["full_ct"][0]
    entry["nodules"] = entry["nodules"][:1]
    entry["nodules"][0]["crop_centres_lps"] = entry["nodules"][0]["crop_centres_lps"][:1]
    split["full_ct"] = [entry]
    path = tmp_path / "lung_lesions_split.json"
    path.write_text(json.dumps(split), encoding="utf-8")
    return path


def test_full_ct_vois_lists_the_folds_crops(tmp_path: Path) -> None:
    datalist = _bundle_module("datalist")
    split_file = _lesion_split_with_one_crop(tmp_path)
    assert datalist.full_ct_vois(str(split_file), "", 0, "training") == []
    with pytest.raises(FileNotFoundError, match="cut the full-CT VOIs"):
        datalist.full_ct_vois(str(split_file), str(tmp_path / "vois"), 0, "training")
    name = "LIDC-IDRI-0001_N1_C0.nii.gz"
    for part in ("image", "label"):
        (tmp_path / "vois" / part).mkdir(parents=True)
        (tmp_path / "vois" / part / name).write_bytes(b"")
    (item,) = datalist.full_ct_vois(str(split_file), str(tmp_path / "vois"), 0, "training")
    assert item["case"] == "LIDC-IDRI-0001_N1_C0" and item["image"].endswith("image/" + name)
    assert item["label"].endswith("label/" + name)
    assert datalist.full_ct_vois(str(split_file), str(tmp_path / "vois"), 0, "validation") == []
    with pytest.raises(ValueError, match="fold 3"):
        datalist.full_ct_vois(str(split_file), str(tmp_path / "vois"), 3, "training")


@pytest.mark.realdata
@pytest.mark.slow
def test_lesion_training_smoke_run(data_dir: Path, tmp_path: Path) -> None:
    """train_lesions.json over train.json: 48 x 48 x 32 patches, zoom, a real full-CT VOI."""
    from monai_tumor.training.lung_lesions import cut_full_ct_vois

    split_file = _lesion_split_with_one_crop(tmp_path)
    entry = json.loads(split_file.read_text(encoding="utf-8"))["full_ct"][0]
    cut_full_ct_vois(entry, data_dir, tmp_path / "vois")
    out = tmp_path / "run"
    proc = _run_bundle(
        [
            "run",
            "--config_file",
            "['configs/train.json','configs/train_lesions.json']",
            "--logging_file",
            "configs/logging.conf",
            "--bundle_root",
            str(BUNDLE),
            *("--lesion_split_file", str(split_file)),
            *("--full_ct_voi_dir", str(tmp_path / "vois")),
            *("--network_def#num_members", "1", "--init_ckpt", str(_member_zero(tmp_path))),
            *_one_epoch(out, limit_train=2, limit_val=1, batch_size=3),
        ],
        data_dir,
    )
    assert "Restored all variables from" in proc.stdout + proc.stderr  # --init_ckpt loaded
    assert (out / "model.pt").is_file()
    rows = (out / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2
    # one iteration: the two LIDC VOIs and the full-CT VOI in one batch of 3
    assert rows[1].split(",")[1] == "1"


def _member_zero(tmp_path: Path) -> Path:
    state = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "member0.pt"
    torch.save({k: v for k, v in state.items() if k.startswith("members.0.")}, path)
    return path
