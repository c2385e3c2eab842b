"""lung_nodule_malignancy bundle: metadata, weights, standalone run, pipeline classifier.

The standalone run imports nothing of monai_tumor (the bundle needs only monai, torch,
nibabel); the pipeline's in-process classifier must give the same probabilities.
"""

from __future__ import annotations

import csv
import json
from importlib.resources import as_file
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata
from monai.transforms import LoadImage

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.bundle.verify import default_schema
from monai_tumor.inference.classifier import load_classifier, read_classifier_info
from monai_tumor.pipeline.analysis import FEATURES_NAME
from monai_tumor.pipeline.infer import InferOptions, infer_one
from monai_tumor.postprocess.lesions import measure_lesions
from monai_tumor.training.malignancy import TrainOptions, binary_metrics, load_labels, train_model
from tests.support.bundle_modules import run_bundle_standalone

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "lung_nodule_malignancy"
NODULE = ROOT / "bundles" / "lung_nodule_ct"
CASES = ("LIDC-IDRI-0001_R_1", "LIDC-IDRI-0003_R_2", "LIDC-IDRI-0007_R_1")


def _dataset(data_dir: Path, tmp_path: Path) -> Path:
    """The shared layout (image/ + nodule_mask/) for a few VOIs, as links to the data."""
    root = tmp_path / "dataset"
    for sub in ("image", "nodule_mask"):
        (root / sub).mkdir(parents=True)
        for case in CASES:
            (root / sub / f"{case}.nii.gz").symlink_to(
                data_dir / "lidc_nodules" / sub / f"{case}.nii.gz"
            )
    return root


def test_metadata_and_weights() -> None:
    with as_file(default_schema()) as schema:
        verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(schema))
    for name in ("model.pt", "model.ts"):
        assert (BUNDLE / "models" / name).stat().st_size < 25 * 1024 * 1024
    info = read_classifier_info(BUNDLE)
    assert "not a diagnosis" in info.notice
    for path in [*BUNDLE.rglob("*.py"), *BUNDLE.glob("configs/*.json")]:
        text = path.read_text(encoding="utf-8")
        if path.name != "metadata.json":
            assert "monai_tumor" not in text, path


def test_torchscript_matches_state_dict() -> None:
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "inference.json")
    parser["bundle_root"] = str(BUNDLE)
    with bundle_scripts(BUNDLE):
        net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", weights_only=True))
    net.eval()
    scripted = torch.jit.load(str(BUNDLE / "models" / "model.ts"))
    x = torch.rand(2, 2, 32, 32, 16)
    x[:, 1] = (x[:, 1] > 0.6).float()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.realdata
def test_standalone_run_matches_the_pipeline_classifier(data_dir: Path, tmp_path: Path) -> None:
    dataset = _dataset(data_dir, tmp_path)
    out = tmp_path / "out"
    run_bundle_standalone(
        BUNDLE,
        [
            "run",
            "--config_file",
            "configs/inference.json",
            "--dataset_dir",
            str(dataset),
            "--output_dir",
            str(out),
        ],
        data_dir,
    )
    with (out / "predictions.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == list(CASES)
    standalone = {r["case"]: float(r["malignancy_probability"]) for r in rows}
    assert all(0.0 < p < 1.0 for p in standalone.values())
    classifier = load_classifier(BUNDLE)
    load = LoadImage(image_only=True, ensure_channel_first=True)
    for case in CASES:
        image = load(data_dir / "lidc_nodules" / "image" / f"{case}.nii.gz")
        mask = load(data_dir / "lidc_nodules" / "nodule_mask" / f"{case}.nii.gz")
        lesions = measure_lesions(mask, image)
        (p,) = classifier.classify(image, mask, lesions[:1])
        # the pipeline cuts a box first; the bundle's crop around the mask then matches
        assert p == pytest.approx(standalone[case], abs=2e-3), case


@pytest.mark.realdata
@pytest.mark.slow
def test_infer_writes_features_and_probability(data_dir: Path, tmp_path: Path) -> None:
    case = "LIDC-IDRI-0003_R_2"
    image_path = data_dir / "lidc_nodules" / "image" / f"{case}.nii.gz"
    mask_img = nib.Nifti1Image.from_filename(
        data_dir / "lidc_nodules" / "nodule_mask" / f"{case}.nii.gz"
    )
    centre = np.argwhere(np.asarray(mask_img.dataobj) > 0).mean(axis=0)
    ras = mask_img.affine @ np.append(centre, 1.0)
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"x,y,z,label\n{-ras[0]},{-ras[1]},{ras[2]},nodule\n", encoding="utf-8")
    out = tmp_path / "out"
    result = infer_one(
        image_path,
        bundle=NODULE,
        out_dir=out,
        options=InferOptions(device="cpu", seeds_csv=seeds, viewer=None),
    )
    assert result.status == "done"
    report = json.loads((out / "lesions.json").read_text(encoding="utf-8"))
    lesion = report["lesions"][0]
    assert 0.0 < lesion["malignancy_probability"] < 1.0
    assert "not a diagnosis" in lesion["malignancy"]["notice"]
    assert report["malignancy_model"]["bundle"] == "lung_nodule_malignancy"
    feats = lesion["radiomics"]["features"]
    assert feats["morph_volume"] > 0 and lesion["radiomics"]["settings"]["bin_width"] == 25.0
    with (out / FEATURES_NAME).open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["lesion_count"]
    assert float(rows[0]["morph_volume"]) == pytest.approx(feats["morph_volume"])
    # --no-features: no radiomics, still a probability; a different cache key
    plain = tmp_path / "plain"
    infer_one(
        image_path,
        bundle=NODULE,
        out_dir=plain,
        options=InferOptions(device="cpu", seeds_csv=seeds, viewer=None, features=False),
    )
    lesion = json.loads((plain / "lesions.json").read_text(encoding="utf-8"))["lesions"][0]
    assert "radiomics" not in lesion and "malignancy_probability" in lesion


def test_training_smoke_and_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((12, 2, 32, 32, 16)).astype(np.float32)
    x[:, 1] = 0
    x[:, 1, 12:20, 12:20, 6:10] = 1
    y = np.array([0, 1] * 6)
    model = train_model(
        BUNDLE,
        x,
        y,
        options=TrainOptions(mode="cnn", epochs=1, batch_size=6),
        checkpoint=tmp_path / "ckpt.pt",
    )
    assert (tmp_path / "ckpt.pt").is_file()
    with torch.no_grad():
        assert model(torch.from_numpy(x[:2])).shape == (2, 1)
    # a perfect ranking: AUC 1 in every patient-level bootstrap sample
    p = np.where(y == 1, 0.8, 0.2)
    metrics = binary_metrics(y, p, [f"p{i // 2}" for i in range(12)], n_boot=50)
    assert metrics["auc"] == 1.0 and metrics["auc_ci95"] == [1.0, 1.0]
    assert metrics["sensitivity_at_90_specificity"] == 1.0
    assert metrics["brier"] == pytest.approx(0.04)
    assert metrics["n_patients"] == 6 and metrics["n_malignant"] == 6


@pytest.mark.realdata
@pytest.mark.slow
def test_train_and_evaluate_configs_standalone(data_dir: Path, tmp_path: Path) -> None:
    """configs/train.json fits the feature model, evaluate.json scores it (monai only)."""
    labels = load_labels(data_dir / "lidc_nodules" / "MetadatabyNoduleMaxVoting.xlsx")
    training = ["LIDC-IDRI-0001_R_1", "LIDC-IDRI-0003_R_2", "LIDC-IDRI-0003_R_3"]
    training += ["LIDC-IDRI-0004_R_1", "LIDC-IDRI-0006_R_4", "LIDC-IDRI-0003_R_4"]
    validation = ["LIDC-IDRI-0007_R_1"]

    def items(cases: list[str]) -> list[dict[str, object]]:
        return [
            {
                "image": f"image/{c}.nii.gz",
                "mask": f"nodule_mask/{c}.nii.gz",
                "label": labels[c][0],
            }
            for c in cases
        ]

    assert {labels[c][0] for c in training} == {0, 1}
    datalist = tmp_path / "datalist.json"
    datalist.write_text(
        json.dumps({"training": items(training), "validation": items(validation)}),
        encoding="utf-8",
    )
    common = [
        "--datalist_file",
        str(datalist),
        "--dataset_dir",
        str(data_dir / "lidc_nodules"),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    run_bundle_standalone(
        BUNDLE,
        [
            "run",
            "--config_file",
            "configs/train.json",
            "--max_epochs",
            "3",
            "--val_interval",
            "3",
            *common,
        ],
        data_dir,
    )
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    state = state.get("model", state)
    # the standardisation was fitted on the training nodules (log volume first)
    assert float(state["feature_mean"][0]) > 3.0 and float(state["feature_std"][0]) > 0.0
    run_bundle_standalone(
        BUNDLE,
        ["run", "--config_file", "['configs/train.json','configs/evaluate.json']", *common],
        data_dir,
    )
    with (tmp_path / "eval" / "predictions.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == validation
    assert 0.0 <= float(rows[0]["malignancy_probability"]) <= 1.0
    assert (tmp_path / "eval" / "metrics.csv").is_file()
