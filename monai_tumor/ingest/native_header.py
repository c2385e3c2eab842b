"""A fast top-level scan of uncompressed little-endian DICOM files.

Why this exists: pydicom's parser costs about 0.5 ms per file, which is most of
the time it takes to read a 134-slice CT (it builds and checks every element,
including nested sequences we never look at). For the overwhelmingly common
file (Part 10, Explicit or Implicit VR Little Endian, single frame, no
functional groups) this module walks the top-level elements with
:mod:`monai_tumor.ingest.elements` (the walker it shares with the header scan), skips
undefined-length sequences without parsing them
(defined-length ones are kept raw), and returns a
regular :class:`pydicom.dataset.Dataset` built from pydicom's own
:class:`~pydicom.dataelem.RawDataElement` records, so every value is still
decoded by pydicom, lazily, exactly as if pydicom had read the file.

Anything unusual (no preamble, another transfer syntax, functional groups,
undefined-length non-sequence elements, truncation) makes :func:`scan_native`
return None and the caller falls back to ``pydicom.dcmread``. The tests compare
the two on every real series in the shared data.
"""

from __future__ import annotations

import struct
from typing import cast

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag

from monai_tumor.ingest.elements import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    UNDEFINED_LENGTH,
    FallbackError,
    NeedMoreError,
    file_meta_elements,
    walk_elements,
)

__all__ = [
    "BITS_ALLOCATED",
    "BITS_STORED",
    "COLUMNS",
    "IMAGE_TYPE",
    "NUMBER_OF_FRAMES",
    "PIXEL_REPRESENTATION",
    "ROWS",
    "SAMPLES_PER_PIXEL",
    "SERIES_INSTANCE_UID",
    "SOP_CLASS_UID",
    "SOP_INSTANCE_UID",
    "number_of_frames",
    "raw_ascii",
    "raw_us",
    "scan_native",
    "scan_native_header",
]

# Tags read on every file through raw_us / raw_ascii.
IMAGE_TYPE = 0x00080008
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
SERIES_INSTANCE_UID = 0x0020000E
SAMPLES_PER_PIXEL = 0x00280002
NUMBER_OF_FRAMES = 0x00280008
ROWS = 0x00280010
COLUMNS = 0x00280011
BITS_ALLOCATED = 0x00280100
BITS_STORED = 0x00280101
PIXEL_REPRESENTATION = 0x00280103

_PIXEL_DATA = 0x7FE00010
# Enhanced (functional group) objects need pydicom's full sequence parsing.
_FALLBACK_TAGS = {0x52009229, 0x52009230}


def _raw(
    tag: int, vr: bytes | None, value: bytes, value_pos: int, implicit: bool
) -> RawDataElement:
    btag = BaseTag(tag)
    vr_text = vr.decode("ascii") if vr is not None else None
    return RawDataElement(btag, vr_text, len(value), value, value_pos, implicit, True)


def _scan(buf: bytes, *, head_only: bool = False) -> tuple[Dataset, int, int]:
    """Walk the elements; ``head_only``: stop at PixelData without taking its value."""
    pixel_offset, pixel_length = -1, 0
    meta = FileMetaDataset()
    entries, pos = file_meta_elements(buf)
    for meta_tag, meta_vr, at, size in entries:
        meta[BaseTag(meta_tag)] = _raw(meta_tag, meta_vr, buf[at : at + size], at, False)
    tsyntax = meta.get("TransferSyntaxUID")
    if tsyntax is None:
        raise FallbackError
    tsyntax = str(tsyntax).rstrip("\x00 ")
    if tsyntax not in (EXPLICIT_VR_LE, IMPLICIT_VR_LE):
        raise FallbackError
    implicit = tsyntax == IMPLICIT_VR_LE
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    end = len(buf)
    found, _ = walk_elements(buf, pos, implicit, stop_at=_FALLBACK_TAGS, stop_from=_PIXEL_DATA)
    for tag, vr, length, value_pos in found:
        if tag in _FALLBACK_TAGS or tag >> 16 == 0xFFFE:
            raise FallbackError  # functional groups, or a stray item/delimiter
        if length == UNDEFINED_LENGTH:
            if tag == _PIXEL_DATA:
                raise FallbackError  # encapsulated pixel data: not a native syntax after all
            # Undefined-length sequences were stepped over: a legacy single-frame image
            # needs none of them (functional groups fall back above).
            continue
        next_pos = value_pos + length
        if tag == _PIXEL_DATA and head_only:
            pixel_offset, pixel_length = value_pos, length
            break
        if next_pos > end:
            raise FallbackError  # truncated: let pydicom produce its own diagnosis
        # PixelData stays a zero-copy view of the file bytes (pydicom and numpy
        # both accept a memoryview); small values are copied.
        value = (
            cast(bytes, memoryview(buf)[value_pos:next_pos])
            if tag == _PIXEL_DATA
            else buf[value_pos:next_pos]
        )
        elements[BaseTag(tag)] = _raw(tag, vr, value, value_pos, implicit)
        if tag == _PIXEL_DATA:
            pixel_offset, pixel_length = value_pos, length
    if head_only and pixel_offset < 0:
        raise FallbackError  # the header is longer than the head, or there are no pixels
    ds = Dataset(elements)
    ds.file_meta = meta
    ds.set_original_encoding(implicit, True)
    return ds, pixel_offset, pixel_length


def scan_native(data: bytes) -> Dataset | None:
    """Parse a DICOM file's bytes if it is a plain native little-endian image.

    Parameters
    ----------
    data
        The whole file.

    Returns
    -------
    pydicom.dataset.Dataset or None
        The top-level elements (sequences skipped) with file meta and
        PixelData, values left raw for pydicom to decode on access; None when
        the file needs the full parser (compressed, big endian, enhanced
        multi-frame, no preamble, anything malformed).
    """
    try:
        return _scan(data)[0]
    except (FallbackError, NeedMoreError, struct.error, UnicodeDecodeError, ValueError):
        return None


def scan_native_header(head: bytes) -> tuple[Dataset, int, int] | None:
    """Parse the start of a native little-endian image file, up to its PixelData.

    Parameters
    ----------
    head
        The first bytes of the file (enough to reach the PixelData element).

    Returns
    -------
    tuple or None
        ``(dataset, offset, length)``: the top-level elements without PixelData,
        and the file offset and byte length of the PixelData value (not checked
        against the file size). None when :func:`scan_native` would fall back,
        or when ``head`` ends before PixelData.
    """
    try:
        return _scan(head, head_only=True)
    except (FallbackError, NeedMoreError, struct.error, UnicodeDecodeError, ValueError):
        return None


def raw_us(ds: Dataset, tag: int, default: int) -> int:
    """Return an unsigned short (US) value, from the raw bytes when still unconverted.

    Same value as ``int(ds[tag].value)``; avoids pydicom's per-access conversion
    (a noticeable share of reading a long series).
    """
    elem = ds.get_item(tag)
    if elem is None:
        return default
    if isinstance(elem, RawDataElement) and elem.value is not None and len(elem.value) == 2:
        fmt = "<H" if elem.is_little_endian else ">H"
        return int(struct.unpack(fmt, elem.value)[0])
    value = ds[tag].value
    if value is None or value == "":
        return default
    if isinstance(value, (bytes, bytearray)):  # an odd length: not a US value
        raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not an unsigned short")
    if not isinstance(value, int):  # several values where one is expected: the first
        value = next(iter(value), default)
    return int(value)


def raw_ascii(ds: Dataset, tag: int, default: str = "") -> str:
    """Return the text of an ASCII-only element (UI, CS, IS), raw when unconverted.

    Multiple values come back joined by backslashes, trailing padding removed.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return default
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        return elem.value.decode("ascii", "replace").strip("\x00 ")
    value = ds[tag].value
    if value is None:
        return default
    if isinstance(value, (str, int, float)):
        return str(value)
    return "\\".join(str(v) for v in value)


def number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames (an IS string), 1 when absent or empty."""
    text = raw_ascii(ds, NUMBER_OF_FRAMES, "1")
    return int(text) if text.strip() else 1
