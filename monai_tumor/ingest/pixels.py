"""Decode the stored pixel values of DICOM instances.

Decoding goes through pydicom's pixel backend (``pydicom.pixels.pixel_array``),
which uses pylibjpeg or python-gdcm for JPEG, JPEG-LS, JPEG 2000 and RLE and
handles big endian, BitsStored sign extension and planar configuration.

The one exception is the commonest case on disk: uncompressed little-endian,
one sample per pixel, where every bit of the allocated word is a stored bit
(or the value is unsigned, which pydicom does not mask either). There the
pixel bytes already in memory are viewed with ``numpy.frombuffer`` without a
copy. It gives the same values as pydicom (tested against it on real data) and
skips pydicom's per-call option handling, which is a third of the read time
on a 134-slice CT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_tumor.errors import IngestError
from monai_tumor.ingest.codecs import can_decode, decoding_plugin, transfer_syntax_name
from monai_tumor.ingest.native_header import (
    BITS_ALLOCATED,
    BITS_STORED,
    COLUMNS,
    PIXEL_REPRESENTATION,
    ROWS,
    SAMPLES_PER_PIXEL,
    number_of_frames,
    raw_us,
)

__all__ = [
    "MAX_DECODED_BYTES",
    "check_declared_size",
    "decode_frames",
    "native_layout_ok",
    "read_native_frames",
    "stored_dtype",
]

_NATIVE_LE = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}


def stored_dtype(ds: Dataset, *, path: Path | None = None) -> np.dtype[np.generic]:
    """Return the numpy dtype of the stored values of a monochrome image.

    Parameters
    ----------
    ds
        A dataset with BitsAllocated (0028,0100) and PixelRepresentation (0028,0103).
    path
        The file, named in the error.

    Returns
    -------
    numpy.dtype
        ``uint8/16/32`` or ``int8/16/32`` (native byte order).
    """
    bits = raw_us(ds, BITS_ALLOCATED, 0)
    signed = raw_us(ds, PIXEL_REPRESENTATION, 0) == 1
    if bits not in (8, 16, 32):
        raise IngestError(f"BitsAllocated {bits} is not supported; expected 8, 16 or 32", path=path)
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


#: Largest stored size of one instance (bytes) we allocate for: 2 GiB (8 GiB as
#: float32 volume at 8 bits), far above any CT, MR or PET instance (a 2,000-frame
#: 512 x 512 16-bit multi-frame is 1 GiB).
MAX_DECODED_BYTES = 2 * 1024**3


def check_declared_size(ds: Dataset, path: Path) -> None:
    """Refuse an instance whose declared pixel size is absurd, before decoding it.

    Compressed pixel data is decoded into an array of the declared size, so a
    header declaring 65535 x 65535 x 999999 pixels must be refused from the
    header alone. Checked: the decoded size against :data:`MAX_DECODED_BYTES`,
    and for encapsulated data the declared number of frames against the number
    of fragments (each frame takes at least one).

    Parameters
    ----------
    ds
        The dataset, pixel data included.
    path
        The file, named in the error.

    Raises
    ------
    IngestError
        With what was declared and what the limit is.
    """
    rows, cols = raw_us(ds, ROWS, 0), raw_us(ds, COLUMNS, 0)
    n_frames = number_of_frames(ds)
    samples = max(raw_us(ds, SAMPLES_PER_PIXEL, 1), 1)
    bits = raw_us(ds, BITS_ALLOCATED, 0)
    declared = rows * cols * n_frames * samples * max((bits + 7) // 8, 1)
    if declared > MAX_DECODED_BYTES:
        raise IngestError(
            f"the header declares {n_frames} frame(s) of {rows}x{cols} pixels at {bits} bits "
            f"({declared / 1024**3:.1f} GiB decoded); refused above "
            f"{MAX_DECODED_BYTES / 1024**3:.0f} GiB per instance: the header is corrupt or "
            "this is not a CT/MR/PET image",
            path=path,
        )
    element = ds.get("PixelData") if "PixelData" in ds else None
    value = getattr(element, "value", None) if element is not None else None
    if isinstance(value, bytes) and value[:4] == b"\xfe\xff\x00\xe0" and n_frames > 1:
        # Encapsulated: items of (FFFE,E000) after the basic offset table.
        fragments = value.count(b"\xfe\xff\x00\xe0") - 1
        if n_frames > fragments:
            raise IngestError(
                f"the header declares {n_frames} frames but the encapsulated pixel data holds "
                f"at most {fragments} fragment(s); the file is truncated or its header is corrupt",
                path=path,
            )


def native_layout_ok(ds: Dataset, transfer_syntax: str) -> bool:
    """Whether the stored values can be taken straight from the bytes (see module notes)."""
    if transfer_syntax not in _NATIVE_LE:
        return False
    if raw_us(ds, SAMPLES_PER_PIXEL, 1) != 1:
        return False
    bits_allocated = raw_us(ds, BITS_ALLOCATED, 0)
    if bits_allocated not in (8, 16, 32):
        return False
    signed = raw_us(ds, PIXEL_REPRESENTATION, 0) == 1
    bits_stored = raw_us(ds, BITS_STORED, bits_allocated)
    return not signed or bits_stored == bits_allocated


def decode_frames(ds: Dataset, path: Path, transfer_syntax: str) -> npt.NDArray[np.generic]:
    """Decode every frame of an instance to stored values.

    Parameters
    ----------
    ds
        The full dataset, pixel data included.
    path
        File the dataset came from (for error messages).
    transfer_syntax
        TransferSyntaxUID of the file.

    Returns
    -------
    numpy.ndarray
        ``(frames, rows, columns)`` stored values (before rescale), DICOM frame
        order ``[row, column]``. Read-only when it is a view of the file bytes.

    Raises
    ------
    IngestError
        No decoder for the transfer syntax, colour data, or a decoding failure.
    """
    rows, cols = raw_us(ds, ROWS, 0), raw_us(ds, COLUMNS, 0)
    n_frames = number_of_frames(ds)
    if raw_us(ds, SAMPLES_PER_PIXEL, 1) != 1:
        raise IngestError(
            f"SamplesPerPixel is {ds.SamplesPerPixel}; a volume needs monochrome pixels "
            "(SamplesPerPixel 1). Colour images (secondary captures, screenshots) "
            "cannot be read as a volume",
            path=path,
        )
    if "PixelData" in ds and native_layout_ok(ds, transfer_syntax):
        dtype = stored_dtype(ds, path=path).newbyteorder("<")
        raw = ds.PixelData
        expected = rows * cols * n_frames * dtype.itemsize
        if len(raw) < expected:
            raise IngestError(
                f"PixelData holds {len(raw)} bytes, expected {expected} for "
                f"{n_frames} frame(s) of {rows}x{cols} at {dtype.itemsize * 8} bits; "
                "the file is truncated: re-export or re-transfer it",
                path=path,
            )
        arr = np.frombuffer(raw, dtype=dtype, count=rows * cols * n_frames)
        return arr.reshape(n_frames, rows, cols)
    check_declared_size(ds, path)
    if not can_decode(transfer_syntax):
        raise IngestError(
            f"no decoder installed for transfer syntax {transfer_syntax_name(transfer_syntax)}; "
            "install pylibjpeg with its openjpeg/libjpeg/rle plugins or python-gdcm",
            path=path,
        )
    try:
        arr = pixel_array(ds, decoding_plugin=decoding_plugin(transfer_syntax))
    except Exception as exc:  # decoder plugins raise many different types
        raise IngestError(
            f"could not decode the pixel data ({transfer_syntax_name(transfer_syntax)}): {exc}",
            path=path,
        ) from exc
    return np.asarray(arr).reshape(n_frames, rows, cols)


def read_native_frames(
    ds: Dataset, path: Path, offset: int, length: int
) -> npt.NDArray[np.generic]:
    """Read the frames of a native little-endian file straight from disk.

    Only for datasets where :func:`native_layout_ok` holds; the header was
    parsed without the pixel data, so nothing but the frames is read here and
    no copy of the file is kept in memory.

    Parameters
    ----------
    ds
        The header (Rows, Columns, NumberOfFrames, BitsAllocated, PixelRepresentation).
    path
        The file.
    offset, length
        File offset and byte length of the PixelData value.

    Returns
    -------
    numpy.ndarray
        ``(frames, rows, columns)`` stored values.

    Raises
    ------
    IngestError
        The file is shorter than its PixelData element says.
    """
    rows, cols = raw_us(ds, ROWS, 0), raw_us(ds, COLUMNS, 0)
    n_frames = number_of_frames(ds)
    dtype = stored_dtype(ds, path=path).newbyteorder("<")
    count = rows * cols * n_frames
    expected = count * dtype.itemsize
    if length < expected:
        raise IngestError(
            f"PixelData holds {length} bytes, expected {expected} for {n_frames} frame(s) of "
            f"{rows}x{cols} at {dtype.itemsize * 8} bits; re-export or re-transfer the file",
            path=path,
        )
    try:
        arr = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    except OSError as exc:
        raise IngestError(f"cannot read the pixel data: {exc}", path=path) from exc
    if arr.size < count:
        raise IngestError(
            f"the file ends {expected - arr.size * dtype.itemsize} bytes before the end of its "
            "pixel data; the file is truncated: re-export or re-transfer it",
            path=path,
        )
    return arr.reshape(n_frames, rows, cols)
