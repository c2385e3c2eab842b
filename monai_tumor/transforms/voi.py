"""Volume of interest (VOI): a fixed physical box cut around a point from a full CT.

A VOI is what the ``lung_nodule_ct`` bundle segments: a small box around a lesion,
located by one point in patient coordinates (a viewer click, or the centroid of a prior
annotation). Cutting it (``CropVOIAroundPoint``) and pasting a predicted mask back onto
the source grid (:func:`paste_voi_mask`) are the two halves of the round trip; see
``docs/voi.md``.

Geometry
--------
* The point is in **LPS** millimetres (DICOM patient coordinates). The image is a MONAI
  ``MetaTensor`` shaped ``(C, I, J, K)`` (voxel axes [column, row, slice]) whose
  ``.affine`` maps voxels to **RAS** (what :func:`monai_tumor.ingest.reader.read_series`
  and ``LoadImage`` return). Conversions go through :mod:`monai_tumor.geometry`.
* The VOI grid is the source grid reoriented to RAS axis order (``Orientation``, a pure
  permutation/flip: no interpolation), resampled to ``VOISpec.spacing_mm`` (``Spacing``;
  for an oblique source the VOI keeps the source's direction cosines), then cut to exactly
  ``VOISpec.shape`` voxels whose centre is the voxel nearest to the point. Where the box
  leaves the source image it is padded with ``VOISpec.pad_value`` (air, -1000 HU).
* The VOI's ``.affine`` is its own voxel-to-RAS affine, so a mask predicted on the VOI grid
  can be put back anywhere from that affine alone; the meta entry ``"voi"`` also records
  the point, the source affine and the source shape.

Defaults come from the LIDC-IDRI nodule VOIs of the shared data (794 crops): median voxel
size 0.703 x 0.703 x 1.25 mm (the training spacing of the bundle) and 95th percentile
nodule extent 30 x 30 x 22 mm, hence a 33.75 x 33.75 x 20 mm box = 48 x 48 x 16 voxels,
the network's patch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    BorderPad,
    MapTransform,
    Orientation,
    Spacing,
    SpatialCrop,
    SpatialResample,
    Transform,
)

from monai_tumor.errors import UnsupportedInputError
from monai_tumor.geometry import (
    patient_to_voxel,
    ras_to_lps,
    spacing_from_affine,
    voxel_to_patient,
)

__all__ = [
    "DEFAULT_VOI_GROWTH",
    "DEFAULT_VOI_SPEC",
    "FIELDS_OF_VIEW_KEY",
    "VOI_META_KEY",
    "BorderContact",
    "CropVOIAroundPoint",
    "CropVOIAroundPointd",
    "FieldOfView",
    "VOIGrowth",
    "VOISpec",
    "border_contact",
    "paste_voi_mask",
    "segment_growing_voi",
    "voi_center_lps",
]

#: Key of the VOI record in ``MetaTensor.meta`` (point, source affine and shape).
VOI_META_KEY = "voi"
#: Key, in a segmented mask's meta, of the list of :meth:`FieldOfView.to_dict` (one per seed).
FIELDS_OF_VIEW_KEY = "fields_of_view"


@dataclass(frozen=True)
class VOISpec:
    """Physical size and sampling of a VOI.

    Attributes
    ----------
    size_mm
        Edge lengths of the box in mm along the VOI axes (RAS order: R-L, A-P, S-I).
    spacing_mm
        Voxel size of the VOI grid in mm (the network's training spacing).
    pad_value
        Value where the box leaves the source image (HU; -1000 = air).
    """

    size_mm: tuple[float, float, float] = (33.75, 33.75, 20.0)
    spacing_mm: tuple[float, float, float] = (0.703125, 0.703125, 1.25)
    pad_value: float = -1000.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """VOI shape in voxels: ``round(size_mm / spacing_mm)`` per axis (at least 1)."""
        return (
            max(1, round(self.size_mm[0] / self.spacing_mm[0])),
            max(1, round(self.size_mm[1] / self.spacing_mm[1])),
            max(1, round(self.size_mm[2] / self.spacing_mm[2])),
        )


#: The bundle ``lung_nodule_ct`` defaults (48 x 48 x 16 voxels at 0.703 x 0.703 x 1.25 mm).
DEFAULT_VOI_SPEC = VOISpec()


def _affine_np(img: MetaTensor) -> npt.NDArray[np.float64]:
    return np.asarray(torch.as_tensor(img.affine).detach().cpu().numpy(), dtype=np.float64)


class CropVOIAroundPoint(Transform):
    """Cut a fixed-size VOI centred on a point in LPS mm from a channel-first image.

    Parameters
    ----------
    spec
        Size, spacing and pad value of the VOI.
    mode
        Interpolation for ``Spacing``: ``"bilinear"`` for images, ``"nearest"`` for labels.

    Notes
    -----
    Steps (all MONAI transforms, each updating the affine): ``SpatialCrop`` of a generous
    box around the point on the source grid (so that later steps stay cheap on a full
    CT), ``Orientation("RAS")``, ``Spacing(spec.spacing_mm)``, ``BorderPad`` with
    ``spec.pad_value``, ``SpatialCrop`` of exactly ``spec.shape`` voxels.
    """

    def __init__(self, *, spec: VOISpec = DEFAULT_VOI_SPEC, mode: str = "bilinear") -> None:
        self.spec = spec
        self.mode = mode

    def __call__(  # type: ignore[override]  # MONAI's Transform takes one argument
        self, img: MetaTensor, point_lps: Sequence[float] | npt.ArrayLike
    ) -> MetaTensor:
        """Return the VOI.

        Parameters
        ----------
        img
            ``MetaTensor`` shaped ``(C, I, J, K)`` with a voxel-to-RAS ``.affine``.
        point_lps
            The VOI centre, ``(x, y, z)`` in LPS mm.

        Returns
        -------
        MetaTensor
            ``(C, *spec.shape)`` float32 on the VOI grid (RAS axis order, ``spec.spacing_mm``);
            ``meta["voi"]`` holds ``point_lps``, ``source_affine`` (RAS) and
            ``source_spatial_shape``.

        Raises
        ------
        UnsupportedInputError
            If ``img`` is not a 4D MetaTensor or the point is not 3 finite numbers.
        """
        if not isinstance(img, MetaTensor) or img.ndim != 4:
            raise UnsupportedInputError(
                f"CropVOIAroundPoint: expected a channel-first MetaTensor (C, I, J, K), found "
                f"{type(img).__name__} with shape {tuple(getattr(img, 'shape', ()))}; load the "
                "image with monai_tumor.ingest.reader.read_series or "
                "LoadImage(ensure_channel_first=True)"
            )
        point = np.asarray(point_lps, dtype=np.float64).reshape(-1)
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise UnsupportedInputError(
                f"CropVOIAroundPoint: the point must be 3 finite LPS coordinates in mm, found "
                f"{point_lps!r}"
            )
        source_affine = _affine_np(img)
        source_shape = [int(s) for s in img.shape[1:]]
        src = img.float() if not torch.is_floating_point(img) else img

        # 1. generous crop on the source grid: a cube of the box's diagonal around the point,
        #    safe for any orientation (oblique included), so the resampling works on a small box.
        center_src = patient_to_voxel(ras_to_lps(source_affine), point)
        diagonal = math.sqrt(sum(s * s for s in self.spec.size_mm))
        src_spacing = spacing_from_affine(source_affine)
        roi_size = [math.ceil(diagonal / sp) + 4 for sp in src_spacing]
        start = [math.floor(c) - r // 2 for c, r in zip(center_src, roi_size, strict=True)]
        end = [s + r for s, r in zip(start, roi_size, strict=True)]
        clipped_start = [min(max(s, 0), n) for s, n in zip(start, source_shape, strict=True)]
        clipped_end = [min(max(e, 0), n) for e, n in zip(end, source_shape, strict=True)]
        if any(e - s < 1 for s, e in zip(clipped_start, clipped_end, strict=True)):
            raise UnsupportedInputError(
                f"CropVOIAroundPoint: the point {point.tolist()} (LPS mm) is more than half a VOI "
                f"outside the image (voxel {np.round(center_src, 1).tolist()}, image shape "
                f"{source_shape}); check the point's coordinate system (LPS, mm) and series"
            )
        box = SpatialCrop(roi_start=clipped_start, roi_end=clipped_end)(src)

        # 2. RAS axis order (permutation/flip only), 3. training spacing.
        box = Orientation(axcodes="RAS", labels=None)(box)
        box = Spacing(pixdim=self.spec.spacing_mm, mode=self.mode, padding_mode="border")(box)
        if not isinstance(box, MetaTensor):  # pragma: no cover - MONAI returns MetaTensor
            raise TypeError("Spacing did not return a MetaTensor")

        # 4. pad with air, 5. exact crop centred on the voxel nearest to the point.
        shape = self.spec.shape
        center = patient_to_voxel(ras_to_lps(_affine_np(box)), point)
        lo = [round(c - (n - 1) / 2.0) for c, n in zip(center, shape, strict=True)]
        cur = [int(s) for s in box.shape[1:]]
        pad_lo = [max(0, -v) for v in lo]
        pad_hi = [max(0, v + n - c) for v, n, c in zip(lo, shape, cur, strict=True)]
        if any(pad_lo) or any(pad_hi):
            border = [p for pair in zip(pad_lo, pad_hi, strict=True) for p in pair]
            box = BorderPad(spatial_border=border, mode="constant", value=self.spec.pad_value)(box)
        roi_start = [v + p for v, p in zip(lo, pad_lo, strict=True)]
        roi_end = [s + n for s, n in zip(roi_start, shape, strict=True)]
        voi = SpatialCrop(roi_start=roi_start, roi_end=roi_end)(box)
        if not isinstance(voi, MetaTensor):  # pragma: no cover
            raise TypeError("SpatialCrop did not return a MetaTensor")
        voi.meta[VOI_META_KEY] = {
            "point_lps": point.tolist(),
            "source_affine": source_affine.tolist(),
            "source_spatial_shape": source_shape,
            "spacing_mm": list(self.spec.spacing_mm),
            "size_mm": list(self.spec.size_mm),
        }
        return voi


class CropVOIAroundPointd(MapTransform):
    """Dictionary wrapper of :class:`CropVOIAroundPoint`.

    Parameters
    ----------
    keys
        Images to crop; all must share the source grid.
    point_key
        Key of the VOI centre ``(x, y, z)`` in LPS mm.
    spec
        Size, spacing and pad value of the VOI.
    mode
        Interpolation per key (one value or one per key), e.g. ``("bilinear", "nearest")``.
    label_pad_value
        Pad value for keys interpolated with ``"nearest"`` (labels: 0, not air).
    allow_missing_keys
        Skip keys that are absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        point_key: str = "point",
        spec: VOISpec = DEFAULT_VOI_SPEC,
        mode: str | Sequence[str] = "bilinear",
        label_pad_value: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.point_key = point_key
        modes = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        if len(modes) != len(self.keys):
            raise ValueError(f"CropVOIAroundPointd: {len(self.keys)} keys but {len(modes)} modes")
        self.croppers = [
            CropVOIAroundPoint(
                spec=spec
                if m != "nearest"
                else VOISpec(spec.size_mm, spec.spacing_mm, label_pad_value),
                mode=m,
            )
            for m in modes
        ]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Crop every key around ``data[point_key]``."""
        d = dict(data)
        point = d[self.point_key]
        for key, cropper in self.key_iterator(d, self.croppers):
            d[key] = cropper(d[key], point)
        return d


def _on_reference(mask: torch.Tensor, reference: MetaTensor) -> MetaTensor:
    result = MetaTensor(mask, meta={k: v for k, v in reference.meta.items() if k != "affine"})
    result.affine = torch.as_tensor(reference.affine).clone()
    return result


def voi_center_lps(voi: MetaTensor) -> npt.NDArray[np.float64]:
    """Return the LPS position (mm) of the VOI's centre voxel ``(shape - 1) / 2``.

    Parameters
    ----------
    voi
        A VOI MetaTensor ``(C, X, Y, Z)`` with its voxel-to-RAS affine.

    Returns
    -------
    numpy.ndarray
        Shape ``(3,)``, LPS mm.
    """
    centre = (np.asarray(voi.shape[1:], dtype=np.float64) - 1.0) / 2.0
    return voxel_to_patient(ras_to_lps(_affine_np(voi)), centre)


def paste_voi_mask(
    mask_voi: torch.Tensor | npt.ArrayLike,
    voi_meta: Mapping[str, Any] | MetaTensor,
    full_reference: MetaTensor,
    *,
    threshold: float = 0.5,
) -> MetaTensor:
    """Put a mask predicted on a VOI grid back onto the full source grid.

    The mask is resampled (``SpatialResample``, trilinear, then ``>= threshold``) onto the
    sub-box of the reference grid that the VOI covers, and written into a zero volume;
    voxels outside the VOI are 0.

    Parameters
    ----------
    mask_voi
        ``(X, Y, Z)`` or ``(1, X, Y, Z)`` mask (0/1 or probabilities) on the VOI grid.
    voi_meta
        The VOI's ``MetaTensor`` or its ``.meta`` dict; its ``"affine"`` (voxel-to-RAS) locates
        the mask.
    full_reference
        The full image (``(C, I, J, K)`` MetaTensor, voxel-to-RAS ``.affine``) whose grid the
        result is on.
    threshold
        Probability at or above which a voxel is foreground after interpolation.

    Returns
    -------
    MetaTensor
        ``(1, I, J, K)`` uint8 0/1 mask with ``full_reference``'s affine and meta.

    Raises
    ------
    UnsupportedInputError
        If the VOI affine is missing or the mask does not match the VOI shape it came with.
    """
    meta = voi_meta.meta if isinstance(voi_meta, MetaTensor) else voi_meta
    if "affine" not in meta:
        raise UnsupportedInputError(
            "paste_voi_mask: voi_meta has no 'affine'; pass the VOI MetaTensor (or its .meta) "
            "returned by CropVOIAroundPoint"
        )
    voi_affine = np.asarray(torch.as_tensor(meta["affine"]).cpu().numpy(), dtype=np.float64)
    mask = torch.as_tensor(np.asarray(mask_voi) if not torch.is_tensor(mask_voi) else mask_voi)
    if isinstance(mask, MetaTensor):
        mask = mask.as_tensor()
    mask = mask.detach().cpu().float()
    if mask.ndim == 3:
        mask = mask[None]
    if mask.ndim != 4 or mask.shape[0] != 1:
        raise UnsupportedInputError(
            f"paste_voi_mask: expected a (X, Y, Z) or (1, X, Y, Z) mask, found {tuple(mask.shape)}"
        )
    full_affine = _affine_np(full_reference)
    full_shape = [int(s) for s in full_reference.shape[1:]]
    out = torch.zeros((1, *full_shape), dtype=torch.uint8)

    # VOI corners (voxel-centre extent +- 0.5 voxel) -> reference voxel indices: the sub-box.
    vshape = np.asarray(mask.shape[1:], dtype=np.float64)
    corners = np.array(
        [
            [a, b, c]
            for a in (-0.5, vshape[0] - 0.5)
            for b in (-0.5, vshape[1] - 0.5)
            for c in (-0.5, vshape[2] - 0.5)
        ]
    )
    in_full = patient_to_voxel(full_affine, voxel_to_patient(voi_affine, corners))
    lo = np.clip(np.floor(in_full.min(axis=0)).astype(int), 0, full_shape)
    hi = np.clip(np.ceil(in_full.max(axis=0)).astype(int) + 1, 0, full_shape)
    if np.any(hi - lo < 1):
        return _on_reference(out, full_reference)
    shift = np.eye(4)
    shift[:3, 3] = lo
    sub_affine = torch.as_tensor(full_affine @ shift, dtype=torch.float64)
    src = MetaTensor(mask, affine=torch.as_tensor(voi_affine, dtype=torch.float64))
    sub = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=np.float64)(
        src, dst_affine=sub_affine, spatial_size=[int(v) for v in hi - lo]
    )
    sub_mask = (torch.as_tensor(sub) >= threshold).to(torch.uint8)
    out[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = sub_mask
    return _on_reference(out, full_reference)


@dataclass(frozen=True)
class VOIGrowth:
    """How the VOI grows while the predicted lesion reaches its border.

    Attributes
    ----------
    max_size_mm
        Largest box, mm per VOI axis (RAS order). A lesion still reaching the border of a box
        this large is reported as truncated.
    factor
        Each step multiplies the edge length of every axis whose border the mask reaches by
        this factor (capped at ``max_size_mm``).
    coarse
        Coarse to fine: a grown box keeps the first box's voxel count (its spacing grows
        with it) and is shown to the network as if it were at the first box's spacing, so
        a large lesion looks like a nodule and every run costs one patch. ``False``: the
        grown box keeps the first box's spacing (more voxels, sliding window).
    """

    max_size_mm: tuple[float, float, float] = (128.0, 128.0, 128.0)
    factor: float = 1.5
    coarse: bool = False

    def __post_init__(self) -> None:
        if not self.factor > 1.0 or not all(math.isfinite(v) and v > 0 for v in self.max_size_mm):
            raise UnsupportedInputError(
                f"VOIGrowth: factor must be > 1 and max_size_mm positive, found factor "
                f"{self.factor!r}, max_size_mm {self.max_size_mm!r}"
            )


#: The bundle ``lung_nodule_ct`` defaults: boxes up to 128 mm, 1.5x per step.
DEFAULT_VOI_GROWTH = VOIGrowth()


@dataclass(frozen=True)
class BorderContact:
    """Where a mask predicted on a VOI touches the VOI's faces.

    Attributes
    ----------
    inner_axes
        VOI axes (0, 1, 2) with a touched face that lies inside the source image: a larger
        box would show more of the lesion.
    image_edge
        The mask touches a face beyond which there is no image (the scan's own field of
        view ends there): no box can show more.
    """

    inner_axes: tuple[int, ...]
    image_edge: bool


def border_contact(mask_voi: torch.Tensor | npt.ArrayLike, voi: MetaTensor) -> BorderContact:
    """Find the VOI faces a predicted mask touches, and whether image lies beyond each.

    Parameters
    ----------
    mask_voi
        ``(X, Y, Z)`` or ``(1, X, Y, Z)`` 0/1 mask on the VOI grid.
    voi
        The VOI from :class:`CropVOIAroundPoint` (its affine and ``meta["voi"]``).

    Returns
    -------
    BorderContact
    """
    mask = np.asarray(torch.as_tensor(mask_voi).detach().cpu().numpy()) > 0
    if mask.ndim == 4:
        mask = mask[0]
    record = voi.meta[VOI_META_KEY]
    to_source = np.linalg.inv(np.asarray(record["source_affine"], dtype=np.float64)) @ _affine_np(
        voi
    )
    source_shape = np.asarray(record["source_spatial_shape"], dtype=np.float64)
    inner: list[int] = []
    image_edge = False
    for axis in range(3):
        for face, step in ((0, -1), (mask.shape[axis] - 1, 1)):
            touched = np.argwhere(np.take(mask, face, axis=axis))
            if touched.size == 0:
                continue
            ijk = np.insert(touched.astype(np.float64), axis, face, axis=1)
            ijk[:, axis] += step  # the voxel just beyond the face
            src = (to_source[:3, :3] @ ijk.T).T + to_source[:3, 3]
            inside = np.all((src >= -0.5) & (src <= source_shape - 0.5), axis=1)
            if np.any(inside) and axis not in inner:
                inner.append(axis)
            if not np.all(inside):
                image_edge = True
    return BorderContact(inner_axes=tuple(inner), image_edge=image_edge)


@dataclass(frozen=True)
class FieldOfView:
    """The VOI a seed's lesion was finally segmented in, and whether it was cut off.

    Attributes
    ----------
    size_mm
        Edge lengths of the last box, mm (RAS order).
    runs
        Network runs (1: the lesion was inside the first box).
    truncated
        The lesion still reaches the border of the last box (at the growth limit) or the
        edge of the image: its mask and volume are incomplete.
    reason
        Why it is truncated (``""`` if not).
    voxel
        One voxel ``[i, j, k]`` of the lesion on the full grid (``None``: empty mask), to
        tell which connected lesion the record belongs to.
    """

    size_mm: tuple[float, float, float]
    runs: int
    truncated: bool
    reason: str = ""
    voxel: tuple[int, int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "size_mm": [round(v, 3) for v in self.size_mm],
            "runs": self.runs,
            "truncated": self.truncated,
            "reason": self.reason,
            "voxel": None if self.voxel is None else list(self.voxel),
        }


def _nearest_voxel(mask: torch.Tensor, target: npt.NDArray[np.float64]) -> tuple[int, int, int]:
    idx = torch.nonzero(mask[0]).numpy().astype(np.float64)
    best = idx[int(np.argmin(((idx - target) ** 2).sum(axis=1)))]
    return (int(best[0]), int(best[1]), int(best[2]))


def _mask_points_lps(mask_voi: torch.Tensor, voi: MetaTensor) -> npt.NDArray[np.float64]:
    """Voxel centres (LPS mm, ``(N, 3)``) of a 0/1 mask on a VOI grid."""
    mask = torch.as_tensor(mask_voi).detach().cpu()
    if mask.ndim == 4:
        mask = mask[0]
    idx = torch.nonzero(mask > 0).to(torch.float64).numpy()
    return voxel_to_patient(ras_to_lps(_affine_np(voi)), idx.reshape(-1, 3))


def _as_network_grid(voi: MetaTensor, first: VOISpec) -> MetaTensor:
    """Relabel a VOI's voxels as if they were at ``first``'s spacing.

    Coarse-to-fine growth: the bundle resamples its input to its training spacing; a box
    resampled to a coarser grid is handed over as if it were at that spacing, so the
    network sees the whole box in one patch. The mask comes back on the same voxels.
    """
    affine = torch.as_tensor(voi.affine, dtype=torch.float64).clone()
    spacing = spacing_from_affine(affine.numpy())
    scale = torch.as_tensor(np.asarray(first.spacing_mm) / spacing, dtype=torch.float64)
    affine[:3, :3] = affine[:3, :3] * scale[None, :]
    meta = {k: v for k, v in voi.meta.items() if k != "affine"}
    return MetaTensor(voi.as_tensor(), affine=affine, meta=meta)


def segment_growing_voi(
    image: MetaTensor,
    point_lps: Sequence[float] | npt.ArrayLike,
    run: Callable[[MetaTensor], torch.Tensor],
    *,
    spec: VOISpec = DEFAULT_VOI_SPEC,
    growth: VOIGrowth | None = DEFAULT_VOI_GROWTH,
    recentre: int = 0,
) -> tuple[MetaTensor, FieldOfView]:
    """Segment the lesion at a point in a VOI that grows until the lesion is inside.

    The VOI is cut around the point (:class:`CropVOIAroundPoint`) and segmented by ``run``.
    While the mask touches a face of the box beyond which there is image, the box's edges
    along those axes grow by ``growth.factor`` (same spacing; the bundle's sliding window
    covers any box) and the segmentation is redone, up to ``growth.max_size_mm``. A mask
    that does not touch the border is returned from the first run unchanged (with
    ``recentre=0``).

    With ``recentre > 0`` the result no longer depends on where inside the lesion the point
    is (a click anywhere in it): while the centre of mass of the predicted mask lies one
    VOI voxel or more from the box's centre, the box (same size) is moved there and the
    lesion segmented again, up to ``recentre`` moves; growth follows once the box is
    centred. A moved box's mask must still hold the seed (within two VOI voxels): if not,
    the first box's result is returned, with its border contact.

    Parameters
    ----------
    image
        Channel-first ``(C, I, J, K)`` MetaTensor, voxel-to-RAS affine.
    point_lps
        The seed, LPS mm.
    run
        Segments one VOI: returns a ``(1, X, Y, Z)`` 0/1 mask on the VOI's grid.
    spec
        The first box.
    growth
        Growth limits; ``None``: one box, no growth (contact is still reported).
    recentre
        Largest number of re-centring passes (0: the box stays on the seed).

    Returns
    -------
    tuple of MetaTensor and FieldOfView
        The ``(1, I, J, K)`` uint8 mask on ``image``'s grid and the final box, with the
        truncation flag.
    """
    seed = np.asarray(point_lps, dtype=np.float64).reshape(3)
    point = seed
    current = spec
    runs = moves = 0
    voxel_mm = float(min(spec.spacing_mm))
    first: tuple[torch.Tensor, MetaTensor, VOISpec, BorderContact] | None = None
    while True:
        voi = CropVOIAroundPoint(spec=current, mode="bilinear")(image, point)
        coarse = current.spacing_mm != spec.spacing_mm
        mask_voi = run(_as_network_grid(voi, spec) if coarse else voi)
        runs += 1
        contact = border_contact(mask_voi, voi)
        if first is None:
            first = (mask_voi, voi, current, contact)
        if moves < recentre:
            # Re-centring comes before growth: a box grown around an off-centre seed
            # shows the network more of what is not the lesion.
            inside = _mask_points_lps(mask_voi, voi)
            centre = inside.mean(axis=0) if len(inside) else None
            if centre is not None and float(np.linalg.norm(centre - point)) >= voxel_mm:
                point = centre
                moves += 1
                continue
        limit = growth.max_size_mm if growth is not None else current.size_mm
        grow = [a for a in contact.inner_axes if current.size_mm[a] < limit[a] - 1e-6]
        if not grow or growth is None:
            break
        size = list(current.size_mm)
        for axis in grow:
            size[axis] = min(size[axis] * growth.factor, limit[axis])
        current = replace(current, size_mm=(size[0], size[1], size[2]))
        if growth.coarse:
            spacing = [spec.spacing_mm[a] * size[a] / spec.size_mm[a] for a in range(3)]
            current = replace(current, spacing_mm=(spacing[0], spacing[1], spacing[2]))
    if moves and first is not None:
        # A click inside the lesion must stay inside its mask. If the moved box's mask
        # left the seed (e.g. a sub-blob inside a tumour larger than the box, which then
        # touches no face and would pass as complete), the first box's result stands,
        # with its own border contact.
        tolerance = 2.0 * float(max(spec.spacing_mm))
        inside = _mask_points_lps(mask_voi, voi)
        distance = np.sqrt(((inside - seed) ** 2).sum(axis=1)).min() if len(inside) else math.inf
        if distance > tolerance:
            mask_voi, voi, current, contact = first
    pasted = paste_voi_mask(mask_voi, voi, image)
    reasons = []
    if contact.inner_axes:
        size_text = " x ".join(f"{v:.0f}" for v in current.size_mm)
        reasons.append(f"reaches the border of the largest volume of interest ({size_text} mm)")
    full = pasted.as_tensor()[0]
    at_image_edge = any(
        bool(full.select(axis, index).any())
        for axis in range(3)
        for index in (0, full.shape[axis] - 1)
    )
    if contact.image_edge or at_image_edge:
        reasons.append("reaches the edge of the image")
    voxel = None
    if bool(pasted.any()):
        target = patient_to_voxel(ras_to_lps(_affine_np(image)), seed)
        voxel = _nearest_voxel(pasted.as_tensor(), np.asarray(target, dtype=np.float64))
    fov = FieldOfView(
        size_mm=current.size_mm,
        runs=runs,
        truncated=bool(reasons),
        reason="; ".join(reasons),
        voxel=voxel,
    )
    return pasted, fov
