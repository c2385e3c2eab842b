"""Render a quick-look PNG: the slices with the most lesion, mask contours on the image.

Display convention (radiological, as on a PACS viewer's axial image): the
patient's **right is on the image left**, the patient's left on the image
right, **anterior at the top**, seen from the feet. To get there, image and mask
are reoriented to voxel axes ``L, P, S`` with MONAI's
:class:`monai.transforms.Orientation` (a permutation and flips of the voxel
axes chosen from the RAS affine; no interpolation). Display slice ``k`` of the
reoriented volume is then ``volume[:, :, k].T``: rows run anterior to posterior,
columns right to left, exactly how an axial DICOM image with
ImageOrientationPatient ``(1, 0, 0, 0, 1, 0)`` is shown. Pixels keep their physical
aspect ratio. For a coronal, sagittal or oblique acquisition the panels are
the voxel planes nearest to axial (no resampling), which is what a quick-look
needs; the slice position printed is the patient z (superior, mm) of the panel's
centre.

Slices: the display slice with the largest lesion area first, then the next
largest at least ``ceil(extent / (2 n_slices))`` slices away from those
already chosen (so three panels do not show three neighbouring slices).

Drawing uses matplotlib's object API with the Agg canvas (no pyplot, no global
state, safe in threads); contours come from :func:`skimage.measure.find_contours`
on each label, in the segment colours. The file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from monai.data import MetaTensor
from monai.transforms import Orientation
from skimage.measure import find_contours

from monai_tumor.errors import ExportError
from monai_tumor.export.atomic import atomic_path
from monai_tumor.export.seg import SegmentSpec
from monai_tumor.geometry import (
    axis_codes,
    patient_to_voxel,
    ras_to_lps,
    spacing_from_affine,
    voxel_to_patient,
)
from monai_tumor.postprocess.lesions import Lesion

__all__ = ["LUNG_WINDOW", "SOFT_TISSUE_WINDOW", "render_overlay"]

#: CT soft-tissue window (level 40 HU, width 400 HU) as (low, high) HU.
SOFT_TISSUE_WINDOW: tuple[float, float] = (-160.0, 240.0)
#: CT lung window (level -600 HU, width 1500 HU) as (low, high) HU.
LUNG_WINDOW: tuple[float, float] = (-1350.0, 150.0)

_DISPLAY_CODES = "LPS"
_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
# Colours for labels without a SegmentSpec (saturated, distinct on grey).
_PALETTE = (
    (255, 64, 64),
    (64, 220, 64),
    (80, 140, 255),
    (255, 210, 0),
    (255, 0, 255),
    (0, 230, 230),
    (255, 140, 0),
)


def _as_tensor(x: MetaTensor, what: str) -> MetaTensor:
    if not isinstance(x, MetaTensor):
        raise ExportError(f"the {what} must be a MetaTensor with a RAS affine, got {type(x)}")
    if x.ndim == 3:
        x = cast(MetaTensor, x.unsqueeze(0))
    if x.ndim != 4 or x.shape[0] != 1:
        raise ExportError(f"the {what} must be (1, I, J, K), found shape {tuple(x.shape)}")
    return x


def _affine(x: MetaTensor) -> npt.NDArray[np.float64]:
    aff = x.affine
    return np.asarray(
        aff.detach().cpu().numpy() if isinstance(aff, torch.Tensor) else aff, dtype=np.float64
    )


def _to_display(x: MetaTensor) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Reorient to voxel axes L, P, S; return the (I, J, K) array and its RAS affine."""
    out = Orientation(axcodes=_DISPLAY_CODES, labels=_LABELS)(x)
    assert isinstance(out, MetaTensor)
    aff = _affine(out)
    if axis_codes(aff) != _DISPLAY_CODES:  # belt and braces: the display must be LPS
        raise ExportError(f"reorientation gave axes {axis_codes(aff)}, expected LPS")
    return out[0].detach().cpu().numpy(), aff


def _integer_labels(mask: MetaTensor) -> MetaTensor:
    """Return the mask as integers without widening: bool to uint8, floats to int32."""
    if mask.dtype == torch.bool:
        return cast(MetaTensor, mask.to(torch.uint8))
    if torch.is_floating_point(mask):
        return cast(MetaTensor, mask.to(torch.int32))
    return mask


def _pick_slices(mask: npt.NDArray[Any], n_slices: int) -> list[int]:
    area = np.count_nonzero(mask, axis=(0, 1))
    depth = mask.shape[2]
    if not area.any():
        return sorted({int(np.rint(x)) for x in np.linspace(0, depth - 1, n_slices + 2)[1:-1]})
    present = np.flatnonzero(area)
    extent = int(present[-1] - present[0] + 1)
    gap = max(1, math.ceil(extent / (2 * n_slices)))
    chosen: list[int] = []
    for k in np.argsort(-area, kind="stable"):
        if area[k] == 0 or len(chosen) == n_slices:
            break
        if all(abs(int(k) - c) >= gap for c in chosen):
            chosen.append(int(k))
    return chosen


def _default_window(image: MetaTensor, volume: npt.NDArray[Any]) -> tuple[float, float]:
    if str(image.meta.get("Modality", "")).upper() == "CT":
        return SOFT_TISSUE_WINDOW
    flat = volume.ravel()
    if flat.size > 2_000_000:  # percentiles of a strided sample are plenty for display
        flat = flat[:: flat.size // 1_000_000]
    low, high = np.percentile(flat, [1.0, 99.5])
    return float(low), float(high) if high > low else float(low) + 1.0


def _segment_styles(
    labels: Sequence[int], segments: Sequence[SegmentSpec] | None
) -> dict[int, tuple[str, tuple[float, float, float]]]:
    specs = {s.number: s for s in segments or ()}
    styles: dict[int, tuple[str, tuple[float, float, float]]] = {}
    for n, value in enumerate(labels):
        spec = specs.get(value)
        rgb = spec.color_rgb if spec else _PALETTE[n % len(_PALETTE)]
        name = spec.label if spec else f"label {value}"
        styles[value] = (name, (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0))
    return styles


def _png_metadata(provenance: Mapping[str, Any] | None) -> dict[str, str]:
    from monai_tumor import __version__

    meta = {"Software": f"monai-tumor {__version__}"}
    if provenance is not None:
        meta["Description"] = json.dumps(dict(provenance), sort_keys=True, default=str)
    return meta


def render_overlay(
    image: MetaTensor,
    mask: MetaTensor,
    out_png: str | os.PathLike[str],
    *,
    n_slices: int = 3,
    window: tuple[float, float] | None = None,
    lesions: Sequence[Lesion] | None = None,
    segments: Sequence[SegmentSpec] | None = None,
    title: str | None = None,
    panel_inches: float = 4.0,
    dpi: int = 100,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Render the largest-lesion slices with mask contours to a PNG, atomically.

    Parameters
    ----------
    image
        ``(1, I, J, K)`` image with a RAS affine (voxel axes ``[column, row,
        slice]``); values in HU for CT.
    mask
        ``(1, I, J, K)`` integer label map on the same grid.
    out_png
        Destination PNG.
    n_slices
        Number of panels (axial display slices).
    window
        Display window ``(low, high)`` in image units, e.g.
        :data:`SOFT_TISSUE_WINDOW` or :data:`LUNG_WINDOW` for CT. Default: soft
        tissue for CT, the 1st-99.5th percentiles otherwise (MR, PET).
    lesions
        Lesions from :func:`monai_tumor.postprocess.lesions.measure_lesions`:
        numbered on the panels where they appear and listed under the images.
    segments
        Label names and colours (as exported to the SEG); unnamed labels get
        a default colour and "label N".
    title
        Figure title (must not contain patient identifiers).
    panel_inches, dpi
        Each panel is ``panel_inches`` square; the PNG is
        ``n_slices * panel_inches * dpi`` pixels wide and
        ``(panel_inches + 1) * dpi`` high.
    provenance
        JSON-serialisable record of the picture's sources (no patient
        identifiers), stored in the PNG's ``Description`` text chunk next to
        ``Software``.

    Returns
    -------
    Path
        The written PNG.

    Raises
    ------
    ExportError
        If image and mask are not on the same grid or the PNG cannot be written.
    """
    dest = Path(out_png)
    if n_slices < 1:
        raise ExportError(f"n_slices must be at least 1, got {n_slices}")
    img_t, mask_t = _as_tensor(image, "image"), _as_tensor(mask, "mask")
    if img_t.shape != mask_t.shape or not np.allclose(_affine(img_t), _affine(mask_t), atol=1e-3):
        raise ExportError(
            f"image {tuple(img_t.shape)} and mask {tuple(mask_t.shape)} are not on the same grid "
            "(shape or affine differ); resample the mask onto the image first",
            path=dest,
        )
    source_affine = _affine(img_t)
    vol, disp_affine = _to_display(img_t)
    # The label map keeps its integer type (uint8 from the pipeline): a wider copy of a
    # whole CT's mask costs hundreds of MB (512 x 512 x 400: 420 MB as int32, 840 MB int64).
    lab, _ = _to_display(_integer_labels(mask_t))
    spacing = spacing_from_affine(disp_affine)
    chosen = _pick_slices(lab, n_slices)
    low, high = window if window is not None else _default_window(image, vol)
    labels = [int(v) for v in np.unique(lab[lab != 0])]  # mostly background: sort the rest
    styles = _segment_styles(labels, segments)
    source_is_axial = axis_codes(source_affine)[2] in "SI"

    n_panels = len(chosen)
    largest = chosen[0]
    chosen = sorted(chosen, key=lambda kk: -_slice_z(disp_affine, vol.shape, kk))  # head first
    fig_h = panel_inches + 1.0
    fig = Figure(figsize=(n_panels * panel_inches, fig_h), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    gap = 0.04 / n_panels
    for p, k in enumerate(chosen):
        # Bands: 0.6 in at the bottom (legend, lesion list), 0.4 in at the top (titles).
        ax = fig.add_axes(
            (p / n_panels + gap / 2, 0.6 / fig_h, 1.0 / n_panels - gap, panel_inches / fig_h - 0.0)
        )
        ax.set_facecolor("black")
        ax.set_axis_off()
        # Rows run anterior -> posterior, columns patient right -> left.
        ax.imshow(
            vol[:, :, k].T,
            cmap="gray",
            vmin=low,
            vmax=high,
            interpolation="nearest",
            aspect=float(spacing[1] / spacing[0]),
        )
        for value in labels:
            sl = (lab[:, :, k] == value).T
            if not sl.any():
                continue
            padded = np.pad(sl, 1).astype(np.float32)
            for contour in find_contours(padded, 0.5):
                ax.plot(contour[:, 1] - 1, contour[:, 0] - 1, color=styles[value][1], lw=1.3)
        _annotate(
            ax,
            lab[:, :, k] != 0,
            k,
            disp_affine,
            source_affine,
            source_is_axial,
            lesions,
            largest=k == largest and n_panels > 1,
        )
    handles = [Line2D([], [], color=colour, lw=3, label=name) for name, colour in styles.values()]
    if handles:
        fig.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 0.0),
            ncol=min(len(handles), 4),
            frameon=False,
            labelcolor="white",
            fontsize=9,
        )
    fig.text(
        0.99,
        0.02,
        _lesion_summary(lesions) if lesions else ("no lesion in mask" if not labels else ""),
        color="white",
        fontsize=8,
        ha="right",
        va="bottom",
    )
    if title:
        fig.text(0.5, 1.0 - 0.03 / fig_h, title, color="white", fontsize=11, ha="center", va="top")
    try:
        with atomic_path(dest, suffix=".png") as tmp:
            fig.savefig(
                tmp,
                format="png",
                dpi=dpi,
                facecolor=fig.get_facecolor(),
                metadata=_png_metadata(provenance),
            )
    except OSError as exc:
        raise ExportError(f"could not write the overlay PNG: {exc}", path=dest) from exc
    return dest


def _slice_z(affine_ras: npt.NDArray[np.float64], shape: tuple[int, ...], k: int) -> float:
    """Patient z (LPS, superior positive, mm) of the centre of display slice ``k``."""
    centre = [(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0, float(k)]
    return float(voxel_to_patient(ras_to_lps(affine_ras), centre)[2])


def _annotate(
    ax: Any,
    in_slice: npt.NDArray[np.bool_],
    k: int,
    disp_affine: npt.NDArray[np.float64],
    source_affine: npt.NDArray[np.float64],
    source_is_axial: bool,
    lesions: Sequence[Lesion] | None,
    *,
    largest: bool,
) -> None:
    """Orientation letters, slice position and lesion numbers on one panel."""
    style: Mapping[str, Any] = {"color": "#ffd24d", "fontsize": 10, "fontweight": "bold"}
    shape = in_slice.shape
    n_cols, n_rows = shape
    ax.text(0.01, 0.5, "R", transform=ax.transAxes, ha="left", va="center", **style)
    ax.text(0.99, 0.5, "L", transform=ax.transAxes, ha="right", va="center", **style)
    ax.text(0.5, 0.99, "A", transform=ax.transAxes, ha="center", va="top", **style)
    ax.text(0.5, 0.01, "P", transform=ax.transAxes, ha="center", va="bottom", **style)
    centre_lps = voxel_to_patient(
        ras_to_lps(disp_affine), [(n_cols - 1) / 2.0, (n_rows - 1) / 2.0, float(k)]
    )
    text = f"z = {_slice_z(disp_affine, shape, k):+.1f} mm"
    if source_is_axial:
        k_source = patient_to_voxel(ras_to_lps(source_affine), centre_lps)[2]
        text = f"slice k = {round(float(k_source))}   {text}"
    if largest:
        text += "   (largest area)"
    ax.set_title(text, color="white", fontsize=9, pad=3)
    for lesion in lesions or ():
        corners = _display_corners(lesion, source_affine, disp_affine)
        if not corners[:, 2].min() - 0.5 <= k <= corners[:, 2].max() + 0.5:
            continue
        # Mask pixels of this slice inside the lesion's box: label at their top-right.
        lo = np.clip(np.floor(corners.min(axis=0)[:2]).astype(int), 0, None)
        hi = np.ceil(corners.max(axis=0)[:2]).astype(int) + 1
        pixels = np.argwhere(in_slice[lo[0] : hi[0], lo[1] : hi[1]]) + lo
        if len(pixels) == 0:
            continue
        ax.text(
            pixels[:, 0].max() + 0.02 * n_cols,
            pixels[:, 1].min(),
            str(lesion.index),
            color="#ffd24d",
            fontsize=11,
            fontweight="bold",
            ha="left",
            va="bottom",
            path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")],
        )


def _display_corners(
    lesion: Lesion, source_affine: npt.NDArray[np.float64], disp_affine: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Map the lesion's bounding-box corners to display voxel indices, shape ``(8, 3)``."""
    (i0, j0, k0), (i1, j1, k1) = lesion.bbox_voxel
    corners = np.array([[i, j, kk] for i in (i0, i1) for j in (j0, j1) for kk in (k0, k1)])
    pts = voxel_to_patient(ras_to_lps(source_affine), corners)
    return patient_to_voxel(ras_to_lps(disp_affine), pts)


def _lesion_summary(lesions: Sequence[Lesion]) -> str:
    lines = [
        f"{les.index}: {les.volume_ml:.1f} mL, {les.diameter_axial_mm:.0f} mm axial, "
        f"{les.diameter_3d_mm:.0f} mm 3D"
        for les in lesions[:3]
    ]
    if len(lesions) > 3:
        lines.append(f"+{len(lesions) - 3} more")
    return "\n".join(lines)
