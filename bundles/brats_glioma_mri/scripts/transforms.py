"""Label conversions and background handling for the brats_glioma_mri bundle.

Why not ``monai.transforms.ConvertToMultiChannelBasedOnBratsClassesd``: it implements the
BraTS 2018+ convention (labels 1, 2, 4) and drops label 3 (non-enhancing tumour, used in
BraTS 2012-2016) from both TC and WT.  The BraTS 2013 references used here contain label 3, so
the conversion below puts it into TC and WT, as the BraTS 2013 challenge defined the regions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform, Spacingd

__all__ = [
    "TTA_AGREEMENT_KEY",
    "BrainZScored",
    "BratsLabelsToTcWtEtd",
    "FlipTTASigmoidInferer",
    "KeepLargestComponentPerChanneld",
    "MetaSafeSpacingd",
    "SmallEnhancingToCored",
    "TcWtEtToBratsLabelsd",
    "ZeroBackgroundd",
    "as_bool",
    "brain_mask",
    "brain_zscore",
    "brats_labels_to_tc_wt_et",
    "case_name_formatter",
    "dice",
    "largest_component",
    "tc_wt_et_to_brats_labels",
]

#: BraTS label values per region (2012-2016 convention; label 3 absent from 2017+ data is harmless).
TC_LABELS = (1, 3, 4)
WT_LABELS = (1, 2, 3, 4)
ET_LABELS = (4,)


def brats_labels_to_tc_wt_et(label: torch.Tensor) -> torch.Tensor:
    """Convert a BraTS label map to three binary channels TC, WT, ET.

    Parameters
    ----------
    label
        Shape (1, X, Y, Z) or (X, Y, Z); values 0 background, 1 necrosis, 2 edema,
        3 non-enhancing tumour, 4 enhancing tumour (floats are rounded to integers).

    Returns
    -------
    torch.Tensor
        Shape (3, X, Y, Z), float32 in {0, 1}: channel 0 TC (1, 3, 4), 1 WT (1-4), 2 ET (4).
    """
    lab = torch.as_tensor(label)
    if lab.ndim == 4:
        if lab.shape[0] != 1:
            raise ValueError(f"expected a single-channel label map, got shape {tuple(lab.shape)}")
        lab = lab[0]
    lab = torch.round(lab).to(torch.int64)
    channels = [torch.isin(lab, torch.tensor(v)) for v in (TC_LABELS, WT_LABELS, ET_LABELS)]
    return torch.stack(channels).to(torch.float32)


def tc_wt_et_to_brats_labels(pred: torch.Tensor) -> torch.Tensor:
    """Convert binary TC, WT, ET channels to one BraTS label map (0, 1, 2, 4).

    Nested painting enforces ET within TC within WT: WT -> 2, then TC -> 1, then ET -> 4,
    so ``label == 4`` gives ET, ``label in {1, 4}`` gives TC and ``label > 0`` gives WT.

    Parameters
    ----------
    pred
        Shape (3, X, Y, Z), channels TC, WT, ET, values in {0, 1}.

    Returns
    -------
    torch.Tensor
        Shape (1, X, Y, Z), uint8.
    """
    p = _plain(pred) > 0.5
    if p.ndim != 4 or p.shape[0] != 3:
        raise ValueError(f"expected (3, X, Y, Z) TC/WT/ET channels, got shape {tuple(p.shape)}")
    out = torch.zeros(p.shape[1:], dtype=torch.uint8)
    out[p[1]] = 2
    out[p[0]] = 1
    out[p[2]] = 4
    return out[None]


def _plain(x: Any) -> torch.Tensor:
    """The tensor without MONAI's metadata (operations on a MetaTensor copy its meta)."""
    t = torch.as_tensor(x)
    return t.as_tensor() if isinstance(t, MetaTensor) else t


def _bounding_box(mask: torch.Tensor) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel of ``mask``; None if empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = torch.nonzero(mask.any(dim=others) if others else mask)[:, 0]
        if hits.numel() == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _with_meta(data: torch.Tensor, like: Any) -> torch.Tensor:
    if isinstance(like, MetaTensor):
        # the affine travels inside meta; passing affine= as well makes MONAI warn
        return MetaTensor(data, meta=like.meta, applied_operations=like.applied_operations)
    return data


class BratsLabelsToTcWtEtd(MapTransform):
    """Dictionary wrapper of :func:`brats_labels_to_tc_wt_et` (keeps the MetaTensor metadata)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _with_meta(brats_labels_to_tc_wt_et(d[key]), d[key])
        return d


class TcWtEtToBratsLabelsd(MapTransform):
    """Dictionary wrapper of :func:`tc_wt_et_to_brats_labels` (keeps the MetaTensor metadata)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _with_meta(tc_wt_et_to_brats_labels(d[key]), d[key])
        return d


class ZeroBackgroundd(MapTransform):
    """Set the background of skull-stripped MRI channels to 0.

    The BraTS inputs here are z-scored inside the brain, so the background is a constant
    negative value (each channel's minimum); raw skull-stripped MRI has 0 there.  A voxel is
    brain if any channel exceeds that channel's minimum; every channel is set to 0 elsewhere,
    after which ``CropForegroundd(select_fn=x != 0)`` and ``NormalizeIntensityd(nonzero=True)``
    see the brain only.  Hand-written because no MONAI transform masks by a constant background.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key] * brain_mask(d[key])
        return d


def brain_mask(img: torch.Tensor) -> torch.Tensor:
    """Brain voxels of skull-stripped MRI channels: any channel above its own minimum.

    Raw skull-stripped volumes have 0 outside the brain, volumes z-scored by their site a
    constant negative value; both are each channel's minimum, so the mask is the same.

    Parameters
    ----------
    img
        Shape (C, X, Y, Z).

    Returns
    -------
    torch.Tensor
        Bool, shape (1, X, Y, Z).
    """
    t = _plain(img)
    flat = t.reshape(t.shape[0], -1)
    mins = flat.min(dim=1).values.reshape(-1, *([1] * (t.ndim - 1)))
    return (t > mins).any(dim=0, keepdim=True)


def brain_zscore(
    img: torch.Tensor, *, lower: float = 0.1, upper: float = 99.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel z-score inside the brain, after clipping to brain percentiles.

    Each channel is clipped to its [``lower``, ``upper``] percentiles inside
    :func:`brain_mask`, then z-scored with the mean and standard deviation of the clipped
    brain voxels; voxels outside the brain are 0. Percentiles, mean and standard deviation all
    follow any increasing linear map of the intensities, so a raw volume and the same volume
    z-scored (or rescaled) by its site give the same result up to float rounding; the clip
    keeps a few saturated voxels (some scanners store 32767) from flattening the brain.
    Computed in float64. Hand-written because MONAI's ``NormalizeIntensity(nonzero=True)``
    treats every 0 as background (a z-scored brain has zeros inside it) and does not clip.

    Parameters
    ----------
    img
        Shape (C, X, Y, Z), any real dtype.
    lower, upper
        Clipping percentiles (0-100) computed over the brain voxels of each channel.

    Returns
    -------
    tuple of torch.Tensor
        The normalised image (float32, same shape) and the brain mask (bool, (1, X, Y, Z)).
    """
    t = _plain(img)
    mask = brain_mask(t)  # the same mask in the input's dtype as in float64
    # float32 from the start: every value is computed in float64 and rounded once, as a
    # float64 volume converted at the end would be, without the whole-volume float64 copy
    out = torch.zeros(t.shape, dtype=torch.float32)
    box = _bounding_box(mask[0])
    if box is None:
        return out, mask
    # Only the brain's bounding box is normalised: outside it every voxel is 0, and inside
    # it the brain voxels come in the same (C) order as in the whole volume, so every
    # statistic is computed on the same values in the same order.
    inner = t[(slice(None), *box)]
    out_box = out[(slice(None), *box)]
    m = mask[0][box]
    q = torch.tensor([lower / 100.0, upper / 100.0], dtype=torch.float64)
    for c in range(t.shape[0]):
        vals = inner[c][m].to(torch.float64)
        lo, hi = (float(v) for v in _quantiles(vals, q))
        clipped = vals.clamp(lo, hi)
        std = float(clipped.std())
        out_box[c][m] = ((clipped - clipped.mean()) / (std if std > 0 else 1.0)).to(torch.float32)
    return out, mask


def _quantiles(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # torch.quantile refuses inputs above 2**24 elements; its "linear" rule on order
    # statistics, all found by one numpy partition (linear time; exactly the sorted values;
    # torch has no multi-k selection, and one kthvalue per order statistic costs 4x)
    n = values.numel()
    pos = q * (n - 1)
    lo = torch.floor(pos).long()
    hi = torch.clamp(lo + 1, max=n - 1)
    frac = pos - lo.to(pos.dtype)
    flat = values.detach().cpu().reshape(-1).numpy()
    ks = sorted({int(k) for k in torch.cat([lo, hi])})
    part = torch.from_numpy(np.partition(flat, ks)).to(values.device)
    v_lo, v_hi = part[lo], part[hi]
    return v_lo + (v_hi - v_lo) * frac


class BrainZScored(MapTransform):
    """Dictionary wrapper of :func:`brain_zscore` (same in training and inference).

    Keeps the MetaTensor metadata; the background becomes 0, so a following
    ``CropForegroundd(select_fn=x != 0)`` crops to the brain.
    """

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.1,
        upper: float = 99.9,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lower = float(lower)
        self.upper = float(upper)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            normed, _ = brain_zscore(d[key], lower=self.lower, upper=self.upper)
            d[key] = _with_meta(normed, d[key])
        return d


def case_name_formatter(metadict: dict[str, Any], saver: Any) -> dict[str, Any]:
    """Name the output after the case folder (``IN/<case>/Flair.nii.gz`` -> ``<case>``).

    Used as ``SaveImaged(output_name_formatter=...)`` with ``output_postfix=""`` and
    ``separate_folder=False`` so that predictions are written as ``OUT/<case>.nii.gz``.
    """
    name = metadict.get("filename_or_obj", "case")
    if isinstance(name, Sequence) and not isinstance(name, str):
        name = name[0]
    return {"subject": Path(str(name)).parent.name, "idx": None}


def largest_component(mask: torch.Tensor, *, check_every: int = 8) -> torch.Tensor:
    """Keep the largest 26-connected component of a 3D binary mask.

    MONAI's ``KeepLargestConnectedComponent`` needs scikit-image (or cuCIM), and the bundle
    may depend only on monai, torch, numpy and nibabel. So: when scipy is importable (the
    monai-tumor environment), ``scipy.ndimage.label`` finds the components (fast); otherwise
    a torch fallback does: every foreground voxel starts with a unique id and 3x3x3
    max-pooling restricted to the mask propagates the largest id through each component
    until nothing changes (as many passes as the longest geodesic path, so slow on large
    convoluted masks). Both run on the mask's bounding box, use the same connectivity and
    break ties between equal-sized components the same way (the component holding the
    last voxel in C order loses to the one whose last voxel comes first), so they return
    identical masks.

    Parameters
    ----------
    mask
        Shape (X, Y, Z), bool or {0, 1}.
    check_every
        Propagation passes between two convergence checks (torch fallback).

    Returns
    -------
    torch.Tensor
        Bool mask of the same shape holding only the largest component (empty if ``mask`` is).
    """
    m = torch.as_tensor(mask) > 0
    out = torch.zeros_like(m)
    nz = torch.nonzero(m)
    if nz.shape[0] == 0:
        return out
    lo = nz.min(dim=0).values
    hi = nz.max(dim=0).values + 1
    box = m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    try:
        from scipy import ndimage
    except ImportError:
        ndimage = None
    if ndimage is not None:
        keep_box = torch.from_numpy(_largest_scipy(box.cpu().numpy(), ndimage)).to(m.device)
    else:
        keep_box = _largest_torch(box, check_every)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = keep_box
    return out


def _largest_scipy(box: np.ndarray, ndimage: Any) -> np.ndarray:
    labels, count = ndimage.label(box, structure=np.ones((3, 3, 3), dtype=bool))
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1)[1:]
    tied = np.flatnonzero(sizes == sizes.max()) + 1
    if tied.size == 1:
        return labels == tied[0]
    fg = np.flatnonzero(flat)
    last = np.zeros(count + 1, dtype=np.int64)
    np.maximum.at(last, flat[fg], fg)
    return labels == tied[np.argmin(last[tied])]


def _largest_torch(box: torch.Tensor, check_every: int) -> torch.Tensor:
    fg = box.to(torch.float64)[None, None]
    ids = torch.arange(1, box.numel() + 1, dtype=torch.float64).reshape(fg.shape) * fg
    while True:
        previous = ids
        for _ in range(check_every):
            ids = torch.nn.functional.max_pool3d(ids, kernel_size=3, stride=1, padding=1) * fg
        if torch.equal(ids, previous):
            break
    values, counts = torch.unique(ids[fg > 0], return_counts=True)
    keep = values[torch.argmax(counts)]
    return ids[0, 0] == keep


class KeepLargestComponentPerChanneld(MapTransform):
    """Keep the largest connected component of each channel of a (C, X, Y, Z) binary mask.

    Equivalent to ``KeepLargestConnectedComponentd(applied_labels=channels, is_onehot=True,
    independent=True)`` with full (26-) connectivity, without its scikit-image dependency.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: Sequence[int] = (0, 1, 2),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = tuple(int(c) for c in channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            result = _plain(img).clone()
            for c in self.channels:
                result[c] = largest_component(result[c]).to(result.dtype)
            d[key] = _with_meta(result, img)
        return d


class SmallEnhancingToCored(MapTransform):
    """Relabel a tiny enhancing-tumour prediction as tumour core (nnU-Net's BraTS rule).

    On binary TC/WT/ET channels: if the ET channel holds fewer than ``min_voxels`` voxels in
    all, it is cleared; TC keeps those voxels, so they are written as label 1 instead of 4.
    A case without enhancing tumour (common in low-grade glioma) then gets no stray ET.
    ``min_voxels`` 0 disables the rule.
    """

    def __init__(
        self, keys: KeysCollection, min_voxels: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_voxels = int(min_voxels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.min_voxels <= 0:  # the rule is off: nothing to count
                continue
            img = d[key]
            count = int((_plain(img)[2] > 0.5).sum())
            if 0 < count < self.min_voxels:
                result = torch.as_tensor(img).clone()
                result[0] = torch.maximum(result[0], result[2])
                result[2] = 0
                d[key] = _with_meta(result, img)
        return d


def as_bool(value: Any) -> bool:
    """Read a config switch (``monai.bundle run --tta false`` passes the string "false")."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"expected a boolean switch (true/false), found {value!r}")
    return bool(value)


#: Output meta key under which :class:`FlipTTASigmoidInferer` records how its passes agree.
TTA_AGREEMENT_KEY = "tta_agreement"


def dice(a: Any, b: Any) -> float:
    """Dice of two binary masks (torch or numpy); 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


class FlipTTASigmoidInferer(Inferer):
    """Mirroring test-time augmentation for sigmoid outputs (nnU-Net style).

    Runs ``inferer`` on the input and on its flips along every subset of ``spatial_axes``,
    averages the sigmoid probabilities and returns their logit, so the config's
    ``Activationsd(sigmoid=True)`` still yields the mean probability. Disabled, it is exactly
    ``inferer``.

    Enabled, it also measures how far the passes agree: each pass's TC, WT and ET masks
    (probability >= 0.5, first sample of the batch) are compared with the masks of the mean
    (Dice; 1 when both are empty) and the smallest Dice per region is recorded in the output's
    meta under ``"tta_agreement"`` (``{"passes": n, "TC": d, "WT": d, "ET": d}``), where the
    monai-tumor pipeline reads it for its plausibility review.
    """

    def __init__(
        self, inferer: Inferer, spatial_axes: Sequence[int] = (0, 1, 2), enabled: bool | str = True
    ) -> None:
        super().__init__()
        self.inferer = inferer
        self.spatial_axes = tuple(int(a) for a in spatial_axes)
        self.enabled = as_bool(enabled)

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        base = self.inferer(inputs, network, *args, **kwargs)
        if not self.enabled:
            return base
        subsets: list[tuple[int, ...]] = [()]
        for a in self.spatial_axes:
            subsets += [(*s, a) for s in subsets]
        first = torch.sigmoid(torch.as_tensor(base))
        total = first.clone()
        masks = [first[0] >= 0.5]
        for s in subsets[1:]:
            dims = [2 + a for a in s]
            out = self.inferer(torch.flip(inputs, dims), network, *args, **kwargs)
            prob = torch.flip(torch.sigmoid(torch.as_tensor(out)), dims)
            masks.append(prob[0] >= 0.5)
            total = total + prob
        mean = (total / len(subsets)).clamp(1e-6, 1 - 1e-6)
        consensus = mean[0] >= 0.5
        agreement: dict[str, float | int] = {"passes": len(subsets)}
        for c, region in enumerate(("TC", "WT", "ET")[: consensus.shape[0]]):
            agreement[region] = round(min(dice(m[c], consensus[c]) for m in masks), 4)
        logit = torch.log(mean) - torch.log1p(-mean)
        meta = dict(base.meta) if isinstance(base, MetaTensor) else {}
        meta[TTA_AGREEMENT_KEY] = agreement
        return MetaTensor(logit, meta=meta)


class MetaSafeSpacingd(Spacingd):
    """``Spacingd`` that leaves plain (non-dictionary) ``<key>_*`` entries of the data alone.

    MONAI 1.6's ``Spacingd.__call__`` treats every data key that starts with ``"<key>_"`` as
    a metadata dictionary and calls ``.update()`` on it when the image was read from NIfTI.
    MONAI Label (0.8.x) puts the string ``image_path`` into the data dictionary of every
    inference request, so the stock transform fails there with ``'str' object has no
    attribute 'update'`` (MONAI 1.5.2 only touched ``<key>_<meta_key_postfix>``). This
    wrapper sets such entries aside for the call and puts them back unchanged; metadata
    dictionaries (``image_meta_dict``) are still updated as MONAI intends. The inverse is
    ``Spacingd``'s own, so ``Invertd`` undoes it as before.
    """

    def __call__(
        self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None
    ) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        aside = {
            k: d.pop(k)
            for k in list(d)
            if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], Mapping)
        }
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out
