"""Segment one input (a DICOM series folder or NIfTI file(s)) with a bundle.

:func:`infer_one` is the single-case entry point behind ``monai-tumor infer``;
:func:`segment_and_write` is the step it shares with the batch runner: run the
model on a read volume and write the per-series outputs
(:func:`monai_tumor.pipeline.outputs.write_series_outputs`).

For NIfTI input there is no DICOM source series to reference, so no SEG can be
written; the status says so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pydicom
from monai.data import MetaTensor
from pydicom.errors import InvalidDicomError

from monai_tumor.errors import ConfigError, IngestError
from monai_tumor.geometry import patient_to_voxel, ras_to_lps
from monai_tumor.inference.bundle import BundleInfo, load_bundle, read_bundle_info
from monai_tumor.ingest.reader import ReadOptions, is_nifti, is_volume_file, read_series
from monai_tumor.ingest.records import SEG_SOP_CLASSES
from monai_tumor.ingest.selection import load_inputs
from monai_tumor.ingest.sidecar import acquisition_fields
from monai_tumor.pipeline.analysis import (
    LesionAnalysis,
    analysis_spec_for,
    write_features_table,
)
from monai_tumor.pipeline.outputs import (
    OverlayStyle,
    SeriesOutputs,
    cache_key_for,
    completed_manifest,
    software_versions,
    write_series_outputs,
)
from monai_tumor.pipeline.records import review_fields
from monai_tumor.postprocess.review import ReviewResult, review_prediction
from monai_tumor.radiomics.pool import FeaturePool
from monai_tumor.report.viewer import ViewerOptions

if TYPE_CHECKING:
    from monai_tumor.inference.seeds import Seed

__all__ = [
    "InferOptions",
    "InferResult",
    "Segmenter",
    "filter_seeds",
    "infer_one",
    "load_segmenter",
    "read_source_headers",
    "reference_input",
    "segment_and_write",
    "source_provenance",
]

_log = logging.getLogger(__name__)

_NO_SEG_NIFTI = "not written: NIfTI input has no DICOM source instances to reference"


class Segmenter(Protocol):
    """Anything that segments like ``inference.bundle.LoadedBundle``."""

    def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor:
        """Label map ``(1, I, J, K)`` uint8 on ``image``'s grid."""
        ...


@dataclass(frozen=True)
class InferOptions:
    """Options of :func:`infer_one`.

    Attributes
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seeds_csv
        CSV of LPS seed points (see ``inference.seeds.seeds_from_csv``).
    seeds_from
        An RTSTRUCT, DICOM SEG or NIfTI mask whose lesions give the seed points.
    seed_roi
        Regular expression selecting the RTSTRUCT ROIs used as seeds (default:
        names containing "GTV"); ``None`` takes every ROI.
    workers
        Threads used to read files (1, the default, is the fastest on local
        disks; more can help on network storage).
    force
        Redo the outputs even if a complete result with the same cache key exists.
    overlay
        Quick-look options.
    viewer
        Options of the 3D viewer page; ``None`` writes none (``--no-viewer``).
    features
        Radiomics features per lesion when the bundle has ``configs/radiomics.json``
        (``lesions.json`` and ``features.csv`` in the output folder; ``--no-features``).
    classifier
        Classification bundle run on every lesion; default: the one the bundle's metadata
        names (``monai_tumor.classifier``), if any.
    """

    device: str = "auto"
    seeds_csv: Path | None = None
    seeds_from: Path | None = None
    seed_roi: str | None = "(?i)gtv"
    workers: int = 1
    force: bool = False
    overlay: OverlayStyle = field(default_factory=OverlayStyle)
    viewer: ViewerOptions | None = field(default_factory=ViewerOptions)
    features: bool = True
    classifier: Path | None = None


@dataclass(frozen=True)
class InferResult:
    """Outcome of :func:`infer_one`.

    Attributes
    ----------
    status
        ``"done"`` or ``"skipped"`` (no seed for a VOI bundle).
    reason
        Human-readable account (SEG status, reuse, skip reason).
    folder
        The output folder.
    reused
        A complete result with the same cache key was already there.
    outputs
        What was written (``None`` when reused or skipped).
    seconds
        Wall time.
    review
        Why a ``done`` result needs a human look (the bundle's plausibility review, a
        truncated lesion); empty: not flagged.
    """

    status: str
    reason: str
    folder: Path
    reused: bool = False
    outputs: SeriesOutputs | None = None
    seconds: float = 0.0
    review: tuple[str, ...] = ()


def reference_input(bundle: BundleInfo) -> str:
    """Name of the input whose grid the others and the mask are on (default: the first)."""
    name = bundle.reference_input
    return name if name in bundle.input_names else bundle.input_names[0]


def load_segmenter(
    bundle: BundleInfo, *, device: str = "auto", num_threads: int | Literal["auto"] | None = "auto"
) -> Segmenter:
    """Load a bundle's network on a device (``inference.bundle.load_bundle``).

    ``num_threads``: torch threads while segmenting; ``"auto"``: the CPUs this process may
    use; ``None``: torch's setting (a Dask worker sets its own).
    """
    return load_bundle(bundle, device=device, num_threads=num_threads)


def read_source_headers(files: Sequence[Path], series_uid: str) -> list[pydicom.Dataset]:
    """Headers (no pixel data) of the image instances of one series among ``files``."""
    out: list[pydicom.Dataset] = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if str(ds.get("SeriesInstanceUID", "")) != series_uid:
            continue
        if str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES or "Rows" not in ds:
            continue
        out.append(ds)
    return out


def filter_seeds(seeds: Sequence[Seed], image: MetaTensor) -> list[Seed]:
    """Seeds whose LPS point lies inside the image volume (within half a voxel)."""
    if not seeds:
        return []
    affine_lps = ras_to_lps(np.asarray(image.affine, dtype=np.float64))
    shape = np.asarray(image.shape[1:], dtype=np.float64)
    points = np.asarray([s.point_lps for s in seeds], dtype=np.float64)
    ijk = np.atleast_2d(patient_to_voxel(affine_lps, points))
    inside = np.all((ijk >= -0.5) & (ijk <= shape - 0.5), axis=1)
    return [s for s, ok in zip(seeds, inside, strict=True) if ok]


def segment_and_write(
    folder: Path,
    *,
    image: MetaTensor,
    reference: MetaTensor,
    segmenter: Segmenter,
    bundle: BundleInfo,
    cache_key: str,
    provenance: Mapping[str, Any],
    source_datasets: Sequence[pydicom.Dataset] | None,
    seeds: Sequence[Seed] = (),
    overlay: OverlayStyle | None = None,
    viewer: ViewerOptions | None = None,
    extra: Mapping[str, Any] | None = None,
    analysis: LesionAnalysis | None = None,
) -> SeriesOutputs:
    """Run the model on ``image`` and write every output of the series.

    Parameters
    ----------
    folder
        Output folder of the series.
    image
        ``(C, I, J, K)`` model input on the reference grid (channels in the
        bundle's input order).
    reference
        ``(1, I, J, K)`` reference series as read (mask grid, intensities, overlay).
    segmenter, bundle
        The loaded model and its description.
    cache_key, provenance
        Stored in the manifest and ``lesions.json``.
    source_datasets
        Reference series headers for the SEG; ``None`` for NIfTI input.
    seeds
        Seed points (LPS mm) for a VOI bundle.
    overlay, viewer, extra, analysis
        See :func:`~monai_tumor.pipeline.outputs.write_series_outputs`.

    The result is reviewed when the bundle declares a review
    (:func:`monai_tumor.postprocess.review.review_prediction`); the review goes into
    ``lesions.json`` and the manifest.
    """
    t0 = time.perf_counter()
    mask = segmenter.segment(image, seeds=tuple(seeds))
    infer_s = time.perf_counter() - t0
    fields = {"seconds_inference": round(infer_s, 3), **dict(extra or {})}

    def review() -> ReviewResult | None:  # run once the lesion analysis has started
        return review_prediction(image, mask, spec=bundle.review, input_names=bundle.input_names)

    return write_series_outputs(
        folder,
        image=reference,
        mask=mask,
        bundle=bundle,
        cache_key=cache_key,
        provenance=provenance,
        source_datasets=source_datasets,
        no_seg_reason=_NO_SEG_NIFTI if source_datasets is None else "",
        overlay=overlay,
        viewer=viewer,
        extra=fields,
        review=review,
        analysis=analysis,
    )


def source_provenance(
    bundle: BundleInfo, inputs: Mapping[str, MetaTensor], seeds: Sequence[Seed]
) -> dict[str, Any]:
    """Provenance of one result: source UIDs or files, bundle, seeds, software versions."""
    sources: dict[str, Any] = {}
    for name, img in inputs.items():
        uid = str(img.meta.get("SeriesInstanceUID") or "")
        if uid:
            sources[name] = {
                "StudyInstanceUID": str(img.meta.get("StudyInstanceUID", "")),
                "SeriesInstanceUID": uid,
                "FrameOfReferenceUID": str(img.meta.get("FrameOfReferenceUID", "")),
                "number_of_slices": int(img.shape[-1]),
                "slice_residual_mm": float(img.meta.get("slice_residual_mm", 0.0)),
            }
        else:
            sources[name] = {"file": Path(str(img.meta.get("filename_or_obj", ""))).name}
    return {
        "bundle": bundle.provenance(),
        "sources": sources,
        "seeds": [
            {"point_lps_mm": [float(v) for v in s.point_lps], "label": s.label, "source": s.source}
            for s in seeds
        ],
        "software": software_versions(),
    }


def _seeds_for(options: InferOptions, image: MetaTensor) -> tuple[list[Seed], str]:
    from monai_tumor.inference.seeds import (
        seeds_from_csv,
        seeds_from_nifti,
        seeds_from_rtstruct,
        seeds_from_seg,
    )

    seeds: list[Seed] = []
    origin = ""
    if options.seeds_csv is not None:
        seeds += list(
            seeds_from_csv(
                options.seeds_csv,
                series_uid=str(image.meta.get("SeriesInstanceUID") or "") or None,
                study_uid=str(image.meta.get("StudyInstanceUID") or "") or None,
            )
        )
        origin = f"csv:{options.seeds_csv.name}"
    if options.seeds_from is not None and is_nifti(options.seeds_from):
        seeds += seeds_from_nifti(options.seeds_from)
        origin = f"nifti:{options.seeds_from.name}"
    elif options.seeds_from is not None:
        try:
            ds = pydicom.dcmread(options.seeds_from, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as exc:
            raise ConfigError(
                f"cannot read it as DICOM ({exc}); expected an RTSTRUCT or SEG file "
                "(or a NIfTI mask named .nii / .nii.gz)",
                path=options.seeds_from,
            ) from exc
        if str(ds.get("Modality", "")) == "SEG":
            seeds += list(seeds_from_seg(options.seeds_from, image))
        else:
            seeds += list(seeds_from_rtstruct(options.seeds_from, image, roi=options.seed_roi))
        origin = f"{ds.get('Modality', 'DICOM')}:{ds.get('SOPInstanceUID', '')}"
    return filter_seeds(seeds, image), origin


def infer_one(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    bundle: str | os.PathLike[str] | BundleInfo,
    out_dir: str | os.PathLike[str],
    options: InferOptions | None = None,
    segmenter: Segmenter | None = None,
    feature_pool: FeaturePool | None = None,
) -> InferResult:
    """Segment one case and write mask, SEG (DICOM input), lesions, overlay, manifest.

    Parameters
    ----------
    inputs
        One DICOM series folder or NIfTI/NRRD/MHA file per bundle input, in the
        bundle's input order (``BundleInfo.input_names``).
    bundle
        Bundle folder, or an already read description.
    out_dir
        Output folder (the files are written directly into it).
    options
        Device, seeds, workers.
    segmenter
        A loaded model (default: load the bundle on ``options.device``).
    feature_pool
        Worker processes for the radiomics features (:class:`~monai_tumor.radiomics.pool.
        FeaturePool`, owned by the caller); default: features are computed in this process.

    Returns
    -------
    InferResult

    Raises
    ------
    ConfigError
        The number of inputs does not match the bundle's inputs.
    IngestError, InvalidSeriesError
        An input cannot be read.
    """
    opts = options or InferOptions()
    start = time.perf_counter()
    info = _bundle_info(bundle)
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    names = tuple(info.input_names)
    if len(paths) != len(names):
        raise ConfigError(
            f"the bundle {info.name!r} takes {len(names)} input(s) {list(names)} but "
            f"{len(paths)} were given; pass one series folder or file per input, in that order"
        )
    for path in paths:
        if not path.exists():
            raise IngestError(
                "input not found; expected a DICOM series folder or a NIfTI file", path=path
            )
    read_opts = ReadOptions(workers=max(1, opts.workers))
    images = {
        name: read_series(path, options=read_opts) for name, path in zip(names, paths, strict=True)
    }
    ref_name = reference_input(info)
    reference = images[ref_name]
    stacked = reference if len(names) == 1 else load_inputs(images, reference=ref_name, order=names)
    seeds: list[Seed] = []
    seed_origin = ""
    if info.kind == "voi":
        seeds, seed_origin = _seeds_for(opts, reference)
    ref_path = paths[names.index(ref_name)]
    dicom = not (ref_path.is_file() and is_volume_file(ref_path))
    key_parts = [
        str(img.meta.get("SeriesInstanceUID") or p.resolve())
        for img, p in zip(images.values(), paths, strict=True)
    ]
    spec = analysis_spec_for(info.root, features=opts.features, classifier=opts.classifier)
    key = cache_key_for(
        key_parts,
        info,
        seeds=[seed_origin, spec.cache_token(), *[s.point_lps for s in seeds]],
    )
    out = Path(out_dir)
    if info.kind == "voi" and not seeds:
        return InferResult(
            "skipped",
            f"the {info.name!r} bundle segments around seed points and none lies inside this "
            "series; pass --seeds CSV or --seeds-from RTSTRUCT/SEG",
            out,
            seconds=time.perf_counter() - start,
        )
    previous = None if opts.force else completed_manifest(out, key)
    if previous is not None:
        return InferResult(
            "done",
            "reused: complete outputs with the same cache key",
            out,
            reused=True,
            seconds=time.perf_counter() - start,
            review=review_fields(previous.get("review")).get("review_reasons", ()),
        )
    source_datasets: list[pydicom.Dataset] | None = None
    extra: dict[str, Any] = {}
    if dicom:
        files = [
            p for p in (ref_path.rglob("*") if ref_path.is_dir() else [ref_path]) if p.is_file()
        ]
        source_datasets = read_source_headers(
            files, str(reference.meta.get("SeriesInstanceUID", ""))
        )
        if source_datasets:
            extra["series"] = acquisition_fields(source_datasets[0])
    model = segmenter or load_segmenter(info, device=opts.device)
    outputs = segment_and_write(
        out,
        image=stacked,
        reference=reference,
        segmenter=model,
        bundle=info,
        cache_key=key,
        provenance=source_provenance(info, images, seeds),
        source_datasets=source_datasets,
        seeds=seeds,
        overlay=opts.overlay,
        viewer=opts.viewer,
        extra=extra,
        analysis=spec.load(pool=feature_pool) if not spec.empty else None,
    )
    if not spec.empty:
        write_features_table(out, ["."])
    return InferResult(
        "done",
        f"SEG {outputs.seg_status}",
        out,
        outputs=outputs,
        seconds=time.perf_counter() - start,
        review=outputs.review.reasons if outputs.review and outputs.review.review else (),
    )


def _bundle_info(bundle: str | os.PathLike[str] | BundleInfo) -> BundleInfo:
    if isinstance(bundle, BundleInfo):
        return bundle
    return read_bundle_info(Path(bundle))
