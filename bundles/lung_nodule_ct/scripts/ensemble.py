"""An ensemble of identically shaped MONAI UNets behaving as one network.

Depends only on monai and torch (bundle rule: nothing from the project package).

Why one module rather than MONAI's ``EnsembleEvaluator`` + ``MeanEnsembled``: MONAI Label,
MONAI Deploy and ``ckpt_export`` all expect a single ``network_def`` with one
``models/model.pt`` and one ``models/model.ts``.  Wrapping the members keeps that contract, so
every app runs the whole ensemble and a model trained by ``train.json`` loads into
``inference.json`` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["UNetEnsemble", "assemble_members", "member_state_dict"]


class UNetEnsemble(nn.Module):
    """``num_members`` UNets with the same arguments; the output averages their probabilities.

    The forward pass returns ``log(mean_k softmax(member_k(x)))`` along the channel axis,
    so a downstream ``softmax`` (the configs' ``Activationsd(softmax=True)``, the training
    loss's ``softmax=True``) gives back the members' mean probability exactly.  With one
    member it returns that member's logits unchanged, so a one-member ensemble is the
    plain UNet (and loads a plain UNet ``state_dict`` too).

    Parameters
    ----------
    num_members
        Number of independently initialised members (at least 1).
    **unet_kwargs
        Passed to :class:`monai.networks.nets.UNet` for every member.
    """

    def __init__(self, num_members: int = 1, **unet_kwargs: Any) -> None:
        super().__init__()
        if int(num_members) < 1:
            raise ValueError(f"num_members must be at least 1, got {num_members}")
        self.members = nn.ModuleList(UNet(**unet_kwargs) for _ in range(int(num_members)))
        self.register_load_state_dict_pre_hook(_plain_unet_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average the members' softmax probabilities and return their log.

        Parameters
        ----------
        x
            Input batch (B, C_in, X, Y, Z).

        Returns
        -------
        torch.Tensor
            (B, C_out, X, Y, Z): log of the mean probability (logits for one member).
        """
        if len(self.members) == 1:
            return self.members[0](x)
        probs: list[torch.Tensor] = []
        for member in self.members:  # TorchScript unrolls loops over a ModuleList
            probs.append(torch.softmax(member(x), dim=1))
        mean = torch.stack(probs).mean(dim=0)
        # probability floor so log(mean p) stays finite (a literal: TorchScript cannot close
        # over module globals); FlipTTAInferer uses the same floor
        return torch.log(mean.clamp_min(1e-8))


def _plain_unet_keys(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Let a one-member ensemble load a plain UNet ``state_dict`` (bundle 0.2.x weights).

    Renames ``<prefix>model.*`` to ``<prefix>members.0.model.*`` in place; any other
    mismatch is left for ``load_state_dict`` to report as usual.
    """
    if not isinstance(module, UNetEnsemble) or len(module.members) != 1:
        return
    plain = [k for k in state_dict if k.startswith(f"{prefix}model.")]
    if not plain or any(k.startswith(f"{prefix}members.") for k in state_dict):
        return
    for key in plain:
        state_dict[f"{prefix}members.0.{key[len(prefix) :]}"] = state_dict.pop(key)


def member_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The UNet weights of a one-network checkpoint, with plain UNet key names.

    Accepts the ``model.pt`` that this bundle's ``train.json`` writes for a one-member
    :class:`UNetEnsemble` (keys ``members.0.*``), a plain UNet ``state_dict`` (keys
    ``model.*``, as bundle versions up to 0.2.1 shipped), either of them also wrapped as
    ``{"model": state_dict}`` (the full training checkpoints).

    Parameters
    ----------
    checkpoint
        A loaded checkpoint.

    Returns
    -------
    dict
        The weights keyed as :class:`monai.networks.nets.UNet` expects.

    Raises
    ------
    ValueError
        If the checkpoint holds several members (pick one ensemble at a time) or no UNet.
    """
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise ValueError("the checkpoint holds no network weights")
    keys = list(state)
    if all(k.startswith("members.") for k in keys):
        indices = {k.split(".", 2)[1] for k in keys}
        if indices != {"0"}:
            raise ValueError(
                f"the checkpoint is an ensemble of {len(indices)} members; "
                "assemble from one-member checkpoints"
            )
        return {k.split(".", 2)[2]: v for k, v in state.items()}
    if any(k.startswith("members.") for k in keys):
        raise ValueError("the checkpoint mixes ensemble and plain UNet keys")
    return dict(state)


def assemble_members(member_ckpts: Sequence[str | Path], out_path: str | Path) -> Path:
    """Write the checkpoint of a :class:`UNetEnsemble` made of separately trained members.

    Parameters
    ----------
    member_ckpts
        One checkpoint per member, in member order (see :func:`member_state_dict`).
    out_path
        Where to write the ensemble's ``state_dict`` (a bare state dict, as ``train.json``'s
        best-model ``CheckpointSaver`` writes ``model.pt``); written to a temporary file in the same
        folder first and renamed, so an interrupted run never leaves a half-written model.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    ValueError
        If no checkpoint is given, or the members' weights do not have the same names and shapes.
    """
    if not member_ckpts:
        raise ValueError("assemble_members needs at least one member checkpoint")
    state: dict[str, torch.Tensor] = {}
    reference: dict[str, tuple[int, ...]] | None = None
    for index, path in enumerate(member_ckpts):
        try:
            weights = member_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
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
