"""Where log records and Python warnings go, and what they may contain.

The terminal shows a progress bar and a summary; everything else (the
package's INFO records, warnings from the libraries we call) belongs in a log
file, and on the terminal only when the user asks (``-v``). Warnings we expect
from our own calls are fixed where they arise or filtered exactly where the
library is called (see :mod:`monai_tumor.export.seg`); this module routes the
rest.

Records from other libraries are not trusted to be free of patient data:
pydicom's validation messages quote the offending value (``Invalid value for
VR PN: 'DOE^JOHN'``), so every quoted value in a third-party record is replaced
by ``[redacted]`` before it reaches any handler (:class:`QuotedValueRedactor`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = [
    "PACKAGE_LOGGER",
    "RUN_LOG_NAME",
    "QuotedValueRedactor",
    "ThirdPartyFilter",
    "routed_logging",
]

#: Name of the package's logger; records from any other logger are third-party.
PACKAGE_LOGGER = "monai_tumor"

#: File name of a run's log inside its output folder (``batch``, ``infer``).
RUN_LOG_NAME = "monai-tumor.log"

_QUOTED = re.compile(r"""'[^'\n]*'|"[^"\n]*\"""")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _is_ours(record: logging.LogRecord) -> bool:
    return record.name == PACKAGE_LOGGER or record.name.startswith(PACKAGE_LOGGER + ".")


class QuotedValueRedactor(logging.Filter):
    """Replace quoted values in third-party records by ``'[redacted]'``.

    The package's own records are written with patient identifiers already
    left out (hashes, file paths, UIDs); other libraries quote values they
    complain about, which may be a patient's name or ID.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 (logging API)
        if _is_ours(record):
            return True
        text = record.getMessage()
        record.msg = _QUOTED.sub("'[redacted]'", text)
        record.args = None
        return True


class ThirdPartyFilter(logging.Filter):
    """Let through the package's records at ``level`` and above, and nothing else."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 (logging API)
        return _is_ours(record) and record.levelno >= self.level


@contextmanager
def routed_logging(
    *,
    verbose: bool,
    log_file: Path | None = None,
    stream: TextIO | None = None,
) -> Iterator[Path | None]:
    """Route log records and Python warnings while one command runs.

    Parameters
    ----------
    verbose
        ``True``: every record at INFO and above (ours and the libraries',
        warnings included) also goes to the terminal. ``False``: the terminal
        gets only the package's own ERROR records; the command's summary says
        the rest.
    log_file
        File that receives every record at INFO and above (appended, so a
        resumed run keeps the earlier run's log); its folder is created.
        ``None``: no file.
    stream
        Terminal stream (default ``sys.stderr`` at entry).

    Yields
    ------
    pathlib.Path or None
        The log file, if any.

    Notes
    -----
    Python warnings are captured into the ``py.warnings`` logger
    (:func:`logging.captureWarnings`) for the duration. On exit the handlers
    are removed and closed and the root logger's level and warning capture
    are restored, so repeated runs in one process (tests, a service) neither
    stack handlers nor write to a closed stream.
    """
    root = logging.getLogger()
    previous_level = root.level
    redactor = QuotedValueRedactor()
    console = logging.StreamHandler(stream if stream is not None else sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if verbose:
        console.setLevel(logging.INFO)
    else:
        console.addFilter(ThirdPartyFilter(logging.ERROR))
    console.addFilter(redactor)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        file_handler.addFilter(redactor)
        handlers.append(file_handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield log_file
    finally:
        logging.captureWarnings(False)
        root.setLevel(previous_level)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
