"""Which transfer syntaxes can be decoded on this machine.

We ask pydicom's own decoder registry (which knows the pylibjpeg, gdcm, pyjpegls
and pillow plugins) instead of keeping our own table, so that installing a plugin
is all it takes to support a new syntax.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.pixels import get_decoder
from pydicom.uid import UID

__all__ = ["can_decode", "transfer_syntax_name"]


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
    try:
        decoder = get_decoder(UID(transfer_syntax_uid))
    except (NotImplementedError, ValueError):
        return False
    return bool(decoder.is_available)


def transfer_syntax_name(transfer_syntax_uid: str) -> str:
    """Human-readable name of a transfer syntax (the UID itself if unknown)."""
    uid = UID(transfer_syntax_uid)
    name = uid.name
    return str(name) if name and name != str(uid) else str(uid)
