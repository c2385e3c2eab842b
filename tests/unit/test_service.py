"""monai_tumor.service without HTTP: ids, versioned labels, label checks, splits, the gate."""

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
from monai_tumor.service.models import InferenceGate
from monai_tumor.service.training import split_pairs

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


def test_split_pairs_holds_out_at_least_one() -> None:
    pairs = [{"image": str(i), "label": str(i)} for i in range(10)]
    train, val = split_pairs(pairs, val_fraction=0.2)
    assert (
        len(val) == 2
        and len(train) == 8
        and not {p["image"] for p in val} & {p["image"] for p in train}
    )
    one = pairs[:1]
    assert split_pairs(one, val_fraction=0.2) == (one, one)
    assert split_pairs([], val_fraction=0.2) == ([], [])


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
