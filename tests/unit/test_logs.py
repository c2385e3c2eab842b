"""monai_tumor.logs: the terminal stays quiet, the log file gets the rest, no quoted values."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import pytest

from monai_tumor.logs import routed_logging


def _emit() -> None:
    logging.getLogger("monai_tumor.pipeline.batch").info("series series-1 done in 1.0 s")
    logging.getLogger("monai_tumor.pipeline.batch").error("series series-2 failed: IngestError")
    logging.getLogger("pydicom").warning("Invalid value for VR PN: 'DOE^JOHN'.")
    warnings.warn("Setting affine, but the applied meta contains an affine.", stacklevel=1)


@pytest.mark.parametrize("verbose", [False, True])
def test_terminal_and_log_file(tmp_path: Path, verbose: bool) -> None:
    terminal = io.StringIO()
    log = tmp_path / "out" / "monai-tumor.log"
    handlers_before = list(logging.getLogger().handlers)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with routed_logging(verbose=verbose, log_file=log, stream=terminal):
            _emit()
    shown, written = terminal.getvalue(), log.read_text()
    # The file has everything, library warnings included, with quoted values redacted.
    for text in ("series-1 done", "series-2 failed", "Setting affine", "VR PN"):
        assert text in written
    assert "DOE" not in written and "JOHN" not in written and "'[redacted]'" in written
    # The terminal: only the package's own errors, unless -v.
    assert "series-2 failed" in shown
    assert ("Setting affine" in shown) is verbose
    assert ("series-1 done" in shown) is verbose
    assert "DOE" not in shown
    # Nothing left behind: no handler, no warning capture.
    assert logging.getLogger().handlers == handlers_before
    assert warnings.showwarning.__module__ != "logging"


def test_without_a_log_file_nothing_is_written(tmp_path: Path) -> None:
    terminal = io.StringIO()
    with routed_logging(verbose=False, stream=terminal) as log:
        _emit()
    assert log is None
    assert terminal.getvalue().strip().splitlines() == [
        "ERROR monai_tumor.pipeline.batch: series series-2 failed: IngestError"
    ]
