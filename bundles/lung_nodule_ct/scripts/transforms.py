"""Post-processing and test-time augmentation used by the lung_nodule_ct configs.

Depends only on monai, torch and numpy
(bundle rule: nothing from the project package, no scikit-image).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform, Randomizable, Spacingd, Zoom

__all__ = [
    "FlipTTAInferer",
    "KeepLargestComponentd",
    "MetaSafeSpacingd",
    "RandLogZoomd",
    "as_bool",
    "largest_component",
]


def as_bool(value: Any) -> bool:
    """Read a config switch (`monai.bundle run --tta false` passes the string "false")."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"expected a boolean switch (true/false), found {value!r}")
    return bool(value)


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


class KeepLargestComponentd(MapTransform):
    """Keep the largest connected component of a (1, X, Y, Z) 0/1 mask (no-op if disabled)."""

    def __init__(
        self, keys: KeysCollection, enabled: bool | str = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enabled = as_bool(enabled)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            result = torch.as_tensor(img).clone()
            result[0] = largest_component(result[0]).to(result.dtype)
            if isinstance(img, MetaTensor):
                # the affine travels in meta["affine"]; passing it twice makes MONAI warn
                result = MetaTensor(result, meta=img.meta)
                result.applied_operations = img.applied_operations
            d[key] = result
        return d


class FlipTTAInferer(Inferer):
    """Mirroring test-time augmentation around another inferer (nnU-Net style).

    Runs ``inferer`` on the input and on its flips along every subset of ``spatial_axes``,
    averages the softmax probabilities (not the logits) and returns the log of that mean:
    ``softmax`` of it gives back the mean, so the configs' ``Activationsd(softmax=True)``
    stays valid. Disabled, it is exactly ``inferer`` (run at ``precision``).

    The mirrored copies go to ``inferer`` stacked along the batch axis, up to
    ``flips_per_call`` copies per call: one network call per batch of windows instead of
    one per flip, which on a CPU is what makes mirroring affordable for a volume of
    interest (each copy is still a separate sample, so the windows, blending and result
    are those of the loop over flips within float rounding). The copies of one call hold
    at most ``max_call_voxels`` input voxels (at least one copy per call), which bounds the
    sliding-window output buffers of a large input (a grown box) to those of about that
    many voxels; ``flips_per_call=1`` is the plain loop.

    Parameters
    ----------
    inferer
        The inferer run on every mirrored copy (e.g. ``SlidingWindowInferer``).
    spatial_axes
        Spatial axes to mirror (0-based, after batch and channel): ``2 ** len`` copies.
    enabled
        ``False`` (or ``"false"``): no mirroring.
    flips_per_call
        Most mirrored copies per ``inferer`` call (1 to 8 for three axes).
    max_call_voxels
        Most input voxels (copies x channels x spatial voxels) per ``inferer`` call.
    precision
        ``"float32"`` (default: the network as it is, also under a caller's autocast) or
        ``"bfloat16"``: the network runs under ``torch.autocast`` in bfloat16 on the
        input's device (about twice as fast on CPUs with AVX512-BF16 or AMX; the
        probabilities are averaged in float32). The monai-tumor pipeline chooses bfloat16
        itself from the bundle's ``cpu_precision``; this switch is for ``monai.bundle run``.
    """

    def __init__(
        self,
        inferer: Inferer,
        spatial_axes: Sequence[int] = (0, 1, 2),
        enabled: bool | str = True,
        flips_per_call: int = 8,
        max_call_voxels: int = 1 << 20,
        precision: str = "float32",
    ) -> None:
        super().__init__()
        self.inferer = inferer
        self.spatial_axes = tuple(int(a) for a in spatial_axes)
        self.enabled = as_bool(enabled)
        if int(flips_per_call) < 1:
            raise ValueError(f"flips_per_call must be at least 1, found {flips_per_call!r}")
        self.flips_per_call = int(flips_per_call)
        self.max_call_voxels = int(max_call_voxels)
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be float32 or bfloat16, found {precision!r}")
        self.precision = precision

    def _infer(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        dtype = _PRECISIONS[self.precision]
        if dtype is None:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(device_type=inputs.device.type, dtype=dtype):
            out = self.inferer(inputs, network, *args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        if not self.enabled:
            return self._infer(inputs, network, *args, **kwargs)
        subsets: list[tuple[int, ...]] = [()]
        for a in self.spatial_axes:
            subsets += [(*s, a) for s in subsets]
        flips = [[2 + a for a in s] for s in subsets]
        batch = inputs.shape[0]
        per_call = min(self.flips_per_call, max(1, self.max_call_voxels // inputs.numel()))
        total: torch.Tensor | None = None
        meta: dict[str, Any] | None = None
        for start in range(0, len(flips), per_call):
            group = flips[start : start + per_call]
            stacked = torch.cat([torch.flip(inputs, d) if d else inputs for d in group], dim=0)
            out = self._infer(stacked, network, *args, **kwargs)
            if meta is None and isinstance(out, MetaTensor):
                meta = dict(out.meta)
            # softmax per copy, flipped back, summed in flip order (as the loop over flips did)
            probs = torch.softmax(_plain(out).float(), dim=1)
            for n, d in enumerate(group):
                p = probs[n * batch : (n + 1) * batch]
                p = torch.flip(p, d) if d else p
                total = p.clone() if total is None else total + p
        if total is None:  # pragma: no cover - the identity copy is always run
            raise RuntimeError("FlipTTAInferer ran no copy")
        mean = total / len(flips)
        # log of the mean probability: softmax(log p) == p, so the config's softmax stays valid
        logp = torch.log(mean.clamp_min(1e-8))
        if meta is not None:
            return MetaTensor(logp, meta=meta)  # affine in meta["affine"]
        return logp


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


#: ``FlipTTAInferer`` precisions: autocast dtype (``None``: the network's own float32).
_PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


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


class RandLogZoomd(Randomizable, MapTransform):
    """Isotropic zoom by a log-uniform factor, the same for all keys, size kept (scale augment).

    MONAI's ``RandZoomd`` and ``RandAffined`` draw the factor uniformly; for a range of
    [0.5, 3] that zooms in five times as often as out. Here ``log(factor)`` is uniform, so
    halving and doubling are equally likely. The zoom is about the array's centre and keeps
    its size (MONAI ``Zoom(keep_size=True)``): zooming in crops, so a lesion may leave the
    array; zooming out pads with a constant per key (air for the image, background for the
    label).

    Parameters
    ----------
    keys
        Keys zoomed together (image and label).
    prob
        Probability of zooming a sample.
    min_zoom, max_zoom
        Range of the factor (> 0); > 1 magnifies.
    mode
        Interpolation per key (``"trilinear"`` for the image, ``"nearest"`` for the label).
    pad_value
        Constant per key used where zooming out leaves no data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        min_zoom: float = 0.5,
        max_zoom: float = 3.0,
        mode: Sequence[str] | str = "trilinear",
        pad_value: Sequence[float] | float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0 < float(min_zoom) <= float(max_zoom):
            raise ValueError(f"expected 0 < min_zoom <= max_zoom, got {min_zoom}, {max_zoom}")
        self.prob = float(prob)
        self.log_range = (float(np.log(float(min_zoom))), float(np.log(float(max_zoom))))
        n = len(self.keys)
        self.mode = [mode] * n if isinstance(mode, str) else list(mode)
        values = pad_value if isinstance(pad_value, Sequence) else [pad_value] * n
        self.pad_value = [float(v) for v in values]
        if len(self.mode) != n or len(self.pad_value) != n:
            raise ValueError(f"mode and pad_value need one entry per key ({n} keys)")
        self._do = False
        self.factor = 1.0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to zoom and the factor."""
        self._do = bool(self.R.rand() < self.prob)
        self.factor = float(np.exp(self.R.uniform(*self.log_range)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        for key, mode, value in zip(self.keys, self.mode, self.pad_value, strict=True):
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"key {key!r} not found in the data")
            zoom = Zoom(
                zoom=self.factor,
                mode=mode,
                padding_mode="constant",
                keep_size=True,
                align_corners=None if mode == "nearest" else False,
                value=value,
            )
            d[key] = zoom(d[key])
        return d
