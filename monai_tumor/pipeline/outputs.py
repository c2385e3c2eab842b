"""Per-series output folder: mask, DICOM SEG, lesion measurements, overlay, manifest.

Layout (``OUT`` is the run's output folder)::

    OUT/<study-key>/<series-key>/
        mask.nii.gz      uint8 label map in the source geometry (RAS affine as read)
        seg.dcm          DICOM SEG referencing every source instance (DICOM input only)
        lesions.json     per connected lesion: volume, diameters, centroid (LPS), ...
        overlay.png      largest-lesion slices with contours
        viewer.html      3D viewer page (NiiVue), unless the viewer is turned off
        display.js       the viewer's display copy of the image and mask
        manifest.json    written last: cache key, provenance, sha256 of every file

Folder names are hashes of the Study/SeriesInstanceUIDs (:func:`study_key`,
:func:`series_key`): never patient names or IDs, and stable across runs.

Every file is written atomically (:mod:`monai_tumor.export.atomic`) and the
manifest is written only after all of them; a folder is *complete* when its
manifest exists, carries the expected cache key and every file it lists
exists with the recorded size and SHA-256 (:func:`completed_manifest`). A
rerun redoes any folder that is not complete, so a kill at any moment leaves
either a complete folder or one that is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from pydicom.uid import generate_uid

from monai_tumor.errors import ExportError
from monai_tumor.export.atomic import atomic_write_json
from monai_tumor.export.nifti import write_nifti
from monai_tumor.export.overlay import render_overlay
from monai_tumor.export.seg import AlgorithmInfo, SegExportConfig, write_dicom_seg
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.pipeline.analysis import LesionAnalysis
from monai_tumor.postprocess.lesions import (
    Lesion,
    lesions_report,
    mark_image_edge,
    mark_truncated,
    measure_lesions,
)
from monai_tumor.postprocess.review import ReviewResult
from monai_tumor.report.viewer import ViewerOptions, write_viewer
from monai_tumor.transforms.voi import FIELDS_OF_VIEW_KEY

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "MASK_NAME",
    "OUTPUT_SCHEMA",
    "TRUNCATED_SEGMENT_DESCRIPTION",
    "OverlayStyle",
    "SeriesOutputs",
    "cache_key_for",
    "completed_manifest",
    "series_key",
    "software_versions",
    "study_key",
    "with_truncation",
    "write_series_outputs",
]

_log = logging.getLogger(__name__)

#: Identifier of the ``manifest.json`` layout.
MANIFEST_SCHEMA = "monai-tumor/series-output/1"
#: Alias kept for readers that call it the output schema.
OUTPUT_SCHEMA = MANIFEST_SCHEMA
MANIFEST_NAME = "manifest.json"
MASK_NAME = "mask.nii.gz"
SEG_NAME = "seg.dcm"
LESIONS_NAME = "lesions.json"
#: Segment Description (0062,0006) of every SEG segment when a lesion is truncated.
TRUNCATED_SEGMENT_DESCRIPTION = "TRUNCATED: a lesion reaches the field of view's border"
OVERLAY_NAME = "overlay.png"
_KEY_DIGITS = 16
_SOFTWARE = ("monai-tumor", "monai", "torch", "numpy", "pydicom", "highdicom", "nibabel")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def study_key(study_instance_uid: str) -> str:
    """Folder name of a study: ``"study-"`` + 16 hex digits of SHA-256(StudyInstanceUID)."""
    return f"study-{_digest(study_instance_uid)[:_KEY_DIGITS]}"


def series_key(series_instance_uid: str) -> str:
    """Folder name of a series: ``"series-"`` + 16 hex digits of SHA-256(SeriesInstanceUID)."""
    return f"series-{_digest(series_instance_uid)[:_KEY_DIGITS]}"


def cache_key_for(
    series_uids: Sequence[str], bundle: BundleInfo, *, seeds: Sequence[Any] = ()
) -> str:
    """Return the key under which a series' outputs are reused.

    Parameters
    ----------
    series_uids
        SeriesInstanceUIDs (or input file paths) of the model inputs, reference first.
    bundle
        Gives the bundle version and weights hash (``bundle.cache_key()``).
    seeds
        Seed points used (their ``repr``), so new seeds redo the series.

    Returns
    -------
    str
        64 hex digits: SHA-256 of the UIDs, the bundle's cache key and the seeds.
    """
    parts = ["|".join(series_uids), bundle.cache_key(), "|".join(repr(s) for s in seeds)]
    return _digest("\n".join(parts))


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the outputs."""
    out = {"python": platform.python_version()}
    for name in _SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def completed_manifest(folder: str | os.PathLike[str], cache_key: str) -> dict[str, Any] | None:
    """Return the manifest of a complete output folder, or ``None`` to (re)do it.

    A folder is complete when ``manifest.json`` parses, has the schema and
    ``cache_key`` expected, and every file it lists exists with the recorded
    size and SHA-256.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        return None
    if manifest.get("cache_key") != cache_key:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or MASK_NAME not in files:
        return None
    for name, entry in files.items():
        target = Path(folder) / name
        try:
            if target.stat().st_size != int(entry["bytes"]) or _sha256_file(target) != str(
                entry["sha256"]
            ):
                return None
        except (OSError, KeyError, TypeError, ValueError):
            return None
    return manifest


def _remove_temporaries(folder: Path) -> None:
    """Remove temporary files a killed run left (``export.atomic``: ``.NAME.XXXX.tmp*``)."""
    for path in folder.iterdir():
        if path.name.startswith(".") and ".tmp" in path.name and path.is_file():
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class OverlayStyle:
    """Quick-look options.

    Attributes
    ----------
    n_slices
        Panels in ``overlay.png``.
    ct_window
        Display window for CT (HU); ``None`` for the bundle's ``display_window``, else
        the overlay default (soft tissue).
    """

    n_slices: int = 3
    ct_window: tuple[float, float] | None = None


@dataclass(frozen=True)
class SeriesOutputs:
    """What :func:`write_series_outputs` wrote for one series.

    Attributes
    ----------
    folder
        The output folder.
    manifest
        The manifest written (JSON-ready).
    seg_status
        ``"written"`` or why no SEG was written.
    lesion_count, total_volume_ml
        From the lesion measurements.
    largest_diameter_mm
        Longest 3D diameter over the lesions (0 without lesions).
    seconds
        Time spent writing, per output.
    review
        The review written (the bundle's plausibility review plus truncated lesions);
        ``None``: no review declared and nothing truncated.
    """

    folder: Path
    manifest: dict[str, Any]
    seg_status: str
    lesion_count: int
    total_volume_ml: float
    largest_diameter_mm: float
    seconds: dict[str, float] = field(default_factory=dict)
    review: ReviewResult | None = None


def with_truncation(review: ReviewResult | None, lesions: Sequence[Lesion]) -> ReviewResult | None:
    """Add the truncated lesions to a result's review (a truncated result is never plain done).

    Parameters
    ----------
    review
        The bundle's plausibility review (``None``: none declared).
    lesions
        Measured lesions, flagged by :func:`~monai_tumor.postprocess.lesions.mark_truncated`.

    Returns
    -------
    ReviewResult or None
        ``review`` unchanged without truncated lesions; else ``review=True`` with one more
        reason and the measure ``truncated_lesions``.
    """
    truncated = [les for les in lesions if les.truncated]
    if not truncated:
        return review
    why = "; ".join(sorted({les.truncation_reason for les in truncated}))
    reason = f"truncated: {len(truncated)} lesion(s) {why}; the mask and volume are incomplete"
    return ReviewResult(
        review=True,
        reasons=(*(review.reasons if review is not None else ()), reason),
        measures={
            **(dict(review.measures) if review is not None else {}),
            "truncated_lesions": float(len(truncated)),
        },
    )


def _mask_on_grid(mask: MetaTensor | torch.Tensor, reference: MetaTensor) -> MetaTensor:
    """Check that ``mask`` is ``(1, I, J, K)`` on the reference grid; carry the slice UIDs."""
    data = mask.as_tensor() if isinstance(mask, MetaTensor) else torch.as_tensor(mask)
    if data.ndim == 3:
        data = data[None]
    if tuple(data.shape) != (1, *reference.shape[1:]):
        raise ExportError(
            f"the model returned a mask of shape {tuple(data.shape)}, expected "
            f"{(1, *reference.shape[1:])} on the source grid; the bundle must paste its "
            "prediction back onto the input grid"
        )
    ref_affine = torch.as_tensor(reference.affine, dtype=torch.float64)
    if isinstance(mask, MetaTensor) and not torch.allclose(
        torch.as_tensor(mask.affine, dtype=torch.float64), ref_affine, atol=1e-3
    ):
        raise ExportError(
            "the model returned a mask whose affine differs from the source image's by more "
            "than 1e-3 mm; it is not on the source grid and would be written shifted"
        )
    keep = (
        "sop_instance_uids",
        "frame_numbers",
        "slice_residual_mm",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    )
    meta = {k: reference.meta[k] for k in keep if k in reference.meta}
    meta["FrameOfReferenceUID"] = reference.meta.get("FrameOfReferenceUID", "")
    return MetaTensor(data.to(torch.uint8).cpu(), affine=ref_affine.clone(), meta=meta)


def write_series_outputs(
    folder: str | os.PathLike[str],
    *,
    image: MetaTensor,
    mask: MetaTensor | torch.Tensor,
    bundle: BundleInfo,
    cache_key: str,
    provenance: Mapping[str, Any],
    source_datasets: Sequence[pydicom.Dataset] | None,
    no_seg_reason: str = "",
    overlay: OverlayStyle | None = None,
    viewer: ViewerOptions | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    review: ReviewResult | Callable[[], ReviewResult | None] | None = None,
    analysis: LesionAnalysis | None = None,
) -> SeriesOutputs:
    """Write every output of one series atomically, then the manifest.

    Parameters
    ----------
    folder
        Output folder (created if missing). An existing manifest and temporary
        files left by a killed run are removed first, so the folder counts as
        incomplete until this call returns.
    image
        ``(1, I, J, K)`` reference image the mask is on (RAS affine, meta from
        :func:`monai_tumor.ingest.reader.read_series`); gives lesion intensities
        and the overlay background.
    mask
        ``(1, I, J, K)`` integer label map on ``image``'s grid.
    bundle
        Segment descriptions, name, version and weights hash.
    cache_key
        From :func:`cache_key_for`; stored in the manifest.
    provenance
        Source UIDs, bundle, software versions... (no patient identifiers);
        copied into ``lesions.json`` and the manifest.
    source_datasets
        Headers of the reference series' instances for the SEG; ``None`` for
        NIfTI input (no SEG is written and ``no_seg_reason`` says why).
    no_seg_reason
        Why there is no SEG when ``source_datasets`` is ``None``.
    overlay
        Quick-look options.
    viewer
        Options of the 3D viewer page (:func:`monai_tumor.report.viewer.write_viewer`);
        ``None``: no viewer page and no display copy.
    run_dir
        The run's output folder, holding the viewer's shared ``viewer-assets/``;
        default: ``folder`` itself (a single series written on its own).
    extra
        More JSON-ready fields for the manifest (seeds, selection...).
    review
        Plausibility review of the result (:func:`monai_tumor.postprocess.review.
        review_segmentation`), written as ``"review"`` into ``lesions.json`` and the
        manifest, or a function computing it (called once the analysis has started, so
        that the two overlap); ``None`` when the bundle declares no review. A lesion that a VOI
        bundle's field of view cut off (mask meta ``"fields_of_view"``), or that reaches the
        image's edge (the scan may end inside it), adds a reason and sets ``review``; the
        SEG's segment descriptions then say so too.
    analysis
        Radiomics features and a classifier per lesion, added to ``lesions.json``
        (:class:`~monai_tumor.pipeline.analysis.LesionAnalysis`); ``None``: none.

    Returns
    -------
    SeriesOutputs

    Raises
    ------
    ExportError
        The mask is not on the image grid, or a file cannot be written.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    _remove_temporaries(out)
    style = overlay or OverlayStyle()
    fields_of_view = (
        list(mask.meta.get(FIELDS_OF_VIEW_KEY) or []) if isinstance(mask, MetaTensor) else []
    )
    truncated_fovs = [f for f in fields_of_view if f.get("truncated")]
    label_map = _mask_on_grid(mask, image)
    seconds: dict[str, float] = {}
    files: list[str] = []

    t0 = time.perf_counter()
    lesions = mark_image_edge(
        mark_truncated(measure_lesions(label_map, image), label_map, truncated_fovs),
        label_map.shape[1:],
    )
    segments = bundle.segments
    if truncated_fovs or any(les.truncated for les in lesions):
        segments = tuple(
            replace(spec, description=TRUNCATED_SEGMENT_DESCRIPTION) for spec in segments
        )
    # With a feature pool the features are computed while the review runs and mask, SEG,
    # overlay and viewer are written (label_map and image are only read from here on).
    pending = (
        analysis.start(image=image, mask=label_map, lesions=lesions)
        if analysis is not None and not analysis.empty
        else None
    )
    reviewed = review() if callable(review) else review
    reviewed = with_truncation(reviewed, lesions)
    report = lesions_report(lesions, provenance=provenance)
    if reviewed is not None:
        report["review"] = reviewed.to_dict()
    seconds["lesions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    write_nifti(label_map, out / MASK_NAME, dtype=np.uint8, provenance=provenance)
    files.append(MASK_NAME)
    seconds["mask"] = time.perf_counter() - t0

    seg_status = no_seg_reason or "not written: no DICOM source instances"
    if source_datasets is not None:
        t0 = time.perf_counter()
        # Deterministic UIDs: a rerun with the same cache key writes the same SEG identity.
        write_dicom_seg(
            label_map,
            source_datasets,
            out / SEG_NAME,
            segments=segments,
            algorithm=AlgorithmInfo(
                name=bundle.name,
                version=bundle.version,
                parameters=(("weights_sha256", bundle.weights_sha256),),
            ),
            config=SegExportConfig(
                series_description=f"{bundle.name}"[:64],
                series_instance_uid=generate_uid(entropy_srcs=[cache_key, "series"]),
                sop_instance_uid=generate_uid(entropy_srcs=[cache_key, "instance"]),
            ),
        )
        files.append(SEG_NAME)
        seg_status = "written"
        seconds["seg"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    is_ct = str(image.meta.get("Modality", "")).upper() == "CT"
    window = (style.ct_window or bundle.display_window) if is_ct else None
    render_overlay(
        image,
        label_map,
        out / OVERLAY_NAME,
        n_slices=style.n_slices,
        window=window,
        lesions=lesions,
        segments=bundle.segments,
        title=f"{bundle.name} {bundle.version}",
        provenance=provenance,
    )
    files.append(OVERLAY_NAME)
    seconds["overlay"] = time.perf_counter() - t0

    viewer_info: dict[str, Any] | None = None
    if viewer is not None:
        t0 = time.perf_counter()
        number = image.meta.get("SeriesNumber")
        # The series' hashed key, never the folder name (a user may name it after a patient).
        uid = str(image.meta.get("SeriesInstanceUID") or "")
        shown = write_viewer(
            out,
            image=image,
            mask=label_map,
            lesions=report["lesions"],
            segments=bundle.segments,
            run_dir=run_dir if run_dir is not None else out,
            title=" ".join(
                part
                for part in (
                    f"{bundle.name} {bundle.version}",
                    str(image.meta.get("Modality", "")),
                    f"series #{number}" if number not in (None, "") else "",
                    series_key(uid) if uid else "",
                )
                if part
            ),
            options=viewer,
        )
        files.extend([shown.page.name, shown.display.name])
        viewer_info = shown.to_dict()
        seconds["viewer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if pending is not None:
        pending.apply(report)
    atomic_write_json(out / LESIONS_NAME, report)
    files.insert(files.index(OVERLAY_NAME), LESIONS_NAME)  # the manifest's order as before
    seconds["analysis"] = time.perf_counter() - t0

    largest = max((les.diameter_3d_mm for les in lesions), default=0.0)
    labels = label_map.as_tensor()[0]
    voxel_ml = abs(float(torch.linalg.det(label_map.affine[:3, :3].double()))) / 1000.0
    # One comparison per segment: a bincount would need an int64 copy of the whole grid
    # (800 MB for a 512 x 512 x 400 CT).
    segment_volumes = {
        spec.label: float(torch.count_nonzero(labels == spec.number)) * voxel_ml
        for spec in bundle.segments
        if 0 < spec.number < 256
    }
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "cache_key": cache_key,
        "status": "done",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seg": seg_status,
        "lesion_count": len(lesions),
        "total_volume_ml": float(report["total_volume_ml"]),
        "largest_diameter_3d_mm": float(largest),
        "segment_volumes_ml": segment_volumes,
        "malignancy_probabilities": [
            les["malignancy_probability"]
            for les in report["lesions"]
            if "malignancy_probability" in les
        ],
        "malignancy_model": report.get("malignancy_model"),
        "fields_of_view": fields_of_view,
        "provenance": report["provenance"],
        "viewer": viewer_info,
        **({"review": reviewed.to_dict()} if reviewed is not None else {}),
        **dict(extra or {}),
        "files": {
            name: {"bytes": (out / name).stat().st_size, "sha256": _sha256_file(out / name)}
            for name in files
        },
    }
    atomic_write_json(out / MANIFEST_NAME, manifest)
    _log.info("series %s: %d lesion(s), SEG %s", out.name, len(lesions), seg_status)
    return SeriesOutputs(
        folder=out,
        manifest=manifest,
        seg_status=seg_status,
        lesion_count=len(lesions),
        total_volume_ml=float(report["total_volume_ml"]),
        largest_diameter_mm=float(largest),
        seconds=seconds,
        review=reviewed,
    )
