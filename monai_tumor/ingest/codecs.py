"""Which transfer syntaxes can be decoded on this machine.

We ask pydicom's own decoder registry (which knows the pylibjpeg, gdcm, pyjpegls
and pillow plugins) instead of keeping our own table, so that installing a plugin
is all it takes to support a new syntax.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydicom.pixels import get_decoder
from pydicom.uid import UID

__all__ = ["can_decode", "decoding_plugin", "transfer_syntax_name"]

#: Decoder plugins in the order we use them. GDCM comes last: on some malformed
#: streams (a frame that decodes to more bytes than Rows x Columns declare) it
#: throws a C++ exception that terminates the whole process instead of raising
#: in Python (found by ``benchmarks/bench_fuzz.py``); the others raise.
PLUGIN_PREFERENCE: tuple[str, ...] = ("pydicom", "pylibjpeg", "pyjpegls", "pillow", "gdcm")


@lru_cache(maxsize=128)
def can_decode(transfer_syntax_uid: str) -> bool:
    """Return whether pixel data in this transfer syntax can be decoded here.

    Parameters
    ----------
    transfer_syntax_uid
        TransferSyntaxUID (0002,0010) of the file.

    Returns
    -------
    bool
        True if pydicom has a decoder for the syntax with at least one
        installed plugin (uncompressed syntaxes need none).
    """
    decoder = _decoder(transfer_syntax_uid)
    return decoder is not None and bool(decoder.is_available)


def _decoder(transfer_syntax_uid: str) -> Any:
    """Return pydicom's decoder for the syntax, or None if it has none."""
    try:
        return get_decoder(UID(transfer_syntax_uid))
    except (NotImplementedError, ValueError):
        return None


@lru_cache(maxsize=128)
def decoding_plugin(transfer_syntax_uid: str) -> str:
    """Return the pydicom decoding plugin to use for a transfer syntax.

    Parameters
    ----------
    transfer_syntax_uid
        TransferSyntaxUID (0002,0010) of the file.

    Returns
    -------
    str
        The first installed plugin of :data:`PLUGIN_PREFERENCE` that handles
        the syntax, or ``""`` (pydicom's own choice: uncompressed syntaxes, or
        a plugin we do not know).
    """
    decoder = _decoder(transfer_syntax_uid)
    if decoder is None:
        return ""
    available = set(decoder.available_plugins)
    return next((name for name in PLUGIN_PREFERENCE if name in available), "")


def transfer_syntax_name(transfer_syntax_uid: str) -> str:
    """Human-readable name of a transfer syntax (the UID itself if unknown)."""
    uid = UID(transfer_syntax_uid)
    name = uid.name
    return str(name) if name and name != str(uid) else str(uid)
