"""Fine-tune a bundle on corrected labels through its own ``configs/train.json``.

The annotation service (``monai_tumor.service``) runs this in a background process: the
bundle's training workflow (``ConfigWorkflow``, as MONAI Label's ``BundleTrainTask`` does)
with the datastore's image/label pairs instead of the bundle's split, starting from the
weights the server uses now. The bundle's own validator (``validate#evaluator``) scores
those starting weights once before training and the network after every epoch, so the
caller can switch to the new weights only if they validate better.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.errors import BundleError
from monai_tumor.training.bundle_training import train_workflow

__all__ = ["FinetuneResult", "finetune_bundle"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes
    ----------
    weights
        ``output_dir / "model.pt"``: the best state dict by the bundle's validation metric
        (the starting weights if no epoch beat them).
    metric_name
        The bundle's key validation metric (e.g. ``"val_mean_dice"``).
    baseline
        That metric for the starting weights, on the validation pairs.
    per_epoch
        That metric after each training epoch.
    """

    weights: Path
    metric_name: str
    baseline: float
    per_epoch: tuple[float, ...]

    @property
    def best(self) -> float:
        """The best metric reached by training (``-inf`` if no epoch was validated)."""
        return max(self.per_epoch, default=float("-inf"))

    @property
    def improved(self) -> bool:
        """Whether some epoch validated strictly better than the starting weights."""
        return self.best > self.baseline


def finetune_bundle(
    bundle_dir: str | Path,
    *,
    train_pairs: Sequence[Mapping[str, str]],
    val_pairs: Sequence[Mapping[str, str]],
    init_weights: str | Path,
    output_dir: str | Path,
    max_epochs: int = 1,
    overrides: Mapping[str, Any] | None = None,
) -> FinetuneResult:
    """Fine-tune a bundle from ``init_weights`` on image/label file pairs.

    Parameters
    ----------
    bundle_dir
        The bundle folder (``configs/train.json`` with ``train#dataset#data``,
        ``validate#dataset#data``, ``validate#evaluator`` and ``network``).
    train_pairs, val_pairs
        ``{"image": path, "label": path}`` dictionaries, the files the bundle's
        ``LoadImaged`` reads (label values as the bundle's references use them).
    init_weights
        State dict to start from (and to score as the baseline).
    output_dir
        Receives ``model.pt`` (best by validation), ``metrics.csv`` and the training state
        under ``checkpoints/``.
    max_epochs
        Training epochs; validation runs after each.
    overrides
        Further config ids, e.g. ``{"num_samples": 1, "batch_size": 1}``.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    BundleError
        If the bundle does not train, or writes no ``model.pt``; if a part is empty or
        an image is both a training and a validation pair.
    """
    import torch
    from ignite.engine import Events

    bundle = Path(bundle_dir).resolve()
    configs = bundle / "configs"
    if not (configs / "train.json").is_file():
        raise BundleError("configs/train.json not found; expected a MONAI bundle", path=bundle)
    if not train_pairs or not val_pairs:
        raise BundleError(
            f"fine-tuning needs at least one training and one validation pair, found "
            f"{len(train_pairs)} and {len(val_pairs)}; save more final labels first",
            path=bundle,
        )
    shared = {p["image"] for p in train_pairs} & {p["image"] for p in val_pairs}
    if shared:
        raise BundleError(
            f"{len(shared)} image(s) are both training and validation pairs "
            f"({sorted(Path(s).name for s in shared)[:3]}); a validation image must be held "
            "out of training, or the validation metric says nothing about new cases",
            path=bundle,
        )
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    override: dict[str, Any] = {
        "bundle_root": str(bundle),
        "ckpt_dir": str(out),
        "output_dir": str(out),
        "checkpoint_dir": str(out / "checkpoints"),
        "resume_training": False,
        "max_epochs": int(max_epochs),
        "val_interval": 1,
        "train#dataset#data": [dict(p) for p in train_pairs],
        "validate#dataset#data": [dict(p) for p in val_pairs],
    }
    override.update(dict(overrides or {}))
    scores: list[float] = []
    with bundle_scripts(bundle):
        workflow = train_workflow(configs, override)
        try:
            workflow.initialize()
            network = workflow.parser.get_parsed_content("network")
            evaluator = workflow.parser.get_parsed_content("validate#evaluator")
            state = torch.load(Path(init_weights), map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
                state = state["model"]
            network.load_state_dict(state, strict=True)
            metric_name = str(evaluator.state.key_metric_name or "")

            def record(engine: Any) -> None:
                scores.append(float(engine.state.metrics[engine.state.key_metric_name]))

            evaluator.add_event_handler(Events.COMPLETED, record)
            evaluator.run()  # the starting weights: the baseline (also the best so far)
            workflow.run()
            workflow.finalize()
        except BundleError:
            raise
        except Exception as exc:  # the config may raise anything; report it as a bundle error
            raise BundleError(
                f"fine-tuning failed ({type(exc).__name__}: {exc})", path=configs / "train.json"
            ) from exc
    best = out / "model.pt"
    if not best.is_file() or not scores:
        raise BundleError(
            "fine-tuning finished without a validated model.pt; expected a CheckpointSaver "
            "with key_metric_filename='model.pt' in validate#handlers",
            path=configs / "train.json",
        )
    return FinetuneResult(
        weights=best,
        metric_name=metric_name or "key_metric",
        baseline=scores[0],
        per_epoch=tuple(scores[1:]),
    )
