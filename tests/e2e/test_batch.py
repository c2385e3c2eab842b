"""Batch runner: planning, statuses, resume, prefetch, and the real nodule bundle on real CT."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.data import MetaTensor

from monai_tumor.errors import InvalidSeriesError
from monai_tumor.export.seg import SegmentSpec, read_back_seg
from monai_tumor.geometry import sort_along_normal
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.inference.seeds import Seed
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.reader import read_series
from monai_tumor.pipeline import batch as batch_module
from monai_tumor.pipeline import runner as runner_module
from monai_tumor.pipeline.batch import BatchOptions, SeriesStatus, run_batch
from monai_tumor.pipeline.outputs import MANIFEST_NAME
from tests.support.batch_export import BatchExport
from tests.support.dicom_factory import lps_affine, write_series
from tests.support.folder_snapshot import snapshot
from tests.support.pipeline_doubles import ThresholdSegmenter, fake_bundle_info

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NODULE = BUNDLES / "lung_nodule_ct"

RULES = {
    "selections": [
        {
            "name": "ct",
            "conditions": {"Modality": "(?i)^CT$", "NumberOfSlices": [4, None]},
            "prefer": [{"NumberOfSlices": "max"}],
        }
    ]
}


@pytest.fixture
def fake_bundle(tmp_path: Path) -> BundleInfo:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    return fake_bundle_info(tmp_path, selection_rules=rules)


def _volume(value: int, slices: int) -> np.ndarray:
    stored = np.zeros((16, 14, slices), dtype=np.int16)
    stored[4:9, 3:8, 1:4] = value
    return stored


@pytest.fixture
def synthetic_export(tmp_path: Path) -> dict[str, str]:
    """Three studies: two CTs (one preferred), a CT the model fails on, an MR-only study."""
    root = tmp_path / "export"
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    uids = {}
    study1 = "1.2.826.0.1.3680043.8.498.1"
    for name, slices, value, study in (
        ("ct_main", 8, 300, study1),
        ("ct_short", 5, 300, study1),
        ("ct_fails", 6, 777, "1.2.826.0.1.3680043.8.498.2"),
    ):
        files = write_series(root / name, _volume(value, slices), affine_lps=aff, study_uid=study)
        uids[name] = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    files = write_series(root / "mr", _volume(300, 6), affine_lps=aff, modality="MR")
    uids["mr"] = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    (root / "notes.txt").write_text("not DICOM")
    uids["root"] = str(root)
    return uids


def _by_uid(result: batch_module.BatchResult) -> dict[str, batch_module.SeriesRecord]:
    return {r.series_instance_uid: r for r in result.records}


def test_statuses_report_and_resume(
    tmp_path: Path,
    fake_bundle: BundleInfo,
    synthetic_export: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "out"
    model = ThresholdSegmenter(fail_on=777.0)
    options = BatchOptions(progress=False, workers=2)
    with caplog.at_level(logging.INFO):
        result = run_batch(
            synthetic_export["root"], out, bundle=fake_bundle, options=options, segmenter=model
        )
    rec = _by_uid(result)
    main, short = rec[synthetic_export["ct_main"]], rec[synthetic_export["ct_short"]]
    fails, mr = rec[synthetic_export["ct_fails"]], rec[synthetic_export["mr"]]
    assert main.status is SeriesStatus.DONE and main.lesion_count == 1
    assert short.status is SeriesStatus.SKIPPED and re.search(r"ranked 2 of 2", short.reason)
    assert fails.status is SeriesStatus.FAILED and "model exploded" in fails.reason
    assert fails.error_type == "RuntimeError"
    assert mr.status is SeriesStatus.SKIPPED and re.search(r"lacks required input 'ct'", mr.reason)
    assert result.exit_code == 1  # a non-package error maps to the generic code
    assert main.folder is not None and (out / main.folder / MANIFEST_NAME).is_file()
    # Report: all three files, every series listed, no patient identifiers anywhere.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "failed": 1, "skipped": 2, "pending": 0}
    assert summary["run"]["skipped_files"] == 1
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 5
    html = (out / "index.html").read_text()
    assert f"{main.folder}/overlay.png" in html
    for text in (html, (out / "summary.csv").read_text(), caplog.text):
        assert "Synthetic^Test" not in text and "SYNTH" not in text

    # Rerun: the finished series is reused, the failed one retried, nothing else runs.
    model2 = ThresholdSegmenter(fail_on=777.0)
    again = _by_uid(
        run_batch(
            synthetic_export["root"], out, bundle=fake_bundle, options=options, segmenter=model2
        )
    )
    assert again[synthetic_export["ct_main"]].reused
    assert again[synthetic_export["ct_main"]].status is SeriesStatus.DONE
    assert model2.calls == [synthetic_export["ct_fails"]]

    # A damaged output is redone; --force redoes everything.
    (out / main.folder / "lesions.json").write_text("{")
    model3 = ThresholdSegmenter()
    third = _by_uid(
        run_batch(
            synthetic_export["root"], out, bundle=fake_bundle, options=options, segmenter=model3
        )
    )
    assert not third[synthetic_export["ct_main"]].reused
    assert json.loads((out / main.folder / "lesions.json").read_text())["lesion_count"] == 1
    assert third[synthetic_export["ct_fails"]].status is SeriesStatus.DONE
    model4 = ThresholdSegmenter()
    forced = BatchOptions(progress=False, force=True)
    run_batch(synthetic_export["root"], out, bundle=fake_bundle, options=forced, segmenter=model4)
    assert sorted(model4.calls) == sorted(
        [synthetic_export["ct_main"], synthetic_export["ct_fails"]]
    )


def test_default_index_is_in_the_output_folder_never_in_the_export(
    tmp_path: Path, fake_bundle: BundleInfo, synthetic_export: dict[str, str]
) -> None:
    export = Path(synthetic_export["root"])
    # an index an older version kept inside the export is neither used nor updated
    old = export / ".monai-tumor" / "index.sqlite"
    old.parent.mkdir()
    old.write_bytes(b"left by an older version")
    before = snapshot(export)
    out = tmp_path / "out"
    options = BatchOptions(progress=False, workers=1)
    result = run_batch(
        export, out, bundle=fake_bundle, options=options, segmenter=ThresholdSegmenter()
    )
    assert snapshot(export) == before
    assert result.count(SeriesStatus.DONE) == 2
    with SeriesIndex(out / ".monai-tumor" / "index.sqlite", read_only=True) as index:
        assert len(index.file_states(root=export.resolve())) == 26  # 25 slices, notes.txt


def test_read_failure_is_a_failed_series_with_package_exit_code(
    tmp_path: Path,
    fake_bundle: BundleInfo,
    synthetic_export: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_read = read_series

    def read(files: list[Path], **kwargs: object) -> MetaTensor:
        if kwargs.get("series_uid") == synthetic_export["ct_fails"]:
            raise InvalidSeriesError("2 slices missing", path=Path(synthetic_export["root"]) / "x")
        return real_read(files, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner_module, "read_series", read)
    result = run_batch(
        synthetic_export["root"],
        tmp_path / "out",
        bundle=fake_bundle,
        options=BatchOptions(progress=False),
        segmenter=ThresholdSegmenter(),
    )
    failed = _by_uid(result)[synthetic_export["ct_fails"]]
    assert failed.status is SeriesStatus.FAILED and failed.error_type == "InvalidSeriesError"
    assert failed.reason.startswith("EXPORT/x: 2 slices missing")  # export path not shown
    assert result.exit_code == 11
    assert _by_uid(result)[synthetic_export["ct_main"]].status is SeriesStatus.DONE


def test_next_series_is_read_while_the_current_one_is_segmented(
    tmp_path: Path,
    fake_bundle: BundleInfo,
    synthetic_export: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_read = read_series
    second_read_started = threading.Event()
    reads: list[str] = []

    def read(files: list[Path], **kwargs: object) -> MetaTensor:
        reads.append(str(kwargs.get("series_uid")))
        if len(reads) == 2:
            second_read_started.set()
        return real_read(files, **kwargs)  # type: ignore[arg-type]

    class WaitingSegmenter(ThresholdSegmenter):
        def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor:
            if not self.calls:
                # The first inference only returns once the second series is being read.
                assert second_read_started.wait(timeout=60)
            return super().segment(image, seeds=seeds)

    monkeypatch.setattr(runner_module, "read_series", read)
    result = run_batch(
        synthetic_export["root"],
        tmp_path / "out",
        bundle=fake_bundle,
        options=BatchOptions(progress=False),
        segmenter=WaitingSegmenter(),
    )
    assert result.count(SeriesStatus.DONE) == 2 and len(reads) == 2


# --------------------------------------------------------------------------- real data


def _seg_matches_mask_and_source(
    folder: Path, files: Sequence[Path], segments: Sequence[SegmentSpec] | None = None
) -> np.ndarray:
    """Check seg.dcm against mask.nii.gz and the source slice positions; return the mask."""
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    datasets = [d for d in datasets if d.get("Modality") != "RTSTRUCT" and "Rows" in d]
    mask = np.asarray(nib.Nifti1Image.from_filename(folder / "mask.nii.gz").dataobj)
    seg_labels = read_back_seg(folder / "seg.dcm", datasets, segments=segments)
    np.testing.assert_array_equal(seg_labels, mask)
    # Every SEG frame sits on the position of the source slice it references.
    seg = hd.seg.segread(folder / "seg.dcm")
    by_uid = {str(d.SOPInstanceUID): d for d in datasets}
    assert {
        str(r.ReferencedSOPInstanceUID)
        for s in seg.ReferencedSeriesSequence
        for r in s.ReferencedInstanceSequence
    } == set(by_uid)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        pos = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(
            np.asarray(pos, float),
            np.asarray(by_uid[str(ref)].ImagePositionPatient, float),
            atol=1e-3,
        )
    # The mask slices follow the source sorted along the normal.
    order = sort_along_normal(
        [d.ImagePositionPatient for d in datasets], datasets[0].ImageOrientationPatient
    )
    assert mask.shape[2] == len(order.order)
    return mask


@pytest.fixture(scope="module")
def ct_run(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Path]]:
    """lung1 and an sts CT (with their RTSTRUCTs) as symlinks, through the nodule bundle."""
    root = tmp_path_factory.mktemp("ct_export")
    sources = {
        "lung1": (data_dir / "lung1/LUNG1-001/image", data_dir / "lung1/LUNG1-001/mask_rtstruct"),
        "sts": (data_dir / "sts/STS_001/CT/dicom/image", data_dir / "sts/STS_001/CT/dicom/mask"),
    }
    for name, (images, rs) in sources.items():
        for i, f in enumerate(sorted(images.iterdir())):
            (root / name / "img").mkdir(parents=True, exist_ok=True)
            (root / name / "img" / f"{i:05d}").symlink_to(f)
        for f in rs.iterdir():
            (root / name / "rs").mkdir(parents=True, exist_ok=True)
            (root / name / "rs" / f.name).symlink_to(f)
    out = tmp_path_factory.mktemp("ct_out")
    result = run_batch(
        root,
        out,
        bundle=NODULE,
        options=BatchOptions(progress=False, seeds_from_export=True, device="cpu"),
    )
    assert result.exit_code == 0
    folders = {}
    for record in result.records:
        assert record.status is SeriesStatus.DONE, record.reason
        assert record.folder is not None
        name = "lung1" if record.number_of_slices == 134 else "sts"
        folders[name] = out / record.folder
    return out, folders


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("case", ["lung1", "sts"])
def test_nodule_bundle_on_real_ct_seeded_from_rtstruct(
    case: str, ct_run: tuple[Path, dict[str, Path]], data_dir: Path
) -> None:
    _, folders = ct_run
    folder = folders[case]
    images = {
        "lung1": data_dir / "lung1/LUNG1-001/image",
        "sts": data_dir / "sts/STS_001/CT/dicom/image",
    }[case]
    mask = _seg_matches_mask_and_source(folder, sorted(images.iterdir()))
    assert mask.any()
    lesions = json.loads((folder / "lesions.json").read_text())
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    seeds = manifest["provenance"]["seeds"]
    assert seeds and all(re.search("gtv", s["label"], re.I) for s in seeds)
    # The segmented nodule lies around its GTV seed.
    seed = np.asarray(seeds[0]["point_lps_mm"])
    nearest = min(
        np.linalg.norm(np.asarray(les["centroid_lps_mm"]) - seed) for les in lesions["lesions"]
    )
    assert nearest < 20.0
    assert manifest["provenance"]["bundle"]["bundle"] == "lung_nodule_ct"
    assert manifest["provenance"]["sources"]["ct"]["SeriesInstanceUID"]
    assert manifest["provenance"]["software"]["highdicom"]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(
    ("bundle", "done_label"),
    [(NODULE, "sts002_ct"), (BUNDLES / "brats_glioma_mri", "brats_flair")],
    ids=["nodule", "glioma"],
)
def test_messy_export_statuses_and_reasons(
    bundle: Path,
    done_label: str,
    batch_export: BatchExport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        result = run_batch(
            batch_export.root,
            tmp_path / "out",
            bundle=bundle,
            options=BatchOptions(
                progress=False,
                seeds_from_export=True,
                device="cpu",
                index_path=tmp_path / "index.sqlite",
            ),
        )
    expected = batch_export.expected(str(bundle))
    records = _by_uid(result)
    assert set(records) == set(expected)
    for uid, want in expected.items():
        got = records[uid]
        label = batch_export.label_of(uid)
        assert got.status.value == want.status, (label, got.reason)
        assert re.search(want.reason, got.reason, re.IGNORECASE), (label, got.reason)
        if want.error_type:
            assert got.error_type == want.error_type, (label, got.reason)
    assert result.exit_code == 10  # IngestError: the corrupt CT / FLAIR
    summary = (tmp_path / "out" / "summary.json").read_text()
    html = (tmp_path / "out" / "index.html").read_text()
    for ident in batch_export.identifiers:
        assert ident not in summary and ident not in html and ident not in caplog.text
    done = records[batch_export.uid(done_label)]
    assert done.folder is not None
    mask = _seg_matches_mask_and_source(
        tmp_path / "out" / done.folder, batch_export.series[done_label].files, _segments(bundle)
    )
    manifest = json.loads((tmp_path / "out" / done.folder / MANIFEST_NAME).read_text())
    if done_label == "brats_flair":
        # Both MR series fed the model; the label map (on the FLAIR grid) has every region.
        assert manifest["inputs"] == {
            "flair": batch_export.uid("brats_flair"),
            "t1c": batch_export.uid("brats_t1c"),
        }
        assert set(np.unique(mask)) <= {0, 1, 2, 4} and mask.any()
        assert set(manifest["segment_volumes_ml"]) == {s.label for s in _segments(bundle)}


def _segments(bundle: Path) -> tuple[SegmentSpec, ...]:
    from monai_tumor.inference.bundle import read_bundle_info

    return read_bundle_info(bundle).segments


def _one_series_done(
    export: Path, out: Path, **options: Any
) -> tuple[batch_module.SeriesRecord, dict[str, Any]]:
    """Run the nodule bundle over an export of one series; check it is done, return its manifest."""
    result = run_batch(
        export, out, bundle=NODULE, options=BatchOptions(progress=False, device="cpu", **options)
    )
    (record,) = result.records
    assert record.status is SeriesStatus.DONE, record.reason
    assert record.folder is not None
    return record, json.loads((out / record.folder / MANIFEST_NAME).read_text())


@pytest.mark.realdata
@pytest.mark.slow
def test_seeds_by_frame_of_reference_and_from_csv(data_dir: Path, tmp_path: Path) -> None:
    """An RTSTRUCT that names no series is matched by FrameOfReferenceUID; a CSV seeds too."""
    series = data_dir / "sts" / "STS_002" / "CT" / "dicom"
    export = tmp_path / "export"
    (export / "ct").mkdir(parents=True)
    for i, f in enumerate(sorted((series / "image").iterdir())):
        (export / "ct" / f"{i:04d}").symlink_to(f)
    rs = pydicom.dcmread(series / "mask" / "RS.dcm")
    for ref in rs.ReferencedFrameOfReferenceSequence:
        del ref.RTReferencedStudySequence  # no referenced series left
    rs.save_as(export / "rs_without_series_reference")

    record, manifest = _one_series_done(export, tmp_path / "out_frame", seeds_from_export=True)
    assert record.folder is not None  # checked by _one_series_done; narrowed again here
    (seed,) = manifest["provenance"]["seeds"]

    csv_path = tmp_path / "seeds.csv"
    x, y, z = seed["point_lps_mm"]
    csv_path.write_text(f"x,y,z,label\n{x},{y},{z},gtv\n0,0,99999,elsewhere\n")
    csv_record, _ = _one_series_done(export, tmp_path / "out_csv", seeds_csv=csv_path)
    assert csv_record.folder == record.folder
    mask_frame = nib.Nifti1Image.from_filename(
        tmp_path / "out_frame" / record.folder / "mask.nii.gz"
    )
    mask_csv = nib.Nifti1Image.from_filename(tmp_path / "out_csv" / record.folder / "mask.nii.gz")
    np.testing.assert_array_equal(np.asarray(mask_csv.dataobj), np.asarray(mask_frame.dataobj))

    # No seeds at all: the VOI bundle skips the series and says why.
    unseeded = run_batch(
        export, tmp_path / "out_none", bundle=NODULE, options=BatchOptions(progress=False)
    )
    assert unseeded.records[0].status is SeriesStatus.SKIPPED
    assert "seed" in unseeded.records[0].reason


@pytest.mark.realdata
@pytest.mark.slow
def test_nodule_bundle_seeded_from_a_seg_in_the_export(data_dir: Path, tmp_path: Path) -> None:
    """A DICOM SEG beside its CT in the export gives the seeds (per component, at its centroid)."""
    from monai_tumor.ingest.groundtruth import seg_to_mask

    root = tmp_path / "export"
    (root / "ct").mkdir(parents=True)
    (root / "seg").mkdir()
    for f in sorted((data_dir / "dcmqi_seg/ct-3slice").iterdir()):
        (root / "ct" / f.name).symlink_to(f)
    seg_file = data_dir / "dcmqi_seg/liver.dcm"
    (root / "seg" / "object").symlink_to(seg_file)
    # The bundle's rules want >= 20 slices; this CT has 3.
    rules = json.loads((NODULE / "configs/series_selection.json").read_text())
    rules["selections"][0]["conditions"]["NumberOfSlices"] = [1, None]
    rules_path = tmp_path / "rules.json"
    rules_path.write_text(json.dumps(rules))
    out = tmp_path / "out"
    record, manifest = _one_series_done(root, out, seeds_from_export=True, rules=rules_path)
    assert record.folder is not None
    seeds = manifest["provenance"]["seeds"]
    label = str(pydicom.dcmread(seg_file).SegmentSequence[0].SegmentLabel)
    assert seeds and seeds[0]["label"] == label
    # The first seed is the centroid (LPS mm) of the SEG's largest component on the CT grid.
    image = read_series(root / "ct")
    mask = seg_to_mask(seg_file, image)[0].numpy() > 0
    ijk = np.argwhere(mask).mean(axis=0)
    ras = image.affine.numpy() @ np.append(ijk, 1.0)
    centroid_lps = np.array([-ras[0], -ras[1], ras[2]])
    assert np.linalg.norm(np.asarray(seeds[0]["point_lps_mm"]) - centroid_lps) < 1.0
    assert (out / record.folder / "seg.dcm").is_file()
