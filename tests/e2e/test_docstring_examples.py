"""The Examples sections of the public entry points run, on the real data, as written.

Each entry point's docstring is collected with :mod:`doctest` and executed from the
repository root (the examples name ``bundles/<name>`` relatively, as a user in a checkout
would); every printed value must match. ``run_batch`` and ``load_bundle`` run a whole
bundle, hence this lives with the end-to-end tests.
"""

from __future__ import annotations

import doctest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monai_tumor.evaluation.metrics import evaluate
from monai_tumor.export.seg import write_dicom_seg
from monai_tumor.inference.bundle import load_bundle
from monai_tumor.ingest.reader import read_series
from monai_tumor.ingest.scan import scan_export
from monai_tumor.pipeline.batch import run_batch

REPO = Path(__file__).resolve().parents[2]

ENTRY_POINTS: list[Callable[..., Any]] = [
    read_series,
    scan_export,
    run_batch,
    load_bundle,
    write_dicom_seg,
    evaluate,
]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("function", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_examples_run(
    function: Callable[..., Any], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    tests = doctest.DocTestFinder(recurse=False).find(function, function.__name__, globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f"{function.__qualname__} has no Examples section"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in examples:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} example lines failed"
