"""Walk the data elements of little-endian DICOM bytes: the one element walker of the project.

Two hot paths read DICOM bytes without pydicom's parser, each for a measured reason given in
its own module: the header scan (:mod:`monai_tumor.ingest.headers`, a few dozen wanted tags
from the first KiB of every file of an export) and the native-pixel reader
(:mod:`monai_tumor.ingest.native_header`, every top-level element of a slice up to its
PixelData). Both decode element headers, step over undefined-length sequences without
parsing them and read the group 0002 file meta; this module does those three things, once.

Scope: Explicit and Implicit VR Little Endian encodings of the dataset (group 0002 is always
Explicit VR Little Endian). Anything this walker cannot vouch for raises
:class:`FallbackError`, and the callers then hand the file to pydicom, which either reads it
or says what is wrong with it; a buffer that ends inside an element raises
:class:`NeedMoreError`. Both are control flow inside the ingest package, never seen by users.
"""

from __future__ import annotations

import struct
from collections.abc import Container

__all__ = [
    "EXPLICIT_VR_LE",
    "IMPLICIT_VR_LE",
    "ITEM_DELIMITER",
    "LONG_VRS",
    "UNDEFINED_LENGTH",
    "Element",
    "FallbackError",
    "NeedMoreError",
    "file_meta_elements",
    "walk_elements",
]

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
#: Explicit VRs whose element header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: One element as found: ``(tag, vr, length, value_offset)``; ``vr`` is None for an implicit
#: header (Implicit VR datasets, and item/delimiter tags of group FFFE, which never carry a
#: VR) and ``length`` may be :data:`UNDEFINED_LENGTH`.
Element = tuple[int, bytes | None, int, int]

_NO_TAGS: frozenset[int] = frozenset()
_ITEM_DELIMITER_ONLY = frozenset({ITEM_DELIMITER})
_NO_TAG_ABOVE = 0x100000000
_UNPACK_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_UNPACK_TAG_LENGTH = struct.Struct("<HHL").unpack_from
_UNPACK_U16 = struct.Struct("<H").unpack_from
_UNPACK_U32 = struct.Struct("<L").unpack_from


class NeedMoreError(Exception):
    """The buffer ends inside an element: read more of the file, or it is truncated."""


class FallbackError(Exception):
    """Something the walker does not handle (or a malformed encoding): use pydicom."""


def walk_elements(
    buf: bytes,
    pos: int,
    implicit: bool,
    *,
    keep: Container[int] | None = None,
    stop_at: Container[int] = _NO_TAGS,
    stop_from: int = _NO_TAG_ABOVE,
    end: int | None = None,
) -> tuple[list[Element], int]:
    """Walk the elements of one dataset level from ``pos``, stepping over their values.

    Undefined-length sequences are stepped over item by item without being parsed (a UN
    element of undefined length is a sequence of Implicit VR items, PS3.5 6.2.2); any other
    undefined-length element raises :class:`FallbackError` unless it is where the walk stops.

    Parameters
    ----------
    buf
        The bytes.
    pos
        Offset of the first element's tag.
    implicit
        The dataset is Implicit VR.
    keep
        Tags to return (None, the default: every element walked over).
    stop_at, stop_from
        The walk stops at the first element whose tag is in ``stop_at`` or at least
        ``stop_from``, and returns it last (kept whatever ``keep`` says, value not stepped
        over): the header scan stops at pixel data, the native reader at PixelData.
    end
        Walk up to this offset instead of the end of ``buf``.

    Returns
    -------
    tuple
        ``(elements, offset)``: the kept :data:`Element` tuples in file order, and the offset
        where the walk ended (the stop element's tag, or ``end``).

    Raises
    ------
    NeedMoreError
        The walk ran past ``end`` (the end of ``buf``): the buffer ends inside an element.
    FallbackError
        An explicit VR that is not two capital letters (e.g. an implicit element in an
        explicit-VR file), or an undefined length that is not a sequence.
    """
    # One plain loop, no generator or call per element: this runs for every element of
    # every file of a scan (measured in docs/benchmarks.md, "One element walker").
    n = len(buf) if end is None else end
    unpack, unpack_u32, long_vrs = _UNPACK_EXPLICIT, _UNPACK_U32, LONG_VRS
    kept: list[Element] = []
    vr: bytes | None
    while pos < n:
        try:  # a short buffer shows as struct.error; a try block costs nothing until it raises
            group, elem, vr, length = unpack(buf, pos)
            if implicit or group == 0xFFFE:
                vr, length, value_pos = None, unpack_u32(buf, pos + 4)[0], pos + 8
            elif vr in long_vrs:
                length, value_pos = unpack_u32(buf, pos + 8)[0], pos + 12
            elif b"AA" <= vr <= b"ZZ":
                value_pos = pos + 8
            else:
                raise FallbackError
        except struct.error:
            raise NeedMoreError from None
        tag = group << 16 | elem
        if tag >= stop_from or tag in stop_at:
            kept.append((tag, vr, length, value_pos))
            return kept, pos
        if keep is None or tag in keep:
            kept.append((tag, vr, length, value_pos))
        if length != UNDEFINED_LENGTH:
            pos = value_pos + length
        elif group == 0xFFFE:
            raise FallbackError  # a stray item or delimiter
        elif vr == b"UN":
            pos = _skip_items(buf, value_pos, True)
        elif vr == b"SQ" or vr is None:
            pos = _skip_items(buf, value_pos, implicit)
        else:
            raise FallbackError  # e.g. encapsulated data where it was not expected
    if pos > n:
        raise NeedMoreError
    return kept, pos


def _skip_items(buf: bytes, pos: int, implicit: bool) -> int:
    """Step over the items of an undefined-length sequence; return the offset after it."""
    while True:
        try:
            group, elem, length = _UNPACK_TAG_LENGTH(buf, pos)
        except struct.error:
            raise NeedMoreError from None
        pos += 8
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            return pos
        if tag != ITEM:
            raise FallbackError
        if length != UNDEFINED_LENGTH:
            pos += length
            continue
        # undefined-length item: its elements, up to the item delimiter
        found, at = walk_elements(buf, pos, implicit, keep=_NO_TAGS, stop_at=_ITEM_DELIMITER_ONLY)
        if not found:
            raise NeedMoreError  # the buffer ended inside the item
        pos = at + 8


def file_meta_elements(buf: bytes) -> tuple[list[tuple[int, bytes, int, int]], int]:
    """Locate the group 0002 elements after the 128-byte preamble and ``DICM``.

    Parameters
    ----------
    buf
        The start of a Part 10 file.

    Returns
    -------
    tuple
        ``([(tag, vr, value_offset, length), ...], offset of the first dataset element)``.

    Raises
    ------
    FallbackError
        No preamble and ``DICM`` prefix, or a meta element that is not explicit VR with a
        defined length.
    NeedMoreError
        ``buf`` ends inside the file meta.
    """
    n = len(buf)
    if n < 132:
        raise NeedMoreError
    if buf[128:132] != b"DICM":
        raise FallbackError
    # Where group 0002 ends: FileMetaInformationGroupLength (0002,0000, type 1, first) says
    # so; without it (or when it is wrong), the first tag of another group does. Group 0002 is
    # always Explicit VR, the dataset after it may not be, so the walk must not go past it.
    if buf[132:140] == b"\x02\x00\x00\x00UL\x04\x00" and n >= 144:
        meta_end = 144 + _UNPACK_U32(buf, 140)[0]
        if meta_end + 2 <= n and _UNPACK_U16(buf, meta_end)[0] != 0x0002:
            try:
                found, _ = walk_elements(buf, 132, False, end=meta_end)
                return _checked_meta(found), meta_end
            except (FallbackError, NeedMoreError):
                pass
    found, pos = [], 132
    while True:
        if pos + 8 > n:
            raise NeedMoreError
        if _UNPACK_U16(buf, pos)[0] != 0x0002:
            return _checked_meta(found), pos
        one, _ = walk_elements(buf, pos, False, stop_from=0)  # one element, not stepped over
        _, _, length, value_pos = one[0]
        if length == UNDEFINED_LENGTH:
            raise FallbackError
        if value_pos + length > n:
            raise NeedMoreError
        found.append(one[0])
        pos = value_pos + length


def _checked_meta(found: list[Element]) -> list[tuple[int, bytes, int, int]]:
    meta: list[tuple[int, bytes, int, int]] = []
    for tag, vr, length, value_pos in found:
        if tag >> 16 != 0x0002 or vr is None or length == UNDEFINED_LENGTH:
            raise FallbackError
        meta.append((tag, vr, value_pos, length))
    return meta
