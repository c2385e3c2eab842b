"""Mutated real DICOM files: every one read or refused cleanly (monai_tumor.ingest.fuzz)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_tumor.errors import IngestError
from monai_tumor.ingest.fuzz import DEFECTS, SEED_FILES, Mutation, Outcome, check_file, make_case
from monai_tumor.ingest.reader import read_series

pytestmark = pytest.mark.realdata

#: Cases run in the test suite (the benchmark runs 100,000 and more).
CASES = 2000


def _seed(data_dir: Path, name: str) -> tuple[Path, pydicom.Dataset, bytes]:
    path = data_dir / name
    raw = path.read_bytes()
    return path, pydicom.dcmread(io.BytesIO(raw)), raw


@pytest.mark.parametrize("seed_file", [SEED_FILES[0], "dcm_qa_ts/In/9.dcm"])
def test_absurd_declared_size_is_refused_before_allocating(
    data_dir: Path, tmp_path: Path, seed_file: str
) -> None:
    # 65535 x 65535 x 999999 pixels declared, in a native and a JPEG 2000 file.
    path, template, raw = _seed(data_dir, seed_file)
    rng = np.random.default_rng(0)
    case = make_case(path, template, raw, rng, Mutation.HUGE_FRAMES)
    while "65535 x 65535" not in case.detail:
        case = make_case(path, template, raw, rng, Mutation.HUGE_FRAMES)
    target = tmp_path / "absurd.dcm"
    target.write_bytes(case.data)
    tracemalloc.start()
    try:
        with pytest.raises(IngestError, match=r"absurd\.dcm") as caught:
            read_series([target])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, f"{peak / 1024**2:.0f} MiB allocated before refusing"
    assert "65535x65535" in str(caught.value)


@pytest.mark.slow
def test_fuzzed_files_are_read_or_refused_cleanly(data_dir: Path, tmp_path: Path) -> None:
    from monai_tumor.ingest.fuzz import run_cases

    report = run_cases([data_dir / s for s in SEED_FILES], count=CASES, workdir=tmp_path, seed=2026)
    assert report.cases == CASES
    assert not report.defects, report.defects[:10]
    assert sum(report.outcomes.get(o.value, 0) for o in DEFECTS) == 0
    # The mutations do reach the reader: each outcome of a clean run occurs.
    for outcome in (Outcome.ACCEPTED, Outcome.SKIPPED, Outcome.REFUSED):
        assert report.outcomes[outcome.value] > 0


def test_check_file_names_what_it_refuses(data_dir: Path, tmp_path: Path) -> None:
    path, template, raw = _seed(data_dir, SEED_FILES[0])
    target = tmp_path / "bits.dcm"
    rng = np.random.default_rng(3)
    case = make_case(path, template, raw, rng, Mutation.ODD_BITS)
    target.write_bytes(case.data)
    outcome, message = check_file(target)
    assert outcome in {Outcome.REFUSED, Outcome.SKIPPED}, (outcome, message)
