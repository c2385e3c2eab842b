"""The annotation server on loopback, driven by MONAI Label 0.8.5's own Python client.

A real ``monai-tumor serve`` process (uvicorn) serves both bundles over a studies folder of
real images: three LIDC nodule VOIs and two BraTS cases stacked FLAIR + T1c (the form the
glioma bundle takes in MONAI Label). ``monailabel.client.client`` comes from the
``monailabel==0.8.5`` wheel, downloaded with ``--no-deps`` into the pytest cache (its server
pins conflict with ours; ``pip install --target`` would lay the wheel's data folder over the
package) and loaded as a single module file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tests.support.annotation_server import Server, read_nifti

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

VOIS = ("LIDC-IDRI-0001_R_1", "LIDC-IDRI-0003_R_2", "LIDC-IDRI-0003_R_3")
BRATS = "brats_2013_pat0003_1"
#: A second BraTS case: fine-tuning trains on one labelled image and validates on another.
BRATS2 = "brats_2013_pat0004_1"
TOKEN = "test-token-5f1c"
#: The stacked BraTS cases are written uncompressed: the server and the training process
#: read them several times, and gzip would cost more CPU than the 2 x 30 MB on disk.
STACKED = ".nii"
#: The BraTS cases cut to the brain (less empty border), to keep the glioma runs short.
BOX = (slice(40, 200), slice(30, 222), slice(20, 140))


def _studies(data_dir: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in VOIS:
        (folder / f"{name}.nii.gz").symlink_to(
            data_dir / "lidc_nodules" / "image" / f"{name}.nii.gz"
        )
    for name in (BRATS, BRATS2):
        case = data_dir / "brats" / "validation" / name
        flair = nib.nifti1.load(next(case.glob("Flair*.nii*")))
        t1c = nib.nifti1.load(next(case.glob("T1c*.nii*")))
        box = BOX
        stacked = np.stack([np.asarray(flair.dataobj)[box], np.asarray(t1c.dataobj)[box]], axis=-1)
        nib.save(
            nib.Nifti1Image(stacked.astype(np.float32), flair.slicer[box].affine),
            folder / f"{name}{STACKED}",
        )
    return folder


@pytest.fixture(scope="module")
def studies(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _studies(data_dir, tmp_path_factory.mktemp("studies") / "images")


@pytest.fixture(scope="module")
def server(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("server")
    srv = Server(studies, work / "state", work / "server.log", max_upload_mb="4")
    yield srv
    srv.stop()


@pytest.fixture()
def client(ml: ModuleType, server: Server, tmp_path: Path) -> Any:
    return ml.MONAILabelClient(server.url, tmpdir=str(tmp_path))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _status(ml: ModuleType, call: Any) -> tuple[int, str]:
    try:
        call()
    except ml.MONAILabelClientException as exc:
        return int(exc.msg.split(";")[0].split(":")[1]), exc.msg
    return 200, ""


def _centre(data_dir: Path, name: str) -> list[int]:
    """The reference nodule's centre voxel (where a reader would click)."""
    mask, _ = read_nifti(data_dir / "lidc_nodules" / "nodule_mask" / f"{name}.nii.gz")
    return [int(np.rint(v)) for v in np.argwhere(mask > 0).mean(axis=0)]


# --------------------------------------------------------------------------- info, datastore


def test_the_server_logs_to_its_state_folder(server: Server, client: Any) -> None:
    """The address is printed; uvicorn's records go to STATE/monai-tumor.log (the default
    --log-file), without an access log."""
    client.info()
    assert f"annotation server at {server.url}" in server.log.read_text(encoding="utf-8")
    logged = (server.state / "monai-tumor.log").read_text(encoding="utf-8")
    assert f"annotation server listening on {server.url}" in logged
    assert "Application startup complete" in logged  # uvicorn's own record
    assert "GET /info" not in logged


def test_info_and_datastore_shapes(client: Any) -> None:
    info = client.info()
    assert {
        "name",
        "description",
        "version",
        "labels",
        "models",
        "trainers",
        "strategies",
        "scoring",
        "train_stats",
        "datastore",
    } <= set(info)
    lung = info["models"]["lung_nodule_ct"]
    assert {"type", "labels", "dimension", "description", "config"} <= set(lung)
    assert lung["labels"] == {"lung nodule": 1} and lung["dimension"] == 3
    assert info["models"]["brats_glioma_mri"]["labels"] == {
        "tumour core (non-enhancing)": 1,
        "edema": 2,
        "enhancing tumour": 4,
    }
    assert {"random", "first", "tta_disagreement"} <= set(info["strategies"])
    assert info["datastore"]["total"] == 5
    objects = client.datastore()["objects"]
    assert sorted(objects) == sorted([*VOIS, BRATS, BRATS2])
    assert objects[VOIS[0]]["image"]["ext"] == ".nii.gz"


# --------------------------------------------------------------------------- glioma


def test_glioma_infer_on_stacked_brats(client: Any, studies: Path, data_dir: Path) -> None:
    out, params = client.infer("brats_glioma_mri", BRATS, {"result_extension": ".nrrd"})
    assert out.endswith(".nrrd")
    import SimpleITK as sitk  # noqa: N813

    label = sitk.ReadImage(out)
    arr = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
    image, affine = read_nifti(studies / f"{BRATS}{STACKED}")
    assert arr.shape == image.shape[:3]
    lps_origin = np.array(label.GetOrigin())
    np.testing.assert_allclose(lps_origin, affine[:3, 3] * [-1, -1, 1], atol=1e-3)
    assert set(np.unique(arr)) <= {0, 1, 2, 4}
    ref_img = nib.nifti1.load(next((data_dir / "brats" / "validation" / BRATS).glob("OT*.nii*")))
    ref = np.rint(np.asarray(ref_img.dataobj)[BOX]).astype(int)
    assert _dice(arr > 0, ref > 0) > 0.8  # whole tumour, as the card reports (0.89 on this case)
    assert params["label_names"]["edema"] == 2 and params["latencies"]["total"] > 0


# --------------------------------------------------------------------------- safety


def test_bad_uploads_are_refused_and_not_stored(
    ml: ModuleType, client: Any, server: Server, data_dir: Path, tmp_path: Path
) -> None:
    masks = data_dir / "lidc_nodules" / "nodule_mask"
    image = VOIS[2]
    # another VOI's mask: wrong shape
    code, msg = _status(ml, lambda: client.save_label(image, str(masks / f"{VOIS[1]}.nii.gz")))
    assert code == 422 and "shape" in msg
    # right grid, shifted by 2 mm
    mask, affine = read_nifti(masks / f"{image}.nii.gz")
    shifted = affine.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), shifted), tmp_path / "shifted.nii.gz")
    code, msg = _status(ml, lambda: client.save_label(image, str(tmp_path / "shifted.nii.gz")))
    assert code == 422 and "geometry" in msg
    # a value no model writes
    nib.save(nib.Nifti1Image((mask > 0).astype(np.uint8) * 7, affine), tmp_path / "v7.nii.gz")
    code, msg = _status(ml, lambda: client.save_label(image, str(tmp_path / "v7.nii.gz")))
    assert code == 422 and "[7]" in msg
    # a glioma value (enhancing tumour, 4) on a CT VOI, with the glioma model served too:
    # checked against the values of the image's own model (the nodule model: 0, 1)
    glioma = (mask > 0).astype(np.uint8)
    glioma[tuple(np.argwhere(mask > 0)[0])] = 4
    nib.save(nib.Nifti1Image(glioma, affine), tmp_path / "v4.nii.gz")
    code, msg = _status(ml, lambda: client.save_label(image, str(tmp_path / "v4.nii.gz")))
    assert code == 422, msg
    assert f"image {image!r}" in msg and "[0, 1, 4]" in msg and "lung_nodule_ct write [0, 1]" in msg
    # naming the glioma model in the label's params does not make the CT image an MR one
    code, msg = _status(
        ml,
        lambda: client.save_label(
            image, str(masks / f"{image}.nii.gz"), params={"model": "brats_glioma_mri"}
        ),
    )
    assert code == 422 and "not an input of model 'brats_glioma_mri'" in msg
    # not an image at all
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti file" * 10)
    code, msg = _status(ml, lambda: client.save_label(image, str(tmp_path / "junk.nii.gz")))
    assert code == 400 and "cannot be read" in msg
    # larger than the server's limit (4 MB)
    (tmp_path / "big.nii.gz").write_bytes(os.urandom(5 * 1024 * 1024))
    code, msg = _status(ml, lambda: client.save_label(image, str(tmp_path / "big.nii.gz")))
    assert code == 413
    # unknown image
    code, _ = _status(
        ml, lambda: client.save_label("no_such_image", str(masks / f"{image}.nii.gz"))
    )
    assert code == 404
    assert client.datastore()["objects"][image]["labels"] == {}  # nothing stored
    assert client.info()["name"] == "monai-tumor"  # still serving


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..", "a/b", "..%2F..%2Fx", "/abs", ".hidden"])
def test_ids_cannot_leave_the_datastore(
    ml: ModuleType, client: Any, server: Server, data_dir: Path, bad: str
) -> None:
    mask = data_dir / "lidc_nodules" / "nodule_mask" / f"{VOIS[0]}.nii.gz"
    calls = [
        lambda: client.save_label(bad, str(mask)),
        lambda: client.save_label(VOIS[0], str(mask), tag=bad),
        lambda: client.download_label(bad, "final"),
        lambda: client.download_label(VOIS[0], bad),
        lambda: client.infer("lung_nodule_ct", bad, {"foreground": [[1, 1, 1]]}),
        lambda: client.upload_image(str(mask), image_id=bad),
    ]
    for call in calls:
        code, _ = _status(ml, call)
        assert code in (400, 404), (bad, code)
    written = {p.resolve() for p in server.state.rglob("*")}
    assert all(str(p).startswith(str(server.state.resolve())) for p in written)


def test_lung_needs_a_point(ml: ModuleType, client: Any) -> None:
    code, msg = _status(ml, lambda: client.infer("lung_nodule_ct", VOIS[0], {}))
    assert code == 400 and "foreground" in msg and "point" in msg


# --------------------------------------------------------------------------- the loop


def test_annotation_loop_on_lidc(
    ml: ModuleType, client: Any, data_dir: Path, studies: Path
) -> None:
    """info -> datastore -> next_sample -> infer -> save_label -> train -> infer new version."""
    assert client.info()["models"]["lung_nodule_ct"]["model_version"] == 0
    first = client.next_sample("first", {})
    assert first["id"] == VOIS[0]
    picked = client.next_sample("tta_disagreement", {"model": "lung_nodule_ct"})
    assert picked["id"] in VOIS and 0.0 <= picked["score"] <= 1.0

    masks = data_dir / "lidc_nodules" / "nodule_mask"
    for name in VOIS[:2]:
        out, params = client.infer(
            "lung_nodule_ct", name, {"foreground": [_centre(data_dir, name)]}
        )
        pred, affine = read_nifti(Path(out))
        ref, ref_affine = read_nifti(masks / f"{name}.nii.gz")
        np.testing.assert_allclose(affine, ref_affine, atol=1e-4)
        assert pred.shape == ref.shape
        assert _dice(pred, ref) > 0.7, name
        assert params["model_version"] == 0 and "lung nodule" in params["centroids"]
        client.save_label(name, out, tag="original")
        saved = client.save_label(name, str(masks / f"{name}.nii.gz"), tag="final")
        assert saved["version"] == 1  # a valid nodule label on a LIDC VOI is stored
    again = client.save_label(VOIS[0], str(masks / f"{VOIS[0]}.nii.gz"), tag="final")
    assert again["version"] == 2  # a second save is a new version, the first is kept
    got, _ = read_nifti(Path(client.download_label(VOIS[0], "final")))
    np.testing.assert_array_equal(got, read_nifti(masks / f"{VOIS[0]}.nii.gz")[0].astype(np.uint8))
    stats = client.info()["datastore"]
    assert stats["completed"] == 2 and stats["label_tags"] == {"original": 2, "final": 2}
    assert client.next_sample("first", {})["id"] == VOIS[2]  # labelled images are skipped

    task = client.train_start(
        "lung_nodule_ct", {"max_epochs": 1, "num_samples": 1, "batch_size": 1}
    )
    assert task["status"] == "RUNNING"
    assert task["train_images"] == 1 and task["val_images"] == 1  # two VOIs, one held out
    code, _ = _status(ml, lambda: client.train_start("lung_nodule_ct", {"max_epochs": 1}))
    assert code == 429
    assert client.train_status(check_if_running=True)
    result = _wait_for_training(client)["result"]
    assert result["metric_name"] == "val_mean_dice" and result["model_version"] == 1
    assert 0.0 <= result["baseline"] <= 1.0 and 0.0 <= result["best"] <= 1.0
    assert result["activated"] == (result["best"] > result["baseline"])
    assert result["active_version"] == (1 if result["activated"] else 0)
    info = client.info()
    assert info["train_stats"]["lung_nodule_ct"]["model_version"] == result["active_version"]
    assert info["models"]["lung_nodule_ct"]["model_version"] == result["active_version"]

    name = VOIS[2]
    out, params = client.infer(
        "lung_nodule_ct", name, {"foreground": [_centre(data_dir, name)], "model_version": 1}
    )
    assert params["model_version"] == 1  # the fine-tuned weights, kept beside version 0
    assert _dice(read_nifti(Path(out))[0], read_nifti(masks / f"{name}.nii.gz")[0]) > 0.5


def _wait_for_training(client: Any) -> dict[str, Any]:
    while (status := client.train_status())["status"] == "RUNNING":
        time.sleep(2)
    assert status["status"] == "DONE", status["details"]
    return dict(status)


def _brats_final(data_dir: Path, name: str, folder: Path) -> Path:
    """The case's reference label in the written map's values (1, 2, 4), on the stacked grid."""
    case = data_dir / "brats" / "validation" / name
    flair = nib.nifti1.load(next(case.glob("Flair*.nii*")))
    ref = np.rint(np.asarray(nib.nifti1.load(next(case.glob("OT*.nii*"))).dataobj)[BOX])
    ref = ref.astype(np.uint8)
    ref[ref == 3] = 1  # BraTS 2013 non-enhancing tumour: label 1 of the written map
    path = folder / f"{name}-final.nii.gz"
    nib.save(nib.Nifti1Image(ref, flair.slicer[BOX].affine), path)
    return path


def test_glioma_loop_on_brats(
    ml: ModuleType, client: Any, server: Server, data_dir: Path, tmp_path: Path
) -> None:
    """Save corrected glioma labels, fine-tune (one image trains, one validates), infer."""
    # glioma values (1, 2, 4) on a BraTS image are the glioma model's: stored
    assert client.save_label(BRATS, str(_brats_final(data_dir, BRATS, tmp_path)))["version"] == 1
    tiny = {"max_epochs": 1, "num_samples": 1, "batch_size": 1}
    code, msg = _status(ml, lambda: client.train_start("brats_glioma_mri", tiny))
    assert code == 400 and "at least 2" in msg and "held out" in msg  # never validate on it
    assert client.save_label(BRATS2, str(_brats_final(data_dir, BRATS2, tmp_path)))["version"] == 1

    task = client.train_start("brats_glioma_mri", tiny)
    assert task["train_images"] == 1 and task["val_images"] == 1  # not the LIDC VOIs
    job_file = server.state / "models" / "brats_glioma_mri" / "v0001" / "job.json"
    job = json.loads(job_file.read_text("utf-8"))
    trained = {Path(p["image"]).name for p in job["train_pairs"]}
    validated = {Path(p["image"]).name for p in job["val_pairs"]}
    assert trained | validated == {f"{BRATS}{STACKED}", f"{BRATS2}{STACKED}"}
    assert not trained & validated
    result = _wait_for_training(client)["result"]
    assert result["metric_name"] == "val_mean_dice" and result["model_version"] == 1
    assert result["activated"] == (result["best"] > result["baseline"])
    out, params = client.infer("brats_glioma_mri", BRATS, {"model_version": 1})
    assert params["model_version"] == 1
    assert set(np.unique(read_nifti(Path(out))[0])) <= {0, 1, 2, 4}


# --------------------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def token_server(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("token-server")
    os.environ["MONAI_TUMOR_SERVE_TOKEN"] = TOKEN
    try:
        srv = Server(studies, work / "state", work / "server.log")
    finally:
        del os.environ["MONAI_TUMOR_SERVE_TOKEN"]
    yield srv
    srv.stop()


def test_token_is_required(
    ml: ModuleType, token_server: Server, data_dir: Path, tmp_path: Path
) -> None:
    anonymous = ml.MONAILabelClient(token_server.url, tmpdir=str(tmp_path))
    assert anonymous.auth_enabled()
    mask = str(data_dir / "lidc_nodules" / "nodule_mask" / f"{VOIS[0]}.nii.gz")
    for call in (
        anonymous.info,
        lambda: anonymous.save_label(VOIS[0], mask),
        lambda: anonymous.train_start("lung_nodule_ct", {}),
    ):
        assert _status(ml, call)[0] == 401
    wrong = ml.MONAILabelClient(token_server.url, tmpdir=str(tmp_path))
    wrong.update_auth({"token_type": "Bearer", "access_token": "not-the-token"})
    assert _status(ml, lambda: wrong.save_label(VOIS[0], mask))[0] == 401
    with pytest.raises(ml.MONAILabelClientException):
        anonymous.auth_token("anyone", "not-the-token")

    user = ml.MONAILabelClient(token_server.url, tmpdir=str(tmp_path))
    user.update_auth(user.auth_token("anyone", TOKEN))  # the token is the password
    assert user.auth_valid_token()
    assert user.save_label(VOIS[0], mask)["version"] == 1
    assert len(list((token_server.state / "labels").glob("*/*/*.nii.gz"))) == 1  # only that one


# --------------------------------------------------------------------------- load


def test_twenty_clients_for_one_minute(
    ml: ModuleType, server: Server, data_dir: Path, tmp_path: Path
) -> None:
    """20 clients mix infer and save_label for 60 s: no lost label, no 5xx but 503, RSS bounded."""
    masks = data_dir / "lidc_nodules" / "nodule_mask"
    name = VOIS[2]
    point = _centre(data_dir, name)
    before = len(list((server.state / "labels" / "final" / name).glob("*.nii.gz")))
    rss_start = server.rss_kb()
    codes: Counter[int] = Counter()
    saved: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + 60

    def worker(index: int) -> None:
        c = ml.MONAILabelClient(server.url, tmpdir=str(tmp_path))
        n = 0
        while time.monotonic() < stop:
            n += 1
            try:
                if (index + n) % 3 == 0:
                    c.infer("lung_nodule_ct", name, {"foreground": [point]})
                else:
                    version = c.save_label(name, str(masks / f"{name}.nii.gz"))["version"]
                    with lock:
                        saved.append(int(version))
                code = 200
            except ml.MONAILabelClientException as exc:
                code = int(exc.msg.split(";")[0].split(":")[1])
                if code != 503:
                    with lock:
                        errors.append(exc.msg[:300])
            except OSError as exc:  # a refused or reset connection is a failure too
                code = -1
                with lock:
                    errors.append(repr(exc))
            with lock:
                codes[code] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert set(codes) <= {200, 503}, codes
    assert codes[200] > 0
    on_disk = sorted(
        int(p.name.split(".")[0])
        for p in (server.state / "labels" / "final" / name).glob("[0-9]*.nii.gz")
    )
    assert len(on_disk) == before + len(saved)  # every acknowledged save is there
    assert sorted(saved) == on_disk[before:]  # each got its own version
    grown_mb = (server.rss_kb() - rss_start) / 1024
    assert grown_mb < 1024, f"server RSS grew by {grown_mb:.0f} MB"
    print(json.dumps({"codes": dict(codes), "saved": len(saved), "rss_growth_mb": grown_mb}))


def test_upload_image_then_annotate(
    ml: ModuleType, client: Any, data_dir: Path, tmp_path: Path
) -> None:
    """PUT /datastore/image adds an image (409 for a taken id); it is annotated like the rest."""
    name = "LIDC-IDRI-0004_R_1"
    source = data_dir / "lidc_nodules" / "image" / f"{name}.nii.gz"
    assert client.upload_image(str(source), image_id="uploaded-voi")["image"] == "uploaded-voi"
    code, msg = _status(ml, lambda: client.upload_image(str(source), image_id="uploaded-voi"))
    assert code == 409 and "exists" in msg
    assert "uploaded-voi" in client.datastore()["objects"]
    mask = data_dir / "lidc_nodules" / "nodule_mask" / f"{name}.nii.gz"
    assert client.save_label("uploaded-voi", str(mask))["version"] == 1
    got = read_nifti(Path(client.download_label("uploaded-voi", "final")))[0]
    np.testing.assert_array_equal(got, read_nifti(mask)[0].astype(np.uint8))
