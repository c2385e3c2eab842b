"""Score a seeded (VOI) bundle from points inside a reference lesion on a full image.

A VOI bundle segments the lesion around a seed point. Users click anywhere inside the
lesion, not at its centre, so the score that matters is the Dice from *any* inner point,
and how much it varies with the point (click invariance). :func:`score_seeded_lesion`
seeds the bundle at the reference mask's centroid and at random voxels inside it, runs
the same in-process code path ``monai-tumor infer``/``batch`` use
(:meth:`monai_tumor.inference.LoadedBundle.segment`), and scores each mask against the
reference on the image's own grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from monai_tumor.errors import UnsupportedInputError
from monai_tumor.geometry import ras_to_lps, voxel_to_patient
from monai_tumor.inference.seeds import Seed
from monai_tumor.transforms.voi import FIELDS_OF_VIEW_KEY

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "SeedScore",
    "SeededLesionReport",
    "binary_dice",
    "inner_points",
    "score_seeded_lesion",
]


class _Segmenter(Protocol):
    def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor: ...


@dataclass(frozen=True)
class SeedScore:
    """The result of one seed.

    Attributes
    ----------
    kind
        ``"centroid"`` (the reference mask's centre of mass) or ``"inner"`` (a random
        voxel of the reference mask).
    point_lps
        The seed, LPS mm.
    dice
        Dice of the predicted mask against the reference, on the image's grid.
    volume_ml
        Predicted volume, mL.
    truncated
        The bundle reported the lesion as truncated (box border or image edge).
    runs
        Network runs the seed took (growth and re-centring).
    """

    kind: str
    point_lps: tuple[float, float, float]
    dice: float
    volume_ml: float
    truncated: bool
    runs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "kind": self.kind,
            "point_lps": [round(v, 2) for v in self.point_lps],
            "dice": round(self.dice, 4),
            "volume_ml": round(self.volume_ml, 3),
            "truncated": self.truncated,
            "runs": self.runs,
        }


@dataclass(frozen=True)
class SeededLesionReport:
    """Scores of one reference lesion seeded at its centroid and at inner points.

    Attributes
    ----------
    label
        A name for the lesion.
    reference_volume_ml
        Volume of the reference mask, mL.
    scores
        The centroid seed first, then the inner points.
    agreement
        Mean Dice between each inner point's mask and the centroid's mask (1.0: every
        point gives the same mask).
    """

    label: str
    reference_volume_ml: float
    scores: tuple[SeedScore, ...]
    agreement: float

    @property
    def centroid_dice(self) -> float:
        """Dice from the centroid seed."""
        return self.scores[0].dice

    @property
    def inner_dice(self) -> tuple[float, ...]:
        """Dice from each random inner point."""
        return tuple(s.dice for s in self.scores if s.kind == "inner")

    @property
    def spread(self) -> float:
        """Largest minus smallest Dice over all seeds (0: click-invariant)."""
        values = [s.dice for s in self.scores]
        return max(values) - min(values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary and per-seed records."""
        inner = self.inner_dice
        return {
            "label": self.label,
            "reference_volume_ml": round(self.reference_volume_ml, 3),
            "centroid_dice": round(self.centroid_dice, 4),
            "inner_mean_dice": round(float(np.mean(inner)), 4) if inner else None,
            "inner_min_dice": round(min(inner), 4) if inner else None,
            "spread": round(self.spread, 4),
            "agreement": round(self.agreement, 4),
            "truncated_seeds": sum(s.truncated for s in self.scores),
            "seeds": [s.to_dict() for s in self.scores],
        }


def binary_dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Dice of two binary masks on one grid (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _affine_lps(image: MetaTensor) -> npt.NDArray[np.float64]:
    return ras_to_lps(np.asarray(torch.as_tensor(image.affine).detach().cpu().numpy()))


def inner_points(
    reference: npt.NDArray[np.bool_],
    image: MetaTensor,
    *,
    count: int,
    rng: np.random.Generator,
) -> list[tuple[float, float, float]]:
    """Draw seed points uniformly among the voxels of a reference mask.

    Parameters
    ----------
    reference
        ``(I, J, K)`` bool mask on ``image``'s grid.
    image
        The image (its affine places the voxels).
    count
        Number of points (drawn without replacement while the mask has enough voxels).
    rng
        Random generator (seeded by the caller, for reproducible runs).

    Returns
    -------
    list of tuple
        Voxel centres, LPS mm.
    """
    voxels = np.argwhere(reference)
    if len(voxels) == 0:
        raise UnsupportedInputError("the reference mask is empty: no point lies inside it")
    chosen = rng.choice(len(voxels), size=count, replace=count > len(voxels))
    lps = voxel_to_patient(_affine_lps(image), voxels[chosen].astype(np.float64))
    return [(float(p[0]), float(p[1]), float(p[2])) for p in lps]


def score_seeded_lesion(
    bundle: _Segmenter,
    image: MetaTensor,
    reference: npt.NDArray[np.bool_] | torch.Tensor,
    *,
    points: int = 10,
    seed: int = 0,
    label: str = "",
) -> SeededLesionReport:
    """Seed a VOI bundle at a lesion's centroid and at random inner points, score each.

    Parameters
    ----------
    bundle
        A loaded VOI bundle (:func:`monai_tumor.inference.load_bundle`), or anything with
        its ``segment(image, seeds=...)``.
    image
        The full image ``(C, I, J, K)`` (e.g. ``read_series`` of a whole CT).
    reference
        ``(I, J, K)`` (or ``(1, I, J, K)``) reference mask of one lesion on ``image``'s
        grid (e.g. :attr:`monai_tumor.ingest.lidc_xml.ConsensusNodule.mask`, or
        ``rtstruct_to_mask``).
    points
        Number of random inner points besides the centroid.
    seed
        Seed of the random generator that draws them.
    label
        A name for the lesion in the report.

    Returns
    -------
    SeededLesionReport
    """
    ref = np.asarray(torch.as_tensor(reference).detach().cpu().numpy()) > 0
    if ref.ndim == 4:
        ref = ref[0]
    if ref.shape != tuple(image.shape[1:]):
        raise UnsupportedInputError(
            f"reference mask shape {ref.shape} is not the image's grid {tuple(image.shape[1:])}"
        )
    affine_lps = _affine_lps(image)
    voxel_ml = float(abs(np.linalg.det(affine_lps[:3, :3]))) / 1000.0
    centre = voxel_to_patient(affine_lps, np.argwhere(ref).mean(axis=0))
    seeds = [("centroid", (float(centre[0]), float(centre[1]), float(centre[2])))]
    rng = np.random.default_rng(seed)
    seeds += [("inner", p) for p in inner_points(ref, image, count=points, rng=rng)]
    scores: list[SeedScore] = []
    masks: list[npt.NDArray[np.bool_]] = []
    for kind, point in seeds:
        out = bundle.segment(image, seeds=[Seed(point_lps=point, label=label or kind)])
        pred = np.asarray(out.as_tensor()[0].numpy()) > 0
        fov = (out.meta.get(FIELDS_OF_VIEW_KEY) or [{}])[0]
        masks.append(pred)
        scores.append(
            SeedScore(
                kind=kind,
                point_lps=point,
                dice=binary_dice(pred, ref),
                volume_ml=int(pred.sum()) * voxel_ml,
                truncated=bool(fov.get("truncated", False)),
                runs=int(fov.get("runs", 1)),
            )
        )
    agreement = [binary_dice(m, masks[0]) for m in masks[1:]]
    return SeededLesionReport(
        label=label,
        reference_volume_ml=int(ref.sum()) * voxel_ml,
        scores=tuple(scores),
        agreement=float(np.mean(agreement)) if agreement else math.nan,
    )
