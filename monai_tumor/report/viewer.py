"""Per-series 3D viewer: a display copy of the image and its mask, and a NiiVue page.

For each finished series :func:`write_viewer` writes, next to ``mask.nii.gz``:

``display.js``
    The *display copy*: the reference image and the label map as two gzipped NIfTI-1
    files, base64-encoded inside one script (``window.monaiTumorDisplay``), with the
    lesions, segment names and colours, window presets and the grid's voxel-to-LPS map.
    Browsers refuse ``fetch`` of ``file://`` URLs but do run a ``<script src>`` from
    them, so carrying the volumes in a script is what lets the page open straight from
    the folder, offline, after the folder is copied elsewhere.
``viewer.html``
    The page: axial, coronal and sagittal slices plus a 3D rendering (NiiVue), window
    presets per modality, label opacity and per-label toggles, the lesion table
    (clicking a row moves the crosshair to the lesion's centroid) and orientation letters.
    It loads NiiVue and its own script from the run's ``viewer-assets/`` folder
    (:mod:`monai_tumor.report.assets`) by relative links.

Very large volumes are subsampled for display (:func:`display_steps`): every ``s``-th
voxel along the finest axes, the image and the mask with the same steps, so display
voxel ``(i, j, k)`` *is* voxel ``(s0 i, s1 j, s2 k)`` of ``mask.nii.gz`` (no
interpolation; the affine comes from :func:`monai_tumor.geometry.subsampled_affine`).

The display NIfTI headers carry only the grid and intensity scaling: ``descrip``,
``aux_file``, ``intent_name`` and ``db_name`` are empty and there are no header
extensions, so no patient identifier can reach them.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import torch
from monai.data import MetaTensor

from monai_tumor.errors import ExportError
from monai_tumor.export.atomic import atomic_write_text
from monai_tumor.export.overlay import LUNG_WINDOW, SOFT_TISSUE_WINDOW
from monai_tumor.export.seg import SegmentSpec
from monai_tumor.geometry import (
    ras_to_lps,
    spacing_from_affine,
    subsampled_affine,
    voxel_to_patient,
)
from monai_tumor.report.assets import install_viewer_assets

__all__ = [
    "CT_PRESETS",
    "DEFAULT_MAX_VOXELS",
    "DISPLAY_NAME",
    "DISPLAY_SCHEMA",
    "MR_PRESETS",
    "VIEWER_NAME",
    "DisplayCopy",
    "ViewerFiles",
    "ViewerOptions",
    "WindowPreset",
    "display_steps",
    "make_display_copy",
    "read_display",
    "write_viewer",
]

#: File name of the display copy (a script holding the volumes and the lesion table).
DISPLAY_NAME = "display.js"
#: File name of the viewer page.
VIEWER_NAME = "viewer.html"
#: Identifier of the ``display.js`` payload layout.
DISPLAY_SCHEMA = "monai-tumor/display/1"
#: Display copies above this many voxels are subsampled (2**24: a 512 x 512 CT of up to
#: 64 slices stays whole, LUNG1's 512 x 512 x 134 becomes 256 x 256 x 134).
DEFAULT_MAX_VOXELS = 1 << 24
_GLOBAL = "monaiTumorDisplay"
_PREFIX = f"window.{_GLOBAL} = "
_INT16 = (-32768, 32767)
# Colours of labels the bundle does not describe (as the overlay pictures).
_FALLBACK_COLOURS = ((255, 64, 64), (64, 160, 255), (255, 210, 64), (64, 220, 120))


@dataclass(frozen=True)
class WindowPreset:
    """A display window of the viewer.

    Attributes
    ----------
    name
        Shown in the viewer's preset menu.
    low, high
        Image values shown black and white (HU for CT); both ``None`` for "auto"
        (NiiVue's robust range of the volume, 2nd to 98th percentile).
    """

    name: str
    low: float | None = None
    high: float | None = None


#: CT presets: lung (W 1500 / L -600) and mediastinum (W 400 / L 40), as the overlays.
CT_PRESETS: tuple[WindowPreset, ...] = (
    WindowPreset("lung", *LUNG_WINDOW),
    WindowPreset("mediastinum", *SOFT_TISSUE_WINDOW),
    WindowPreset("auto"),
)
#: MR and other modalities: the volume's robust range.
MR_PRESETS: tuple[WindowPreset, ...] = (WindowPreset("auto"),)


@dataclass(frozen=True)
class ViewerOptions:
    """Options of the per-series viewer.

    Attributes
    ----------
    max_voxels
        Largest display copy kept at full resolution; larger ones are subsampled
        (:func:`display_steps`).
    ct_presets, other_presets
        Window presets offered for CT and for every other modality; the first is the
        initial window.
    compresslevel
        gzip level of the display NIfTI (1 fastest .. 9 smallest; see docs/benchmarks.md).
    """

    max_voxels: int = DEFAULT_MAX_VOXELS
    ct_presets: tuple[WindowPreset, ...] = CT_PRESETS
    other_presets: tuple[WindowPreset, ...] = MR_PRESETS
    compresslevel: int = 6


@dataclass(frozen=True)
class DisplayCopy:
    """The volumes the viewer shows.

    Attributes
    ----------
    image
        ``(I, J, K)`` reference image (first channel), subsampled by ``steps``.
    labels
        ``(I, J, K)`` uint8 label map on the same grid.
    affine_ras
        Voxel-to-RAS affine of that grid (mm).
    steps
        Subsampling step per voxel axis (1: full resolution).
    """

    image: npt.NDArray[Any]
    labels: npt.NDArray[np.uint8]
    affine_ras: npt.NDArray[np.float64]
    steps: tuple[int, int, int]


@dataclass(frozen=True)
class ViewerFiles:
    """What :func:`write_viewer` wrote.

    Attributes
    ----------
    page, display
        ``viewer.html`` and ``display.js``.
    bytes
        Size of both files together.
    steps, shape
        Subsampling steps and the display grid's shape.
    lesions_at_edge
        Lesions touching the edge of the scanned volume (they may be cut off by it).
    """

    page: Path
    display: Path
    bytes: int
    steps: tuple[int, int, int]
    shape: tuple[int, int, int]
    lesions_at_edge: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest (relative names, no paths)."""
        return {
            "page": self.page.name,
            "display": self.display.name,
            "bytes": self.bytes,
            "steps": list(self.steps),
            "shape": list(self.shape),
            "lesions_at_edge": self.lesions_at_edge,
        }


def display_steps(
    shape: Sequence[int], spacing_mm: Sequence[float], *, max_voxels: int
) -> tuple[int, int, int]:
    """Choose integer subsampling steps so that the display grid has at most ``max_voxels``.

    The axes with the finest effective spacing (spacing times step) are coarsened first,
    together when equal (within 1 %), so a 0.7 mm x 0.7 mm x 3 mm CT loses in-plane
    resolution, symmetrically, before any slice.

    Parameters
    ----------
    shape
        Voxel counts ``(I, J, K)``.
    spacing_mm
        Voxel size along each axis, mm.
    max_voxels
        Upper bound on ``prod(ceil(shape / steps))``; at least 1.

    Returns
    -------
    tuple of int
        ``(s0, s1, s2)``, each at least 1.
    """
    if max_voxels < 1:
        raise ValueError(f"max_voxels must be at least 1, got {max_voxels}")
    dims = [int(n) for n in shape]
    spacing = [float(s) if s > 0 else 1.0 for s in spacing_mm]
    steps = [1, 1, 1]

    def count() -> int:
        return math.prod(-(-n // s) for n, s in zip(dims, steps, strict=True))

    while count() > max_voxels:
        open_axes = [a for a in range(3) if -(-dims[a] // steps[a]) > 1]
        finest = min(spacing[a] * steps[a] for a in open_axes)
        for a in open_axes:
            if spacing[a] * steps[a] <= finest * 1.01:
                steps[a] += 1
    return steps[0], steps[1], steps[2]


def _numpy(x: MetaTensor | torch.Tensor) -> npt.NDArray[Any]:
    data = x.as_tensor() if isinstance(x, MetaTensor) else x
    return np.asarray(data.detach().cpu().numpy())


def make_display_copy(
    image: MetaTensor, mask: MetaTensor | torch.Tensor, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> DisplayCopy:
    """Subsample the reference image and the label map onto one display grid.

    Parameters
    ----------
    image
        ``(C, I, J, K)`` image with a RAS affine; channel 0 (the reference input) is shown.
    mask
        ``(1, I, J, K)`` or ``(I, J, K)`` label map on ``image``'s grid.
    max_voxels
        See :func:`display_steps`.

    Returns
    -------
    DisplayCopy

    Raises
    ------
    ExportError
        The mask is not on the image grid, or has labels above 255.
    """
    volume = _numpy(image)
    volume = volume[0] if volume.ndim == 4 else volume
    labels = _numpy(mask)
    labels = labels[0] if labels.ndim == 4 else labels
    if volume.shape != labels.shape or volume.ndim != 3:
        raise ExportError(
            f"viewer: the mask's grid {labels.shape} differs from the image's {volume.shape}; "
            "the display copy needs both on one grid"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ExportError(
            f"viewer: labels {labels.min()}..{labels.max()} do not fit 0..255 (uint8 display)"
        )
    affine = np.asarray(_numpy(torch.as_tensor(image.affine)), dtype=np.float64)
    spacing = [float(s) for s in spacing_from_affine(affine)]
    steps = display_steps(volume.shape, spacing, max_voxels=max_voxels)
    window = (slice(None, None, steps[0]), slice(None, None, steps[1]), slice(None, None, steps[2]))
    return DisplayCopy(
        image=np.ascontiguousarray(volume[window]),
        labels=np.ascontiguousarray(labels[window]).astype(np.uint8),
        affine_ras=subsampled_affine(affine, steps),
        steps=steps,
    )


def _nifti_gz(
    volume: npt.NDArray[Any], affine_ras: npt.NDArray[np.float64], *, compresslevel: int = 6
) -> bytes:
    """Encode ``volume`` as gzipped NIfTI-1 whose header holds the grid and scaling only."""
    data = volume
    integral = np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.bool_)
    if integral and data.size and _INT16[0] <= data.min() and data.max() <= _INT16[1]:
        data = data.astype(np.uint8 if data.dtype == np.uint8 else np.int16)
        stored: type[np.generic] = data.dtype.type
    else:
        # Non-integral (MR) or out-of-range values: int16 with a scale factor that
        # nibabel chooses (scl_slope / scl_inter), which NiiVue applies.
        data = data.astype(np.float32)
        stored = np.int16
    header = nib.Nifti1Header()
    header.set_data_dtype(stored)
    header.set_xyzt_units("mm")
    nii = nib.Nifti1Image(data, affine_ras, header=header)
    nii.set_sform(affine_ras, code=1)
    nii.set_qform(affine_ras, code=1)
    # mtime=0: the same volume always gives the same bytes (stable manifest hashes).
    return gzip.compress(nii.to_bytes(), compresslevel=compresslevel, mtime=0)


def _b64_nifti(volume: npt.NDArray[Any], affine: npt.NDArray[np.float64], level: int) -> str:
    return base64.b64encode(_nifti_gz(volume, affine, compresslevel=level)).decode("ascii")


def _lesion_entries(
    lesions: Sequence[Mapping[str, Any]],
    steps: tuple[int, int, int],
    source_shape: tuple[int, ...],
    affine_ras: npt.NDArray[np.float64],
) -> tuple[list[dict[str, Any]], int]:
    entries = []
    at_edge = 0
    for lesion in lesions:
        voxel = [float(v) for v in lesion.get("centroid_voxel", [])]
        index = [math.floor(v / s + 0.5) for v, s in zip(voxel, steps, strict=False)]
        bbox = lesion.get("bbox_voxel") or [[], []]
        touches = any(int(lo) <= 0 for lo in bbox[0]) or any(
            int(hi) >= n - 1 for hi, n in zip(bbox[1], source_shape, strict=False)
        )
        at_edge += int(touches)
        entries.append(
            {
                "index": lesion.get("index"),
                "label": lesion.get("label"),
                "volume_ml": lesion.get("volume_ml"),
                "diameter_3d_mm": lesion.get("diameter_3d_mm"),
                "diameter_axial_mm": lesion.get("diameter_axial_mm"),
                "centroid_lps_mm": lesion.get("centroid_lps_mm"),
                "centroid_voxel": voxel,
                "display_voxel": [v / s for v, s in zip(voxel, steps, strict=False)],
                # The crosshair stops on voxel centres: the nearest one (halves round up),
                # given to the viewer in RAS mm (NiiVue's world space).
                "display_index": index,
                "display_ras_mm": voxel_to_patient(affine_ras, index).round(4).tolist(),
                "at_edge": touches,
            }
        )
    return entries, at_edge


def _segment_entries(
    segments: Sequence[SegmentSpec], labels: npt.NDArray[np.uint8]
) -> list[dict[str, Any]]:
    described = {spec.number: spec for spec in segments}
    present = sorted(int(v) for v in np.unique(labels) if v)
    out = []
    for n, number in enumerate(sorted(set(described) | set(present))):
        if not 0 < number < 256:
            continue
        spec = described.get(number)
        colour = spec.color_rgb if spec else _FALLBACK_COLOURS[n % len(_FALLBACK_COLOURS)]
        out.append(
            {
                "number": number,
                "label": spec.label if spec else f"label {number}",
                "rgb": [int(c) for c in colour],
                "present": number in present,
            }
        )
    return out


def _presets(modality: str, options: ViewerOptions) -> list[dict[str, Any]]:
    chosen = options.ct_presets if modality.upper() == "CT" else options.other_presets
    return [{"name": p.name, "low": p.low, "high": p.high} for p in chosen]


def _page(*, title: str, assets_href: str, back_href: str | None) -> str:
    esc = html.escape
    back = f"<a href='{esc(back_href)}'>&larr; report</a>" if back_href else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{esc(assets_href)}/viewer.css">
</head><body>
<header>{back}<h1>{esc(title)}</h1><span id="where"></span></header>
<div id="message" hidden></div>
<main>
<div id="view"><canvas id="gl"></canvas></div>
<aside>
<section><h2>View</h2><div id="layouts"></div>
<label><input type="checkbox" id="radiological" checked> radiological (patient right on
screen left)</label></section>
<section><h2>Window</h2><select id="preset"></select></section>
<section><h2>Labels</h2>
<label>opacity <input type="range" id="opacity" min="0" max="1" step="0.05" value="0.6">
</label><div id="labels"></div></section>
<section><h2>Lesions</h2><p class="hint">Click a row to move the crosshair to the
lesion's centroid. Centroids are DICOM LPS, mm.</p><table id="lesions"></table></section>
</aside>
</main>
<noscript>This viewer needs JavaScript and WebGL2.</noscript>
<script src="{esc(assets_href)}/niivue.umd.js"></script>
<script src="{DISPLAY_NAME}"></script>
<script src="{esc(assets_href)}/viewer.js"></script>
</body></html>
"""


def write_viewer(
    folder: str | os.PathLike[str],
    *,
    image: MetaTensor,
    mask: MetaTensor | torch.Tensor,
    lesions: Sequence[Mapping[str, Any]],
    segments: Sequence[SegmentSpec],
    run_dir: str | os.PathLike[str],
    title: str,
    options: ViewerOptions | None = None,
) -> ViewerFiles:
    """Write ``display.js`` and ``viewer.html`` for one series (atomically).

    Parameters
    ----------
    folder
        The series' output folder.
    image
        ``(C, I, J, K)`` reference image, RAS affine, ``meta["Modality"]`` picks the
        window presets. Only voxels and the affine are used: no header field reaches
        the display copy.
    mask
        Label map on ``image``'s grid.
    lesions
        ``lesions.json``'s lesion entries (``Lesion.to_dict()``).
    segments
        Names and colours of the labels (the bundle's).
    run_dir
        The run's output folder, which holds ``viewer-assets/`` (installed here if
        missing); the page links to it relatively. For a single series written
        on its own, ``folder`` itself.
    title
        Page title: bundle, modality, series number... never patient data.
    options
        Subsampling and window presets.

    Returns
    -------
    ViewerFiles

    Raises
    ------
    ExportError
        The mask is not on the image grid, or a file cannot be written.
    """
    opts = options or ViewerOptions()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    assets = install_viewer_assets(run_dir)
    copy = make_display_copy(image, mask, max_voxels=opts.max_voxels)
    source_shape = tuple(int(n) for n in image.shape[-3:])
    entries, at_edge = _lesion_entries(lesions, copy.steps, source_shape, copy.affine_ras)
    modality = str(image.meta.get("Modality", "")) if isinstance(image, MetaTensor) else ""
    payload = {
        "schema": DISPLAY_SCHEMA,
        "title": title,
        "modality": modality,
        "shape": list(copy.labels.shape),
        "source_shape": list(source_shape),
        "steps": list(copy.steps),
        # Maps of the display grid, for the page's read-out (plain matrix products there).
        "voxel_to_lps": ras_to_lps(copy.affine_ras).round(6).tolist(),
        "ras_to_voxel": np.linalg.inv(copy.affine_ras).round(9).tolist(),
        "presets": _presets(modality, opts),
        "segments": _segment_entries(segments, copy.labels),
        "lesions": entries,
        "image": _b64_nifti(copy.image, copy.affine_ras, opts.compresslevel),
        "labels": _b64_nifti(copy.labels, copy.affine_ras, opts.compresslevel),
    }
    assets_href = Path(os.path.relpath(assets, out)).as_posix()
    index = Path(run_dir) / "index.html"
    back = Path(os.path.relpath(index, out)).as_posix() if Path(run_dir) != out else None
    try:
        display = atomic_write_text(out / DISPLAY_NAME, _PREFIX + json.dumps(payload) + ";\n")
        page = atomic_write_text(
            out / VIEWER_NAME, _page(title=title, assets_href=assets_href, back_href=back)
        )
    except OSError as exc:
        raise ExportError(f"cannot write the viewer files in {out}: {exc}") from exc
    return ViewerFiles(
        page=page,
        display=display,
        bytes=page.stat().st_size + display.stat().st_size,
        steps=copy.steps,
        shape=(int(copy.labels.shape[0]), int(copy.labels.shape[1]), int(copy.labels.shape[2])),
        lesions_at_edge=at_edge,
    )


def read_display(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``display.js`` back: the payload with ``image``/``labels`` as NIfTI images.

    Parameters
    ----------
    path
        A ``display.js`` written by :func:`write_viewer`.

    Returns
    -------
    dict
        The payload; ``"image"`` and ``"labels"`` are :class:`nibabel.Nifti1Image`.

    Raises
    ------
    ExportError
        The file is not a display copy.
    """
    text = Path(path).read_text(encoding="utf-8").strip()
    if not text.startswith(_PREFIX) or not text.endswith(";"):
        raise ExportError(f"{path} is not a monai-tumor display copy (no {_GLOBAL} payload)")
    payload: dict[str, Any] = json.loads(text[len(_PREFIX) : -1])
    if payload.get("schema") != DISPLAY_SCHEMA:
        raise ExportError(
            f"{path}: display schema {payload.get('schema')!r}, expected {DISPLAY_SCHEMA!r}"
        )
    for key in ("image", "labels"):
        raw = gzip.decompress(base64.b64decode(payload[key]))
        payload[key] = nib.Nifti1Image.from_bytes(raw)
    return payload
