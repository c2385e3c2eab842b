"""Defined terms used while scanning an export, as ``str`` enums.

The slice-plane enum (:class:`monai_tumor.geometry.Orientation`) lives with the
geometry and is reused here, not redefined.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ExecutorKind", "FileKind", "ImageKind", "SkipReason"]


class ImageKind(str, Enum):
    """What an image is, from ImageType (0008,0008).

    ``ORIGINAL``/``DERIVED`` come from the first value; ``LOCALIZER`` wins over
    both when any later value is ``LOCALIZER`` (a scout / survey view, never a
    volume to segment).
    """

    ORIGINAL = "ORIGINAL"
    DERIVED = "DERIVED"
    LOCALIZER = "LOCALIZER"
    UNKNOWN = "UNKNOWN"


class FileKind(str, Enum):
    """How a scanned file is recorded in the index."""

    #: An image instance (single- or multi-frame) that belongs to a series.
    IMAGE = "image"
    #: Not an image but useful later (RTSTRUCT, DICOM SEG): kept with its references.
    NON_IMAGE = "non_image"
    #: Not usable; see :class:`SkipReason`.
    SKIPPED = "skipped"


class SkipReason(str, Enum):
    """Why a file found in an export is not part of any image series."""

    #: Zero-byte file.
    EMPTY = "empty"
    #: Not a DICOM Part 10 file (no ``DICM`` prefix and no plausible dataset).
    NOT_DICOM = "not_dicom"
    #: The file ends inside its header (a partial copy or interrupted transfer).
    TRUNCATED = "truncated"
    #: DICOM that cannot be parsed, or lacks the UIDs every instance must have.
    CORRUPT = "corrupt"
    #: The file could not be opened (permissions, I/O error).
    UNREADABLE = "unreadable"
    #: A media directory (DICOMDIR): an index of other files, not an instance.
    DICOMDIR = "dicomdir"
    #: A SOP class this project does not read (SR, presentation state, RT plan, ...).
    UNSUPPORTED_SOP_CLASS = "unsupported_sop_class"
    #: An image SOP class without Pixel Data.
    NO_PIXEL_DATA = "no_pixel_data"
    #: A second copy of an instance already indexed (same SOPInstanceUID).
    DUPLICATE_INSTANCE = "duplicate_instance"


class ExecutorKind(str, Enum):
    """How header parsing is spread over CPU cores."""

    #: A process pool: parsing is pure Python, so processes scale with cores.
    PROCESS = "process"
    #: A thread pool: overlaps I/O only (the GIL serialises parsing).
    THREAD = "thread"
    #: Parse in the calling thread.
    SERIAL = "serial"
