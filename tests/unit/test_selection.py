"""Series selection rules and multi-sequence input stacking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from monai.data import MetaTensor

from monai_tumor.errors import ConfigError, InvalidSeriesError, UnsupportedInputError
from monai_tumor.geometry import voxel_to_patient
from monai_tumor.ingest.scan import scan_export
from monai_tumor.ingest.selection import (
    SelectionStatus,
    load_inputs,
    load_rules,
    parse_rules,
    select_series,
)

RULES_DIR = Path(__file__).resolve().parents[2] / "data" / "rules"


def series(uid: str, **attrs: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "SeriesInstanceUID": uid,
        "StudyInstanceUID": "1.2.9",
        "Modality": "MR",
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "Orientation": "axial",
        "NumberOfSlices": 40,
        "SliceSpacing": 3.0,
        "Uniform": True,
        "Decodable": True,
        "MultiFrame": False,
    }
    base.update(attrs)
    return base


def one_rule(**conditions: Any) -> dict[str, Any]:
    return {"selections": [{"name": "x", "conditions": conditions}]}


# --------------------------------------------------------------------------- one condition


@pytest.mark.parametrize(
    ("conditions", "attrs", "matches"),
    [
        # strings: case-insensitive equality or regex search, as in MONAI Deploy
        ({"Modality": "mr"}, {}, True),
        ({"Modality": "(?i)^CT$"}, {}, False),
        ({"SeriesDescription": "flair"}, {"SeriesDescription": "AX T2 FLAIR"}, True),
        ({"SeriesDescription": "^flair"}, {"SeriesDescription": "AX T2 FLAIR"}, False),
        ({"SeriesDescription": "flair"}, {"SeriesDescription": None}, False),
        ({"SeriesDescription": "flair"}, {}, False),
        # a string against a multi-valued attribute: any value may match
        ({"ImageType": "^primary$"}, {}, True),
        ({"ImageType": "LOCALIZER"}, {}, False),
        # a list: every listed value must be present
        ({"ImageType": ["PRIMARY", "ORIGINAL"]}, {}, True),
        ({"ImageType": ["ORIGINAL", "AXIAL"]}, {}, False),
        ({"ImageType": ["original"]}, {"ImageType": "ORIGINAL"}, True),
        # numeric ranges, closed, null for open
        ({"NumberOfSlices": [20, None]}, {}, True),
        ({"NumberOfSlices": [20, 40]}, {}, True),
        ({"NumberOfSlices": [41, None]}, {}, False),
        ({"SliceSpacing": [None, 2.5]}, {}, False),
        ({"SliceSpacing": [None, 2.5]}, {"SliceSpacing": None}, False),
        ({"SliceSpacing": [1, 5]}, {"SliceSpacing": "3.0"}, True),
        # numbers and booleans: equality
        ({"NumberOfSlices": 40}, {}, True),
        ({"SliceSpacing": 3}, {"SliceSpacing": 3.0000001}, True),
        ({"Uniform": True}, {}, True),
        ({"Uniform": True}, {"Uniform": False}, False),
        ({"Uniform": False}, {"Uniform": False}, True),
        # presence
        ({"ContrastBolusAgent": {"present": True}}, {"ContrastBolusAgent": "GADOVIST"}, True),
        ({"ContrastBolusAgent": {"present": True}}, {"ContrastBolusAgent": ""}, False),
        ({"ContrastBolusAgent": {"present": False}}, {}, True),
        # orientation is a derived string key
        ({"Orientation": "axial"}, {"Orientation": "sagittal"}, False),
        # null and "" are ignored (MONAI Deploy) but a rule needs one real condition
        ({"Modality": "MR", "SeriesDescription": None, "ProtocolName": ""}, {}, True),
    ],
)
def test_condition_matching(
    conditions: dict[str, Any], attrs: dict[str, Any], matches: bool
) -> None:
    result = select_series([series("1.1", **attrs)], one_rule(**conditions))
    assert (result.selected.get("x") == "1.1") is matches
    if not matches:
        (rejection,) = result.inputs["x"].rejected
        assert next(iter(conditions)) in rejection.reason


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({}, "selections"),
        ({"selections": []}, "selections"),
        ({"selections": [{"conditions": {"Modality": "CT"}}]}, "name"),
        ({"selections": [{"name": "ct"}]}, "no conditions"),
        ({"selections": [{"name": "ct", "conditions": {"Modallity": "CT"}}]}, "'Modallity'"),
        ({"selections": [{"name": "ct", "conditions": {"Modality": "(CT"}}]}, "Modality"),
        (
            {"selections": [{"name": "ct", "conditions": {"Modality": "CT"}, "exlude": {}}]},
            "exlude",
        ),
        ({"selections": [{"name": "ct", "conditions": {"NumberOfSlices": [50, 20]}}]}, "min"),
        ({"selections": [{"name": "ct", "conditions": {"NumberOfSlices": [None, None]}}]}, "bound"),
        ({"selections": [{"name": "ct", "conditions": {"ImageType": ["A", 3, "B"]}}]}, "ImageType"),
        ({"selections": [{"name": "ct", "conditions": {"Modality": {"is": "CT"}}}]}, "present"),
        (
            {"selections": [{"name": "ct", "required": "yes", "conditions": {"Modality": "CT"}}]},
            "required",
        ),
        (
            {
                "selections": [
                    {"name": "ct", "conditions": {"Modality": "CT"}, "prefer": ["NumberOfSlices"]}
                ]
            },
            "prefer",
        ),
        (
            {
                "selections": [
                    {
                        "name": "ct",
                        "conditions": {"Modality": "CT"},
                        "prefer": [{"NumberOfSlices": "most"}],
                    }
                ]
            },
            "'max' or 'min'",
        ),
        ({"selections": [{"name": "ct", "any": [{}]}]}, "empty condition set"),
        (
            {"selections": [{"name": "a", "conditions": {"Modality": "CT"}}] * 2},
            "more than once",
        ),
        (
            {"selections": [{"name": "a", "conditions": {"Modality": "CT"}}], "distinct": 1},
            "distinct",
        ),
        ({"selection": []}, "selection"),
    ],
)
def test_malformed_rules_name_the_key(rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules(rules)


def test_load_rules_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"selections": [', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json.*not valid JSON"):
        load_rules(bad)
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(one_rule(Modalty="CT")), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"typo\.json.*'Modalty'"):
        load_rules(typo)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.json")
    assert load_rules(json.dumps(one_rule(Modality="CT"))).names == ("x",)


@pytest.mark.parametrize("name", ["ct.json", "brain_mri_flair_t1c.json"])
def test_shipped_rules_are_valid(name: str) -> None:
    rules = load_rules(RULES_DIR / name)
    assert rules.selections
    assert all(s.required for s in rules.selections)


# --------------------------------------------------------------------------- whole studies


def brain_study() -> list[dict[str, Any]]:
    return [
        series(
            "1.1",
            SeriesDescription="3-plane localizer",
            ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
            NumberOfSlices=15,
        ),
        series("1.2", SeriesDescription="AX T2 FLAIR", NumberOfSlices=28, SliceSpacing=5.0),
        series("1.3", SeriesDescription="AX T2 FLAIR", NumberOfSlices=40, SliceSpacing=3.5),
        series("1.4", SeriesDescription="Ax T1 pre"),
        series("1.5", SeriesDescription="AX T1 POST GD", ContrastBolusAgent="Gadavist"),
        series("1.6", SeriesDescription="AX DWI", ImageType=["DERIVED", "PRIMARY", "ADC"]),
        series(
            "1.7",
            Modality="SR",
            SeriesDescription="Dose report",
            NumberOfSlices=None,
            Orientation=None,
        ),
    ]


def test_brain_rules_pick_flair_and_t1c_with_reasons() -> None:
    result = select_series(brain_study(), RULES_DIR / "brain_mri_flair_t1c.json")
    assert result.ok
    assert result.selected == {"flair": "1.3", "t1c": "1.5"}
    flair = result.inputs["flair"]
    assert flair.status is SelectionStatus.SELECTED
    assert flair.candidates == ("1.3", "1.2")
    assert "NumberOfSlices max" in flair.reason
    reasons = {r.series_uid: r.reason for r in flair.rejected}
    assert set(reasons) == {"1.1", "1.2", "1.4", "1.5", "1.6", "1.7"}
    assert "ranked 2 of 2" in reasons["1.2"]
    assert "excluded" in reasons["1.1"]
    assert "Modality 'SR'" in reasons["1.7"]
    t1c = {r.series_uid: r.reason for r in result.inputs["t1c"].rejected}
    assert "already selected for 'flair'" in t1c["1.3"]
    assert "none of the alternatives matched" in t1c["1.4"]
    json.dumps(result.to_dict())  # a run report can carry it


@pytest.mark.parametrize(
    ("t1c_attrs", "selected"),
    [
        ({"SeriesDescription": "MPRAGE post Gd"}, True),
        ({"SeriesDescription": "T1 +C AX"}, True),
        ({"SeriesDescription": "Sag T1 MPRAGE", "ContrastBolusAgent": "Dotarem"}, True),
        ({"ProtocolName": "t1_se_tra_KM", "SeriesDescription": "t1 ce tra"}, True),
        ({"SeriesDescription": "T1 SPACE"}, False),
        ({"SeriesDescription": "AX T1 pre-contrast"}, False),
        ({"SeriesDescription": "AX T2 post GD", "ContrastBolusAgent": "Gd"}, False),
    ],
)
def test_t1c_descriptions(t1c_attrs: dict[str, Any], selected: bool) -> None:
    study = [series("2.1", SeriesDescription="FLAIR"), series("2.2", **t1c_attrs)]
    result = select_series(study, RULES_DIR / "brain_mri_flair_t1c.json")
    assert (result.selected.get("t1c") == "2.2") is selected


def test_missing_sequence_gives_a_reasoned_status() -> None:
    study = [s for s in brain_study() if s["SeriesInstanceUID"] != "1.5"]
    result = select_series(study, RULES_DIR / "brain_mri_flair_t1c.json")
    assert not result.ok
    assert result.missing == ("t1c",)
    assert result.inputs["t1c"].status is SelectionStatus.MISSING
    assert result.inputs["t1c"].series_uid is None
    assert "t1c: missing" in result.summary()
    with pytest.raises(
        UnsupportedInputError, match=r"no series matched 't1c' \(candidates: .*Modality"
    ):
        result.raise_if_missing()


def test_optional_input_is_absent_not_missing() -> None:
    rules = {
        "selections": [
            {"name": "ct", "conditions": {"Modality": "CT"}},
            {"name": "pet", "required": False, "conditions": {"Modality": "PT"}},
        ]
    }
    result = select_series([series("3.1", Modality="CT")], rules)
    assert result.ok
    assert result.inputs["pet"].status is SelectionStatus.ABSENT
    result.raise_if_missing()
    empty = select_series([], rules)
    assert empty.missing == ("ct",)
    assert "empty" in empty.inputs["ct"].reason


def test_prefer_orders_and_ties_keep_study_order() -> None:
    rules = {
        "selections": [
            {
                "name": "ct",
                "conditions": {"Modality": "CT"},
                "prefer": [{"NumberOfSlices": "max"}, {"SliceSpacing": "min"}],
            }
        ]
    }
    study = [
        series("4.1", Modality="CT", NumberOfSlices=100, SliceSpacing=5.0),
        series("4.2", Modality="CT", NumberOfSlices=200, SliceSpacing=None),
        series("4.3", Modality="CT", NumberOfSlices=200, SliceSpacing=1.0),
        series("4.4", Modality="CT", NumberOfSlices=200, SliceSpacing=1.0),
    ]
    assert select_series(study, rules).inputs["ct"].candidates == ("4.3", "4.4", "4.2", "4.1")
    no_prefer = {"selections": [{"name": "ct", "conditions": {"Modality": "CT"}}]}
    assert select_series(study, no_prefer).selected == {"ct": "4.1"}


def test_distinct_false_allows_sharing_a_series() -> None:
    rules = {
        "distinct": False,
        "selections": [
            {"name": "a", "conditions": {"Modality": "CT"}},
            {"name": "b", "conditions": {"Modality": "CT"}},
        ],
    }
    assert select_series([series("5.1", Modality="CT")], rules).selected == {"a": "5.1", "b": "5.1"}


def test_objects_with_selection_attributes_are_accepted() -> None:
    class Info:
        def selection_attributes(self) -> dict[str, Any]:
            return series("6.1", Modality="CT")

    assert select_series([Info()], one_rule(Modality="CT")).selected == {"x": "6.1"}


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"Orientation": "sagittal"}, "Orientation"),
        ({"NumberOfSlices": 12}, "NumberOfSlices"),
        ({"ImageType": ["DERIVED", "SECONDARY"]}, "ImageType"),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "excluded"),
        ({"Uniform": False}, "Uniform"),
        ({"Decodable": False}, "excluded"),
        ({"SeriesDescription": "Topogram 0.6 T20f"}, "excluded"),
    ],
)
def test_ct_rules_reject(attrs: dict[str, Any], reason: str) -> None:
    result = select_series([series("7.1", Modality="CT", **attrs)], RULES_DIR / "ct.json")
    assert result.missing == ("ct",)
    assert reason in result.inputs["ct"].rejected[0].reason


# --------------------------------------------------------------------------- real series


@pytest.mark.realdata
def test_ct_rules_pick_the_sts_ct(data_dir: Path, tmp_path: Path) -> None:
    scanned = scan_export(
        data_dir / "sts" / "STS_001",
        index_path=tmp_path / "index.sqlite",
        progress=False,
        executor="serial",
    )
    by_modality = {s.selection_attributes()["Modality"]: s for s in scanned.series}
    assert set(by_modality) == {"CT", "MR", "PT"}
    result = select_series(scanned.series, RULES_DIR / "ct.json")
    ct_uid = by_modality["CT"].selection_attributes()["SeriesInstanceUID"]
    assert result.selected == {"ct": ct_uid}
    reasons = {r.series_uid: r.reason for r in result.inputs["ct"].rejected}
    assert "Modality 'MR'" in reasons[by_modality["MR"].selection_attributes()["SeriesInstanceUID"]]
    assert "Modality 'PT'" in reasons[by_modality["PT"].selection_attributes()["SeriesInstanceUID"]]
    # the MR series of this study is DERIVED: a brain rule would also say why it was rejected
    mr = select_series(scanned.series, RULES_DIR / "brain_mri_flair_t1c.json")
    assert mr.missing == ("flair", "t1c")


# --------------------------------------------------------------------------- load_inputs


@pytest.mark.realdata
def test_load_inputs_brats_flair_t1c(data_dir: Path) -> None:
    import nibabel as nib

    case = sorted((data_dir / "brats" / "train").iterdir())[0]
    flair, t1c = case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"
    stacked = load_inputs({"flair": flair, "t1c": t1c}, reference="flair", order=["flair", "t1c"])
    assert tuple(stacked.shape) == (2, 240, 240, 155)
    assert stacked.dtype == torch.float32
    assert stacked.meta["channel_names"] == ["flair", "t1c"]
    np.testing.assert_allclose(
        stacked.affine.numpy(), nib.Nifti1Image.from_filename(flair).affine, atol=1e-5
    )
    np.testing.assert_array_equal(
        stacked[0].numpy(),
        np.asarray(nib.Nifti1Image.from_filename(flair).dataobj, dtype=np.float32),
    )
    np.testing.assert_array_equal(
        stacked[1].numpy(), np.asarray(nib.Nifti1Image.from_filename(t1c).dataobj, dtype=np.float32)
    )


def _blob(
    affine_ras: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
    centre: npt.NDArray[np.float64],
) -> MetaTensor:
    """A Gaussian blob (sigma 4 mm) at a world position, sampled on a grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = voxel_to_patient(affine_ras, idx)
    values = np.exp(-np.sum((world - centre) ** 2, axis=-1) / (2 * 4.0**2))
    return MetaTensor(
        torch.as_tensor(values[None], dtype=torch.float32), affine=torch.as_tensor(affine_ras)
    )


def _rotation_z(degrees: float) -> npt.NDArray[np.float64]:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


def test_load_inputs_resamples_a_moved_input_onto_the_reference_world() -> None:
    centre = np.array([3.0, -7.0, 12.0])  # RAS mm
    ref_affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    ref_affine[:3, 3] = [20.0, 20.0, -10.0]
    ref_shape = (40, 40, 24)
    # second input: rotated 25 degrees, shifted, different spacing, a flipped axis
    moved_affine = np.eye(4)
    moved_affine[:3, :3] = _rotation_z(25.0) @ np.diag([1.5, -1.2, 2.5])
    moved_affine[:3, 3] = [-30.0, 25.0, -20.0]
    moved_shape = (45, 45, 20)
    stacked = load_inputs(
        {
            "ref": _blob(ref_affine, ref_shape, centre),
            "moved": _blob(moved_affine, moved_shape, centre),
        },
        reference="ref",
        order=["ref", "moved"],
    )
    assert tuple(stacked.shape) == (2, *ref_shape)
    np.testing.assert_allclose(stacked.affine.numpy(), ref_affine)
    expected = _blob(ref_affine, ref_shape, centre)[0].numpy()
    np.testing.assert_array_equal(stacked[0].numpy(), expected)
    # trilinear interpolation of a smooth blob (sigma 4 mm, 2.5 mm slices): error ~h^2/8 f"
    # ~ 0.05 everywhere; a one-voxel shift would give ~0.3
    assert float(np.max(np.abs(stacked[1].numpy() - expected))) < 0.08
    # the landmark lands at the same world position (intensity-weighted centroid)
    weights = stacked[1].numpy()
    weights = np.where(weights > 0.2, weights, 0.0)
    idx = np.argwhere(weights > 0)
    centroid = (idx * weights[tuple(idx.T)][:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(voxel_to_patient(ref_affine, centroid), centre, atol=0.1)


def test_load_inputs_checks_names_and_frames_of_reference() -> None:
    img = _blob(np.eye(4), (8, 8, 8), np.zeros(3))
    with pytest.raises(ConfigError, match="not given"):
        load_inputs({"a": img}, reference="a", order=["a", "b"])
    with pytest.raises(ConfigError, match="reference input"):
        load_inputs({"a": img}, reference="c", order=["a"])
    other = MetaTensor(img.as_tensor(), affine=img.affine, meta={"FrameOfReferenceUID": "2"})
    first = MetaTensor(img.as_tensor(), affine=img.affine, meta={"FrameOfReferenceUID": "1"})
    with pytest.raises(InvalidSeriesError, match="FrameOfReferenceUID"):
        load_inputs({"a": first, "b": other}, reference="a", order=["a", "b"])
    ok = load_inputs(
        {"a": first, "b": other},
        reference="a",
        order=["b", "a"],
        require_same_frame_of_reference=False,
    )
    assert ok.meta["channel_names"] == ["b", "a"]
