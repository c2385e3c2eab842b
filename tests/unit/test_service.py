"""monai_tumor.service without HTTP: ids, versioned labels, label checks per image, splits, gate."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_tumor.errors import RequestError
from monai_tumor.service.datastore import LocalDatastore, check_id
from monai_tumor.service.labels import read_label, validate_label, write_label
from monai_tumor.service.models import InferenceGate, ServedModel, models_for_image
from monai_tumor.service.training import split_pairs
from tests.support.annotation_server import GLIOMA, LUNG

AFFINE = np.array(
    [[-0.7, 0.0, 0.0, 10.0], [0.0, -0.7, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0], [0, 0, 0, 1]]
)


def _volume(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture()
def store(tmp_path: Path) -> LocalDatastore:
    studies = tmp_path / "studies"
    studies.mkdir()
    _volume(studies / "case_a.nii.gz", np.zeros((8, 9, 4), np.int16))
    _volume(studies / "case_b.nii", np.ones((8, 9, 4), np.int16))
    (studies / "notes.txt").write_text("not an image")
    (studies / ".hidden.nii.gz").write_bytes(b"")
    return LocalDatastore(studies, tmp_path / "state")


@pytest.mark.parametrize("good", ["case_a", "LIDC-IDRI-0001_R_1", "a.b-c_d", "1"])
def test_good_ids_pass(good: str) -> None:
    assert check_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "..", "../x", "a/b", "a\\b", "/abs", ".hidden", "a..b", "x" * 129, "a b", "é"]
)
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(RequestError) as err:
        check_id(bad)
    assert err.value.status == 400


def test_local_datastore_lists_volumes_only(store: LocalDatastore) -> None:
    assert store.list_images() == ["case_a", "case_b"]
    assert store.status() == {"total": 2, "completed": 0, "label_tags": {}}
    with pytest.raises(RequestError) as err:
        store.image_path("case_c")
    assert err.value.status == 404


def test_saves_are_versions_never_overwrites(store: LocalDatastore, tmp_path: Path) -> None:
    label = _volume(tmp_path / "l.nii.gz", np.zeros((8, 9, 4), np.uint8))
    results: list[int] = []

    def save() -> None:
        with store.scratch_file(".nii.gz") as tmp:
            tmp.write_bytes(label.read_bytes())
            results.append(store.save_label("case_a", "final", tmp, {"client_id": "t"}).version)

    threads = [threading.Thread(target=save) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 17))
    assert [v.version for v in store.label_versions("case_a", "final")] == list(range(1, 17))
    latest = store.label("case_a", "final")
    assert latest is not None and latest.info["version"] == 16
    assert store.status() == {"total": 2, "completed": 1, "label_tags": {"final": 1}}
    assert store.datalist()[0]["label"] == str(latest.path)
    assert store.delete_label("case_a", "final") == 16
    assert store.label("case_a", "final") is None
    assert len(list((store.state_dir / "trash").rglob("*.nii.gz"))) == 16  # kept aside


def test_label_checks_shape_values_and_grid(tmp_path: Path) -> None:
    image = MetaTensor(torch.zeros(1, 8, 9, 4), affine=torch.as_tensor(AFFINE))
    ok = np.zeros((8, 9, 4), np.uint8)
    ok[2:4, 3:5, 1] = 1
    label = read_label(_volume(tmp_path / "ok.nii.gz", ok))
    checked = validate_label(label, image, allowed={1}, image_id="x")
    assert checked.dtype == torch.uint8 and int(checked.sum()) == 4
    for data, affine, status, words in [
        (np.zeros((8, 9, 5), np.uint8), AFFINE, 422, "shape"),
        (ok * 3, AFFINE, 422, "[3]"),
        (ok.astype(np.float32) * 0.5, AFFINE, 422, "whole numbers"),
    ]:
        bad = read_label(_volume(tmp_path / "bad.nii.gz", data, affine))
        with pytest.raises(
            RequestError, match=words.replace("[", r"\[").replace("]", r"\]")
        ) as err:
            validate_label(bad, image, allowed={1}, image_id="x")
        assert err.value.status == status


@settings(max_examples=40, deadline=None)
@given(
    shift=st.tuples(*[st.floats(-5, 5, allow_nan=False)] * 3),
)
def test_label_grid_tolerance(shift: tuple[float, float, float]) -> None:
    image = MetaTensor(torch.zeros(1, 6, 7, 3), affine=torch.as_tensor(AFFINE))
    moved = AFFINE.copy()
    moved[:3, 3] += shift
    label = MetaTensor(torch.zeros(1, 6, 7, 3), affine=torch.as_tensor(moved))
    if max(abs(s) for s in shift) <= 1e-3:
        validate_label(label, image, allowed={1}, image_id="x")
    else:
        with pytest.raises(RequestError, match="geometry"):
            validate_label(label, image, allowed={1}, image_id="x")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_written_labels_read_back_on_the_same_grid(tmp_path: Path, suffix: str) -> None:
    data = torch.zeros(1, 8, 9, 4, dtype=torch.uint8)
    data[0, 1, 2, 3] = 1
    label = MetaTensor(data, affine=torch.as_tensor(AFFINE))
    path = write_label(label, tmp_path / f"label{suffix}")
    back = read_label(path)
    assert torch.equal(back.as_tensor().to(torch.uint8), data)
    np.testing.assert_allclose(np.asarray(back.affine), AFFINE, atol=1e-5)


def _pairs(n: int) -> list[dict[str, str]]:
    return [{"image": f"/d/case_{i}.nii.gz", "label": f"/s/{i}/000001.nii.gz"} for i in range(n)]


@pytest.mark.parametrize(("n", "n_val"), [(2, 1), (3, 1), (7, 1), (8, 2), (10, 2), (23, 5)])
def test_split_pairs_holds_out_images_never_trained_on(n: int, n_val: int) -> None:
    pairs = _pairs(n)
    train, val = split_pairs(pairs, val_fraction=0.2)
    assert len(val) == n_val and len(train) == n - n_val
    assert not {p["image"] for p in val} & {p["image"] for p in train}
    assert sorted(train + val, key=lambda p: p["image"]) == sorted(pairs, key=lambda p: p["image"])
    # deterministic: the same images give the same split, in any order
    again_train, again_val = split_pairs(list(reversed(pairs)), val_fraction=0.2)
    assert {p["image"] for p in again_val} == {p["image"] for p in val}
    assert {p["image"] for p in again_train} == {p["image"] for p in train}


@pytest.mark.parametrize("fraction", [0.0, 0.99, 1.0])
def test_split_pairs_keeps_one_on_each_side(fraction: float) -> None:
    train, val = split_pairs(_pairs(4), val_fraction=fraction)
    assert len(train) >= 1 and len(val) >= 1 and len(train) + len(val) == 4


@pytest.mark.parametrize("n", [0, 1])
def test_split_pairs_refuses_fewer_than_two_images(n: int) -> None:
    with pytest.raises(RequestError, match="at least 2 images") as err:
        split_pairs(_pairs(n), val_fraction=0.2)
    assert err.value.status == 400


def test_split_pairs_refuses_one_image_twice() -> None:
    pairs = _pairs(3)
    pairs.append({"image": pairs[0]["image"], "label": "/s/other.nii.gz"})
    with pytest.raises(RequestError, match="twice"):
        split_pairs(pairs, val_fraction=0.2)


# ------------------------------------------------------------- which models a label is for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServedModel]:
    state = tmp_path_factory.mktemp("state")
    models = [ServedModel(b, state, device="cpu", num_threads=1) for b in (LUNG, GLIOMA)]
    return {m.name: m for m in models}


def _image(channels: int, modality: str | None = None) -> MetaTensor:
    meta = {} if modality is None else {"Modality": modality}
    return MetaTensor(torch.zeros(channels, 4, 4, 3), affine=torch.as_tensor(AFFINE), meta=meta)


@pytest.mark.parametrize(
    ("channels", "modality", "expected"),
    [
        (1, None, ["lung_nodule_ct"]),  # a CT VOI as NIfTI
        (1, "CT", ["lung_nodule_ct"]),  # a DICOM CT series
        (2, None, ["brats_glioma_mri"]),  # stacked FLAIR + T1c
        (2, "MR", ["brats_glioma_mri"]),
    ],
)
def test_models_for_image_follow_the_image(
    served: dict[str, ServedModel], channels: int, modality: str | None, expected: list[str]
) -> None:
    image = _image(channels, modality)
    assert [m.name for m in models_for_image(served, image, image_id="x")] == expected


@pytest.mark.parametrize(("channels", "modality"), [(1, "MR"), (3, None), (2, "CT")])
def test_an_image_no_model_reads_takes_no_label(
    served: dict[str, ServedModel], channels: int, modality: str | None
) -> None:
    with pytest.raises(RequestError, match="no served model reads image 'odd'") as err:
        models_for_image(served, _image(channels, modality), image_id="odd")
    assert err.value.status == 422 and "lung_nodule_ct (1 channel" in str(err.value)


def test_the_label_params_may_name_the_model(served: dict[str, ServedModel]) -> None:
    ct = _image(1, "CT")
    chosen = models_for_image(served, ct, image_id="ct", params={"model": "lung_nodule_ct"})
    assert [m.name for m in chosen] == ["lung_nodule_ct"]
    with pytest.raises(RequestError, match="not an input of model 'brats_glioma_mri'") as err:
        models_for_image(served, ct, image_id="ct", params={"model": "brats_glioma_mri"})
    assert err.value.status == 422
    with pytest.raises(RequestError, match="not a served model") as err:
        models_for_image(served, ct, image_id="ct", params={"model": "spleen_ct"})
    assert err.value.status == 400
    # Slicer's label_info: free segment names do not narrow, nor refuse
    named = {"label_info": [{"name": "Segment_1", "idx": 1}]}
    assert [m.name for m in models_for_image(served, ct, image_id="ct", params=named)] == [
        "lung_nodule_ct"
    ]


def test_glioma_values_are_refused_on_a_ct_image(
    served: dict[str, ServedModel], tmp_path: Path
) -> None:
    ct = _image(1, "CT")
    (model,) = models_for_image(served, ct, image_id="ct-voi")
    data = np.zeros((4, 4, 3), np.uint8)
    data[1, 1, 1], data[2, 2, 1] = 1, 4
    label = read_label(_volume(tmp_path / "glioma.nii.gz", data))
    with pytest.raises(RequestError) as err:
        validate_label(
            label, ct, allowed=model.label_values, image_id="ct-voi", allowed_by=model.name
        )
    message = str(err.value)
    assert err.value.status == 422
    assert "'ct-voi'" in message and "[0, 1, 4]" in message and "write [0, 1]" in message
    mr = _image(2)
    (glioma,) = models_for_image(served, mr, image_id="brats")
    checked = validate_label(label, mr, allowed=glioma.label_values, image_id="brats")
    assert sorted(torch.unique(checked.as_tensor()).tolist()) == [0, 1, 4]


def test_gate_refuses_beyond_the_queue() -> None:
    gate = InferenceGate(workers=1, pending=1)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with gate:
            entered.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait()

    def wait() -> None:
        with gate:
            pass

    waiter = threading.Thread(target=wait)
    waiter.start()
    while gate._waiting == 0:  # the second request is queued
        threading.Event().wait(0.01)
    with pytest.raises(RequestError) as err, gate:
        pass
    assert err.value.status == 503
    release.set()
    holder.join()
    waiter.join()
