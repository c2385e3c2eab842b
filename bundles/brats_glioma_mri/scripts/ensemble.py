"""The cross-validation fold models as one network (sigmoid region outputs).

Depends only on monai and torch (bundle rule: nothing from the project package).

The nodule bundle carries a softmax counterpart (``UNetEnsemble``); each bundle stands alone,
so neither imports the other.

Why one module rather than MONAI's ``EnsembleEvaluator`` + ``MeanEnsembled``: MONAI Label,
MONAI Deploy and ``ckpt_export`` expect a single ``network_def`` with one ``models/model.pt``
and one ``models/model.ts``; wrapping the members keeps that contract, so every app runs the
whole ensemble. The members are the fold models of ``configs/train.json`` (plain UNets),
so an ensemble needs no training run beyond the cross-validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["SigmoidUNetEnsemble", "assemble_folds", "member_weights"]


class SigmoidUNetEnsemble(nn.Module):
    """``num_members`` UNets with the same arguments; the output averages their sigmoids.

    The forward pass returns ``logit(mean_k sigmoid(member_k(x)))`` per channel, so the
    configs' ``Activationsd(sigmoid=True)`` gives back the members' mean probability.
    With one member it returns that member's logits unchanged.

    Parameters
    ----------
    num_members
        Number of members (at least 1).
    **unet_kwargs
        Passed to :class:`monai.networks.nets.UNet` for every member.
    """

    def __init__(self, num_members: int = 1, **unet_kwargs: Any) -> None:
        super().__init__()
        if int(num_members) < 1:
            raise ValueError(f"num_members must be at least 1, got {num_members}")
        self.members = nn.ModuleList(UNet(**unet_kwargs) for _ in range(int(num_members)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average the members' sigmoid probabilities and return their logit.

        Parameters
        ----------
        x
            Input batch (B, C_in, X, Y, Z).

        Returns
        -------
        torch.Tensor
            (B, C_out, X, Y, Z): logit of the mean probability, float32 (logits for one
            member, in the member's dtype).
        """
        if len(self.members) == 1:
            return self.members[0](x)
        probs: list[torch.Tensor] = []
        for member in self.members:  # TorchScript unrolls loops over a ModuleList
            # averaged in float32 even when the members run in bfloat16 (CPU autocast):
            # in bfloat16 the clamp below would round 1 - 1e-6 to 1 and give infinite logits
            probs.append(torch.sigmoid(member(x).float()))
        mean = torch.stack(probs).mean(dim=0).clamp(1e-6, 1.0 - 1e-6)
        return torch.log(mean) - torch.log1p(-mean)


def member_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """UNet weights of one fold model, with plain UNet key names.

    Accepts a plain UNet ``state_dict`` (``model.*``) or that of a one-member
    :class:`SigmoidUNetEnsemble` (``members.0.model.*``, what ``train.json --num_members 1``
    writes).
    """
    prefix = "members.0."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def assemble_folds(fold_ckpts: Sequence[str | Path], out_path: str | Path) -> Path:
    """Write the ``state_dict`` of a :class:`SigmoidUNetEnsemble` made of fold models.

    Parameters
    ----------
    fold_ckpts
        One checkpoint per member in member order: ``train.json``'s ``checkpoint_last.pt``
        (``{"model": state_dict, ...}``) or a bare UNet ``state_dict``.
    out_path
        Where to write the ensemble's ``state_dict``; written to a temporary file in the same
        folder first and renamed, so an interrupted run never leaves a half-written model.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    ValueError
        If no checkpoint is given, or the members' layers differ in names or shapes.
    """
    if not fold_ckpts:
        raise ValueError("assemble_folds needs at least one fold checkpoint")
    state: dict[str, torch.Tensor] = {}
    reference: dict[str, tuple[int, ...]] | None = None
    for index, path in enumerate(fold_ckpts):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        weights = member_weights(loaded.get("model", loaded))
        shapes = {k: tuple(v.shape) for k, v in weights.items()}
        if reference is None:
            reference = shapes
        elif shapes != reference:
            raise ValueError(f"{path}: member {index} does not have the first member's layers")
        state.update({f"members.{index}.{k}": v for k, v in weights.items()})
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(out)
    return out
