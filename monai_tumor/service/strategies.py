"""Active learning: which unlabelled image to annotate next (``POST /activelearning/{name}``).

``random`` and ``first`` as in MONAI Label. ``tta_disagreement`` (alias ``uncertainty``)
segments every unlabelled image twice, as it is and mirrored left-right (the network sees
the flipped voxels, the mask is flipped back), and returns the image where the two masks
agree least (1 - Dice; two empty masks agree). The network's own inconsistency under a
flip it was trained to be invariant to marks the images it is least sure about, without
needing its probabilities. Only images the model reads (its channel count and, when the
image states one, its modality) are candidates.
Scores are cached per image and model version.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor

from monai_tumor.errors import RequestError
from monai_tumor.inference import BundleKind
from monai_tumor.service.datastore import Datastore
from monai_tumor.service.models import InferenceGate, ServedModel

__all__ = ["STRATEGIES", "Strategies", "flip_disagreement"]

#: Strategy name -> description (``/info/`` ``strategies``).
STRATEGIES = {
    "random": "Random unlabelled image",
    "first": "First unlabelled image (sorted by id)",
    "tta_disagreement": "Unlabelled image whose prediction changes most under a left-right "
    "flip (1 - Dice of the two masks)",
    "uncertainty": "Same as tta_disagreement",
}


def flip_disagreement(model: ServedModel, image: MetaTensor) -> float:
    """1 - Dice between the masks of ``image`` and of its left-right mirror (flipped back).

    VOI models get the image centre as their point (datastores of VOIs, e.g. LIDC crops).
    """
    params: dict[str, Any] = {}
    if model.info.kind == BundleKind.VOI:
        params["foreground"] = [[(n - 1) / 2.0 for n in image.shape[1:]]]
    plain, _ = model.infer(image, params)
    mirrored = MetaTensor(
        torch.flip(image.as_tensor(), dims=(1,)), affine=image.affine, meta=dict(image.meta)
    )
    flipped, _ = model.infer(mirrored, params)
    a = plain.as_tensor() > 0
    b = torch.flip(flipped.as_tensor(), dims=(1,)) > 0
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 0.0
    return 1.0 - 2.0 * int((a & b).sum()) / total


class Strategies:
    """The active-learning strategies over one datastore and the served models."""

    def __init__(
        self, datastore: Datastore, models: Mapping[str, ServedModel], gate: InferenceGate
    ) -> None:
        self._datastore = datastore
        self._models = models
        self._gate = gate
        self._scores: dict[tuple[str, str, int], float] = {}
        self._lock = threading.Lock()

    def _model_for(self, params: Mapping[str, Any]) -> ServedModel:
        name = params.get("model")
        if name is not None:
            if name not in self._models:
                raise RequestError(f"no model {name!r}; known: {sorted(self._models)}", status=404)
            return self._models[str(name)]
        whole = [m for m in self._models.values() if m.info.kind != BundleKind.VOI]
        return (whole or list(self._models.values()))[0]

    def next_sample(self, strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the chosen image's ``{id, path, ...}``, or ``{}`` when every image is labelled.

        Raises
        ------
        RequestError
            404 for an unknown strategy.
        """
        if strategy not in STRATEGIES:
            raise RequestError(
                f"no active learning strategy {strategy!r}; known: {sorted(STRATEGIES)}",
                status=404,
            )
        labelled = set(self._datastore.labeled())
        unlabelled = [i for i in self._datastore.list_images() if i not in labelled]
        if not unlabelled:
            return {}
        extra: dict[str, Any] = {}
        if strategy == "first":
            chosen = unlabelled[0]
        elif strategy == "random":
            chosen = random.choice(unlabelled)
        else:
            model = self._model_for(params)
            version = model.active_version().number
            unlabelled = [
                i for i in unlabelled if model.reads(self._datastore.load(i))
            ]  # the images this model reads (a datastore may mix CT VOIs and stacked MR)
            if not unlabelled:
                return {}
            scores = {}
            for image_id in unlabelled:
                key = (model.name, image_id, version)
                with self._lock:
                    cached = self._scores.get(key)
                if cached is None:
                    image = self._datastore.load(image_id)
                    with self._gate:
                        cached = flip_disagreement(model, image)
                    with self._lock:
                        self._scores[key] = cached
                scores[image_id] = cached
            chosen = max(unlabelled, key=lambda i: (scores[i], i))
            extra = {"score": scores[chosen], "model": model.name}
        return {
            "id": chosen,
            "path": str(self._datastore.image_file(chosen)),
            "strategy": strategy,
            **extra,
        }
