"""`monai_tumor.evaluation`: Dice / HD95 / surface Dice on synthetic and real masks."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_tumor.errors import ConfigError, IngestError, InvalidSeriesError
from monai_tumor.evaluation import (
    CSV_COLUMNS,
    EvaluationOptions,
    evaluate,
    evaluate_case,
    match_cases,
    parse_label_groups,
    write_metrics_csv,
)

SPACING = (0.7, 0.9, 2.5)  # anisotropic, mm


def _affine(spacing: tuple[float, float, float] = SPACING) -> np.ndarray:
    """RAS affine of an LPS-like grid: x, y flipped, offset origin."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = (12.0, -40.0, 7.5)
    return affine


def _volume(array: np.ndarray, affine: np.ndarray | None = None) -> MetaTensor:
    aff = _affine() if affine is None else affine
    return MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(aff))


def _box(shift: tuple[int, int, int] = (0, 0, 0), value: int = 1) -> np.ndarray:
    a = np.zeros((48, 40, 24), np.uint8)
    x, y, z = shift
    a[10 + x : 30 + x, 8 + y : 28 + y, 6 + z : 16 + z] = value
    return a


def _sphere(centre: tuple[float, float, float], radius: float) -> np.ndarray:
    idx = np.indices((64, 64, 64)).astype(np.float64)
    r2 = sum((idx[i] - centre[i]) ** 2 for i in range(3))
    return (r2 <= radius**2).astype(np.uint8)


# box is 20 x 20 x 10 voxels; shifting along axis a by s voxels keeps (L_a - s)/L_a overlap
@pytest.mark.parametrize(("axis", "length"), [(0, 20), (1, 20), (2, 10)])
@pytest.mark.parametrize("shift", [1, 2, 3])
def test_shifted_box_dice_and_hd95(axis: int, length: int, shift: int) -> None:
    vec = [0, 0, 0]
    vec[axis] = shift
    (m,) = evaluate_case(_volume(_box(tuple(vec))), _volume(_box()))  # type: ignore[arg-type]
    assert m.dice == pytest.approx(1 - shift / length, abs=1e-6)
    # the front/back faces (a third of the surface) are exactly `shift` voxels away
    assert m.hd95_mm == pytest.approx(shift * SPACING[axis], abs=1e-5)
    assert m.pred_voxels == m.ref_voxels == 4000
    assert m.volume_ref_ml == pytest.approx(4000 * math.prod(SPACING) / 1000)


def test_surface_dice_tolerance() -> None:
    ref = _volume(_box())
    shifted = _volume(_box((1, 0, 0)))  # 0.7 mm
    (within,) = evaluate_case(shifted, ref, tolerance_mm=1.0)
    (beyond,) = evaluate_case(shifted, ref, tolerance_mm=0.5)
    assert within.surface_dice == pytest.approx(1.0)
    assert 0.0 < beyond.surface_dice < 1.0


def test_sphere_dice_matches_lens_volume() -> None:
    radius, d = 14.0, 8.0
    pred = _sphere((32, 32, 32 + d), radius)
    ref = _sphere((32, 32, 32), radius)
    # lens of two equal spheres at distance d: pi (4r + d)(2r - d)^2 / 12
    lens = math.pi * (4 * radius + d) * (2 * radius - d) ** 2 / 12
    expected = lens / (4 / 3 * math.pi * radius**3)
    (m,) = evaluate_case(pred, ref, spacing=(1.0, 1.0, 1.0))
    assert m.dice == pytest.approx(expected, abs=0.02)


@settings(max_examples=15, deadline=None)
@given(
    sx=st.floats(0.3, 3.0),
    sz=st.floats(0.5, 5.0),
    shift=st.integers(1, 4),
)
def test_hd95_equals_shift_in_mm(sx: float, sz: float, shift: int) -> None:
    spacing = (sx, 1.0, sz)
    pred, ref = _box((0, 0, shift)), _box()
    (m,) = evaluate_case(
        _volume(pred, _affine(spacing)), _volume(ref, _affine(spacing)), tolerance_mm=0.1
    )
    assert m.hd95_mm == pytest.approx(shift * sz, rel=1e-5)


def test_empty_conventions() -> None:
    empty = np.zeros((48, 40, 24), np.uint8)
    box = _box()
    both = evaluate_case(_volume(empty), _volume(empty), labels={"tumour": [1]})
    assert [(m.dice, m.hd95_mm, m.surface_dice) for m in both] == [(1.0, 0.0, 1.0)]
    for pred, ref in ((empty, box), (box, empty)):
        (m,) = evaluate_case(_volume(pred), _volume(ref))
        assert (m.dice, m.surface_dice) == (0.0, 0.0)
        assert math.isinf(m.hd95_mm)
    # no labels anywhere and no groups given: nothing to report
    assert evaluate_case(_volume(empty), _volume(empty)) == []


def test_label_groups_brats_style() -> None:
    ref = _box(value=2)
    ref[15:25, 12:22, 8:14] = 1  # necrosis inside edema
    ref[18:22, 15:19, 10:12] = 4  # enhancing inside necrosis
    pred = ref.copy()
    pred[pred == 4] = 1  # missed enhancing tumour
    groups = parse_label_groups("WT=1,2,3,4;TC=1,3,4;ET=4")
    rows = {m.label: m for m in evaluate_case(_volume(pred), _volume(ref), labels=groups)}
    assert list(rows) == ["WT", "TC", "ET"]
    assert rows["WT"].dice == rows["TC"].dice == 1.0
    assert rows["ET"].dice == 0.0
    assert rows["ET"].pred_voxels == 0
    assert rows["ET"].ref_voxels == 4 * 4 * 2
    # default: one class per label present in reference or prediction
    default = evaluate_case(_volume(pred), _volume(ref))
    assert [m.label for m in default] == ["1", "2", "4"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("WT=1,2,3,4;TC=1,3,4;ET=4", {"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (4,)}),
        ("1,2", {"1": (1,), "2": (2,)}),
        ("tumour = 1 ; ", {"tumour": (1,)}),
    ],
)
def test_parse_label_groups(text: str, expected: dict[str, tuple[int, ...]]) -> None:
    assert parse_label_groups(text) == expected


@pytest.mark.parametrize("text", ["", "WT=", "WT=a", "WT=0", "A=1;A=2"])
def test_parse_label_groups_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_label_groups(text)


def test_mismatched_affine_raises() -> None:
    moved = _affine()
    moved[2, 3] += 2.5  # one slice off
    with pytest.raises(InvalidSeriesError, match="affines differ"):
        evaluate_case(_volume(_box(), moved), _volume(_box()))
    flipped = _affine()
    flipped[0, 0] *= -1
    with pytest.raises(InvalidSeriesError, match="not on the same grid"):
        evaluate_case(_volume(_box(), flipped), _volume(_box()))
    tiny = _affine()
    tiny[0, 3] += 5e-4  # below the 1e-3 mm tolerance: same grid
    (m,) = evaluate_case(_volume(_box(), tiny), _volume(_box()))
    assert m.dice == 1.0


def test_mismatched_shape_raises() -> None:
    with pytest.raises(InvalidSeriesError, match="differs from reference grid"):
        evaluate_case(_volume(_box()[:-1]), _volume(_box()))


def test_non_label_prediction_raises() -> None:
    soft = _box().astype(np.float32) * 0.6
    with pytest.raises(InvalidSeriesError, match="non-integer"):
        evaluate_case(_volume(soft), _volume(_box()))


def _ct_in_hu(box: np.ndarray) -> np.ndarray:
    return box.astype(np.int16) * 1040 - 1000


def _mr_intensities(box: np.ndarray) -> np.ndarray:
    return np.arange(box.size, dtype=np.int32).reshape(box.shape) % 1500


@pytest.mark.parametrize(
    ("make", "message"),
    [(_ct_in_hu, "has negative values (down to -1000)"), (_mr_intensities, "holds 1500 distinct")],
)
def test_an_image_given_as_a_label_map_is_refused(
    make: Callable[[np.ndarray], np.ndarray], message: str
) -> None:
    image = make(_box())
    with pytest.raises(InvalidSeriesError, match=re.escape(f"the prediction {message}")):
        evaluate_case(_volume(image), _volume(_box()))
    with pytest.raises(InvalidSeriesError, match=re.escape(f"the reference {message}")):
        evaluate_case(_volume(_box()), _volume(image))


def test_arrays_need_spacing() -> None:
    with pytest.raises(InvalidSeriesError, match="spacing"):
        evaluate_case(_box(), _box())
    (m,) = evaluate_case(_box((0, 0, 1)), _box(), spacing=(1.0, 1.0, 3.0))
    assert m.hd95_mm == pytest.approx(3.0)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, _affine() if affine is None else affine), str(path))
    return path


def test_folders_match_cases_and_write_csv(tmp_path: Path) -> None:
    _save(tmp_path / "pred" / "a.nii.gz", _box((1, 0, 0)))
    _save(tmp_path / "pred" / "b.nii.gz", _box())
    _save(tmp_path / "ref" / "a.nii.gz", _box())
    _save(tmp_path / "ref" / "b" / "seg.nii.gz", _box())  # case folder with one reference
    pairs = match_cases(tmp_path / "pred", tmp_path / "ref")
    assert [(c, p.name, r.name) for c, p, r in pairs] == [
        ("a", "a.nii.gz", "a.nii.gz"),
        ("b", "b.nii.gz", "seg.nii.gz"),
    ]
    rows = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert [(r.case, r.label) for r in rows] == [("a", "1"), ("b", "1")]
    assert [r.dice for r in rows] == pytest.approx([0.95, 1.0])
    out = write_metrics_csv(rows, tmp_path / "m.csv")
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    assert float(table[0]["hd95_mm"]) == pytest.approx(0.7, abs=1e-5)


def test_case_folders_with_several_files_need_ref_name(tmp_path: Path) -> None:
    _save(tmp_path / "pred" / "c.nii.gz", _box())
    _save(tmp_path / "ref" / "c" / "image.nii.gz", _box(value=7))
    _save(tmp_path / "ref" / "c" / "label.nii.gz", _box())
    with pytest.raises(IngestError, match="--ref-name"):
        match_cases(tmp_path / "pred", tmp_path / "ref")
    (row,) = evaluate(
        tmp_path / "pred", tmp_path / "ref", options=EvaluationOptions(ref_name="label*")
    )
    assert (row.case, row.dice) == ("c", 1.0)


def test_a_bad_case_in_a_folder_is_named(tmp_path: Path) -> None:
    _save(tmp_path / "pred" / "good.nii.gz", _box())
    _save(tmp_path / "ref" / "good.nii.gz", _box())
    bad = _save(tmp_path / "pred" / "bad.nii.gz", _ct_in_hu(_box()))
    ref = _save(tmp_path / "ref" / "bad.nii.gz", _box())
    with pytest.raises(InvalidSeriesError) as caught:
        evaluate(tmp_path / "pred", tmp_path / "ref")
    assert caught.value.path == bad
    assert str(caught.value).startswith(f"{bad}: against {ref}: the prediction has negative")


def test_missing_reference_case_raises(tmp_path: Path) -> None:
    _save(tmp_path / "pred" / "a.nii.gz", _box())
    _save(tmp_path / "pred" / "zz.nii.gz", _box())
    _save(tmp_path / "ref" / "a.nii.gz", _box())
    with pytest.raises(IngestError, match="zz"):
        match_cases(tmp_path / "pred", tmp_path / "ref")


def test_csv_writes_inf(tmp_path: Path) -> None:
    rows = evaluate_case(_volume(np.zeros_like(_box())), _volume(_box()))
    with write_metrics_csv(rows, tmp_path / "m.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["hd95_mm"] == "inf"
    assert math.isinf(float(row["hd95_mm"]))


@pytest.mark.realdata
def test_sts_mask_against_itself(data_dir: Path) -> None:
    mask = data_dir / "sts" / "STS_001" / "CT" / "nifti" / "mask" / "mask.nii.gz"
    (m,) = evaluate(mask, mask)
    assert (m.dice, m.hd95_mm, m.surface_dice) == (1.0, 0.0, 1.0)
    assert m.pred_voxels == m.ref_voxels > 0


@pytest.mark.realdata
@pytest.mark.parametrize("with_series", [True, False], ids=["ref-series", "pred-grid"])
def test_sts_mask_against_rtstruct(data_dir: Path, with_series: bool) -> None:
    ct = data_dir / "sts" / "STS_001" / "CT"
    options = EvaluationOptions(ref_series=ct / "dicom" / "image" if with_series else None)
    (m,) = evaluate(
        ct / "nifti" / "mask" / "mask.nii.gz", ct / "dicom" / "mask" / "RS.dcm", options=options
    )
    assert (m.dice, m.hd95_mm, m.surface_dice) == (1.0, 0.0, 1.0)
    assert m.ref_voxels == int(
        np.asarray(
            nib.Nifti1Image.from_filename(str(ct / "nifti" / "mask" / "mask.nii.gz")).dataobj
        ).sum()
    )


@pytest.mark.realdata
def test_sts_wrong_patient_raises(data_dir: Path) -> None:
    sts = data_dir / "sts"
    with pytest.raises(InvalidSeriesError):
        evaluate(
            sts / "STS_001" / "CT" / "nifti" / "mask" / "mask.nii.gz",
            sts / "STS_002" / "CT" / "nifti" / "mask" / "mask.nii.gz",
        )


@pytest.mark.realdata
def test_dicom_seg_reference_on_its_series(data_dir: Path) -> None:
    seg = data_dir / "dcmqi_seg"
    options = EvaluationOptions(ref_series=seg / "ct-3slice")
    (m,) = evaluate(seg / "liver_seg.nrrd", seg / "liver.dcm", options=options)
    assert (m.case, m.label) == ("liver_seg", "1")
    assert (m.dice, m.hd95_mm, m.surface_dice) == (1.0, 0.0, 1.0)
    assert m.ref_voxels == 107_098


def test_paired_lists(tmp_path: Path) -> None:
    preds = [_save(tmp_path / f"p{i}.nii.gz", _box((i, 0, 0))) for i in range(2)]
    refs = [_save(tmp_path / f"r{i}.nii.gz", _box()) for i in range(2)]
    rows = evaluate(preds, refs)
    assert [r.case for r in rows] == ["p0", "p1"]
    assert [r.dice for r in rows] == pytest.approx([1.0, 0.95])
    with pytest.raises(ConfigError, match="pair them"):
        evaluate(preds, refs[:1])
