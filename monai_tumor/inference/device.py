"""Choose the torch device a bundle runs on, its CPU threads and its CPU precision."""

from __future__ import annotations

import torch

from monai_tumor.cpus import available_cpus
from monai_tumor.errors import ConfigError

__all__ = ["available_cpus", "native_bf16", "select_device"]


def native_bf16() -> bool:
    """Return True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Without it, torch emulates bfloat16 on the CPU and a bf16 network runs slower than
    float32, so the pipeline only chooses bf16 where this is True.
    """
    import torch.cpu

    # torch's own CPU feature probes (cpuinfo); private names, hence the fallback
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in probes)
    except (AttributeError, RuntimeError):
        return False


def select_device(device: str = "auto") -> torch.device:
    """Resolve a device option to a :class:`torch.device`.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``.

    Returns
    -------
    torch.device
        The device to put the network and its inputs on.

    Raises
    ------
    ConfigError
        If the option is not one of the above, or CUDA is asked for on a
        machine without a usable CUDA GPU (or the index does not exist).
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device {device!r} is not understood; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if chosen.type == "cpu":
        return chosen
    if chosen.type != "cuda":
        raise ConfigError(
            f"device {device!r} ({chosen.type}) is not supported; expected 'auto', 'cpu', "
            "'cuda' or 'cuda:N'"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was requested but no CUDA GPU is usable here (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use --device cpu "
            "or 'auto', or install a CUDA build of torch on a machine with a GPU"
        )
    count = torch.cuda.device_count()
    if chosen.index is not None and chosen.index >= count:
        raise ConfigError(
            f"device {device!r} was requested but only {count} CUDA device(s) exist "
            f"(cuda:0..cuda:{count - 1})"
        )
    return chosen
