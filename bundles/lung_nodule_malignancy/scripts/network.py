"""Nodule malignancy network: a small 3D CNN plus shape/intensity features of the mask.

Depends only on torch (bundle rule: nothing from the project package).

Input: ``(B, 2, X, Y, Z)`` float32 on the fixed grid of ``configs/inference.json``
(``pixdim`` mm, ``spatial_size`` voxels, the nodule centred): channel 0 the CT scaled so that
``hu_low`` -> 0 and ``hu_high`` -> 1 (clipped), channel 1 the binary nodule mask.
Output: ``(B, 1)`` logit of malignancy (sigmoid gives the probability).

Two branches, combined by a logistic stacking layer (``mode="both"``):

- ``features``: eight descriptors the network computes from its own input, so that the
  bundle needs no radiomics library: log volume (mm^3), log surface (boundary voxel faces),
  compactness, mean/std CT inside the mask, the calcified (> 200 HU) and ground-glass
  (< -400 HU) fractions of the mask and the mean CT of a 2-voxel shell around it; standardised
  with buffers fitted on the training patients, then a linear layer (a logistic regression
  fitted on the training patients).
- ``cnn``: 3x3x3 conv blocks (8-16-32-48 channels; one conv at full resolution, then two
  per level after a stride-2 conv), global
  average + max pooling, dropout, a linear layer.

The two logits go through ``combine`` (``Linear(2, 1)``), fitted by logistic regression on
the out-of-fold logits of the training patients' cross-validation. ``mode="features"`` or
``"cnn"`` returns one branch's logit (the baselines of the model card).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FEATURE_NAMES", "NoduleMalignancyNet", "mask_features"]

FEATURE_NAMES = (
    "log_volume_mm3",
    "log_surface_mm2",
    "compactness",
    "mean_hu",
    "std_hu",
    "calcified_fraction",
    "ground_glass_fraction",
    "shell_mean_hu",
)


def _dilate(mask: torch.Tensor, steps: int) -> torch.Tensor:
    out = mask
    for _ in range(steps):
        out = torch.nn.functional.max_pool3d(out, kernel_size=3, stride=1, padding=1)
    return out


def mask_features(
    x: torch.Tensor, *, pixdim: tuple[float, float, float], hu_low: float, hu_high: float
) -> torch.Tensor:
    """Return ``(B, 8)`` descriptors (:data:`FEATURE_NAMES`) of the nodule in ``x``.

    ``x`` is the network input ``(B, 2, X, Y, Z)``; intensities are mapped back to HU.
    """
    ct = x[:, 0:1] * (hu_high - hu_low) + hu_low
    mask = (x[:, 1:2] > 0.5).to(x.dtype)
    voxel_mm3 = pixdim[0] * pixdim[1] * pixdim[2]
    n = mask.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
    volume = n * voxel_mm3
    # boundary faces: foreground voxels next to background along each axis, weighted by face area
    faces = torch.zeros_like(n)
    areas = (pixdim[1] * pixdim[2], pixdim[0] * pixdim[2], pixdim[0] * pixdim[1])
    padded = torch.nn.functional.pad(mask, (1, 1, 1, 1, 1, 1))
    for axis, area in enumerate(areas):
        d = torch.diff(padded, dim=axis + 2).abs().sum(dim=(1, 2, 3, 4))
        faces = faces + d * area
    surface = faces.clamp_min(1e-3)
    compactness = 36.0 * math.pi * volume**2 / surface**3
    inside = ct * mask
    mean = inside.sum(dim=(1, 2, 3, 4)) / n
    var = ((ct - mean.view(-1, 1, 1, 1, 1)) ** 2 * mask).sum(dim=(1, 2, 3, 4)) / n
    calcified = ((ct > 200.0).to(x.dtype) * mask).sum(dim=(1, 2, 3, 4)) / n
    ground_glass = ((ct < -400.0).to(x.dtype) * mask).sum(dim=(1, 2, 3, 4)) / n
    shell = _dilate(mask, 2) - mask
    shell_n = shell.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
    shell_mean = (ct * shell).sum(dim=(1, 2, 3, 4)) / shell_n
    return torch.stack(
        [
            torch.log(volume),
            torch.log(surface),
            compactness,
            mean / 100.0,
            torch.sqrt(var + 1e-6) / 100.0,
            calcified,
            ground_glass,
            shell_mean / 100.0,
        ],
        dim=1,
    )


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class NoduleMalignancyNet(nn.Module):
    """CNN + mask-feature logistic model; see the module docstring.

    Parameters
    ----------
    pixdim, hu_low, hu_high
        The grid spacing (mm) and HU scaling of the preprocessing (``configs/inference.json``).
    channels
        Conv block widths.
    dropout
        Dropout before the CNN's linear layer.
    mode
        ``"both"``, ``"features"`` or ``"cnn"``.
    """

    def __init__(
        self,
        pixdim: tuple[float, float, float] | list[float] = (1.0, 1.0, 2.0),
        hu_low: float = -1000.0,
        hu_high: float = 600.0,
        channels: tuple[int, ...] | list[int] = (8, 16, 32, 48),
        dropout: float = 0.3,
        mode: str = "both",
    ) -> None:
        super().__init__()
        if mode not in {"both", "features", "cnn"}:
            raise ValueError(f"mode must be 'both', 'features' or 'cnn', found {mode!r}")
        self.mode = mode
        self.pixdim = (float(pixdim[0]), float(pixdim[1]), float(pixdim[2]))
        self.hu_low = float(hu_low)
        self.hu_high = float(hu_high)
        n_feat = len(FEATURE_NAMES)
        self.register_buffer("feature_mean", torch.zeros(n_feat))
        self.register_buffer("feature_std", torch.ones(n_feat))
        self.feature_head = nn.Linear(n_feat, 1)
        blocks = []
        cin = 2
        # mode "features" has no CNN at all (no unused weights in model.pt)
        for i, c in enumerate(channels if mode != "features" else ()):
            blocks.append(_block(cin, c, 1 if i == 0 else 2))
            if i > 0:
                blocks.append(_block(c, c, 1))
            cin = c
        self.encoder = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.cnn_head = nn.Linear(2 * cin, 1) if mode != "features" else nn.Identity()
        self.combine = nn.Linear(2, 1) if mode == "both" else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised mask features ``(B, 8)``."""
        f = mask_features(x, pixdim=self.pixdim, hu_low=self.hu_low, hu_high=self.hu_high)
        # buffers are typed Tensor | Module by torch's stubs; they are Tensors (registered above)
        return (f - self.feature_mean) / self.feature_std  # type: ignore[operator]

    def cnn_logit(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of the CNN branch ``(B, 1)``."""
        h = self.encoder(x)
        pooled = torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)
        return self.cnn_head(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "cnn":
            return self.cnn_logit(x)
        feature_logit = self.feature_head(self.features(x))
        if self.mode == "features":
            return feature_logit
        return self.combine(torch.cat([feature_logit, self.cnn_logit(x)], dim=1))
