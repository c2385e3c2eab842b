"""The one source of the helpers both bundles carry a copy of.

A bundle stands alone (it runs with only monai, torch, numpy and nibabel, and never imports
anything outside its own folder), so ``brats_glioma_mri`` and ``lung_nodule_ct`` each hold
these definitions in their ``scripts/``:

- ``largest_component`` (with ``_largest_scipy``, ``_largest_torch``) and
  ``MetaSafeSpacingd``: ``scripts/transforms.py``
- ``MetricsCurveHandler``: ``scripts/curves.py``
- ``latest_checkpoint``: ``scripts/datalist.py``

Change them here, then paste the same text into each bundle:
``tests/unit/test_bundle_shared_helpers.py`` fails while any copy differs from this file.
This module is not imported by either bundle.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Spacingd

__all__ = [
    "SHARED",
    "MetaSafeSpacingd",
    "MetricsCurveHandler",
    "largest_component",
    "latest_checkpoint",
]

#: Which bundle file holds a copy of which definitions (paths relative to a bundle root).
SHARED: dict[str, tuple[str, ...]] = {
    "scripts/transforms.py": (
        "largest_component",
        "_largest_scipy",
        "_largest_torch",
        "MetaSafeSpacingd",
    ),
    "scripts/curves.py": ("MetricsCurveHandler",),
    "scripts/datalist.py": ("latest_checkpoint",),
}


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


class MetricsCurveHandler:
    """Record mean training loss per epoch and validation metrics; write CSV and PNG.

    Attach to the trainer (``attach(trainer)``); the validator's ``state.metrics`` are read
    after each validation run (the validator must be run by a ``ValidationHandler`` attached
    before this handler, so that its metrics are fresh at ``EPOCH_COMPLETED``).
    """

    def __init__(
        self, validator: Any, output_dir: str, metric_names: list[str], val_interval: int
    ) -> None:
        self.validator = validator
        self.val_interval = int(val_interval)
        self.output_dir = output_dir
        self.metric_names = list(metric_names)
        self.csv_path = os.path.join(output_dir, "metrics.csv")
        self.png_path = os.path.join(output_dir, "training_curve.png")
        self._losses: list[float] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _iteration(self, engine: Any) -> None:
        out = engine.state.output
        items = out if isinstance(out, list) else [out]
        self._losses.append(float(items[0]["loss"]))

    def _epoch(self, engine: Any) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        loss = sum(self._losses) / max(len(self._losses), 1)
        self._losses = []
        vstate = self.validator.state
        fresh = engine.state.epoch % self.val_interval == 0 and bool(vstate.metrics)
        row: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        row["loss"] = f"{loss:.5f}"
        lr = engine.optimizer.param_groups[0]["lr"] if hasattr(engine, "optimizer") else ""
        row["lr"] = f"{lr:.6g}" if lr != "" else ""
        for name in self.metric_names:
            value = vstate.metrics.get(name) if fresh else None
            row[name] = f"{float(value):.5f}" if value is not None else ""
        new = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if fresh:
            self._plot()

    def _plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # plotting is optional; the CSV is the record
            return
        with open(self.csv_path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        ep = [int(r["epoch"]) for r in rows]
        loss = [float(r["loss"]) for r in rows]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(ep, loss)
        a1.set_xlabel("epoch")
        a1.set_ylabel("train loss (DiceCE)")
        for name in self.metric_names:
            pts = [(int(r["epoch"]), float(r[name])) for r in rows if r.get(name)]
            if pts:
                a2.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
        a2.set_xlabel("epoch")
        a2.set_ylabel("validation Dice")
        a2.set_ylim(0, 1)
        a2.legend()
        fig.tight_layout()
        fig.savefig(self.png_path, dpi=80)
        plt.close(fig)


def latest_checkpoint(ckpt_dir: str) -> str:
    """Newest ``checkpoint*.pt`` (full training state) in ``ckpt_dir``, or "" if there is none."""
    found = sorted(Path(ckpt_dir).glob("checkpoint*.pt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else ""


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
