"""The one exception hierarchy of monai_tumor.

Every error the package raises on purpose derives from :class:`MonaiTumorError`.
Messages say what was found, what was expected and what the user can do; where a
file is involved, its path is part of the message (never patient identifiers).

The CLI maps each class to a stable exit code (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "EXIT_CODES",
    "AnnotationError",
    "BundleError",
    "ConfigError",
    "ExportError",
    "IngestError",
    "InvalidSeriesError",
    "MonaiTumorError",
    "PacsError",
    "RadiomicsError",
    "RequestError",
    "UnsupportedInputError",
]


class MonaiTumorError(Exception):
    """Root of every error raised on purpose by monai_tumor.

    Parameters
    ----------
    message
        What was found, what was expected, and what the user can do.
    path
        The file or folder the error is about, if any. It is prepended to the
        message so that a batch log always names the offending input.
    """

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class IngestError(MonaiTumorError):
    """A file or folder could not be read (not DICOM, truncated, undecodable)."""


class InvalidSeriesError(IngestError):
    """A series was read but its geometry or content is not a valid volume.

    Examples: missing slices, non-uniform spacing, gantry tilt, duplicate
    positions with different pixels, mixed orientations.
    """


class AnnotationError(IngestError):
    """An annotation file (e.g. an LIDC-IDRI reader XML) is malformed or of another kind."""


class UnsupportedInputError(MonaiTumorError):
    """The input is valid but of a kind this project does not handle (e.g. SR, PR)."""


class BundleError(MonaiTumorError):
    """A MONAI bundle or model is missing, malformed or does not run."""


class ExportError(MonaiTumorError):
    """An output (NIfTI, DICOM SEG, report) could not be written."""


class PacsError(MonaiTumorError):
    """Talking to a PACS (DIMSE or DICOMweb) failed."""


class ConfigError(MonaiTumorError):
    """A configuration file, rule file or option is invalid."""


class RequestError(MonaiTumorError):
    """A client's request to the annotation server is refused (bad id, bad upload, no point).

    ``status`` is the HTTP status the server answers with (4xx, or 429/503 when busy).
    """

    def __init__(self, message: str, *, status: int = 400, path: str | Path | None = None) -> None:
        super().__init__(message, path=path)
        self.status = status


class RadiomicsError(MonaiTumorError):
    """Radiomics features of a lesion could not be computed (MIRP failed or gave no value)."""


#: Stable process exit codes used by the CLI, most specific class first.
EXIT_CODES: dict[type[MonaiTumorError], int] = {
    InvalidSeriesError: 11,
    IngestError: 10,
    UnsupportedInputError: 12,
    BundleError: 20,
    ExportError: 30,
    PacsError: 40,
    ConfigError: 50,
    RequestError: 60,
    RadiomicsError: 61,
    MonaiTumorError: 1,
}
