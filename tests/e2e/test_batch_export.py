"""The batch-test export (tests/support/batch_export.py) matches the scan, selection, reader.

The expectations handed to the batch tests are checked here against the
library pieces the batch is built from (scan_export, select_series with each
bundle's rules, read_series), without running a model: if these pass and a
batch run disagrees, the batch is wrong, not the fixture.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest

from monai_tumor.errors import IngestError
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.reader import read_series
from monai_tumor.ingest.scan import ScanResult, scan_export
from monai_tumor.ingest.selection import select_series
from tests.support.batch_export import (
    CT_BUNDLE,
    GLIOMA_BUNDLE,
    BatchExport,
    ExpectedOutcome,
    Outcome,
)

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def scanned(batch_export: BatchExport, tmp_path_factory: pytest.TempPathFactory) -> ScanResult:
    index = tmp_path_factory.mktemp("batch_index") / "index.sqlite"
    return scan_export(batch_export.root, index_path=index, progress=False)


def _reference(bundle: str) -> str:
    meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    return str(meta["monai_tumor"]["reference_input"])


def _observed(scan: ScanResult, bundle: str) -> dict[str, tuple[Outcome, str, str | None]]:
    """What the pieces say per series: (outcome, reason text, error type), before any model."""
    rules = BUNDLES / bundle / "configs" / "series_selection.json"
    reference = _reference(bundle)
    out: dict[str, tuple[Outcome, str, str | None]] = {}
    with SeriesIndex(scan.index_path) as index:
        for patient in scan.patients:
            for study in patient.studies:
                result = select_series(study.series, rules)
                chosen = result.selected
                for info in study.series:
                    uid = info.series_instance_uid
                    rejected = "; ".join(
                        f"{sel.name}: {r.reason}"
                        for sel in result.inputs.values()
                        for r in sel.rejected
                        if r.series_uid == uid
                    )
                    if not result.ok:
                        why = f"the study lacks required input {result.missing}: {rejected}"
                        out[uid] = (Outcome.MISSING_INPUT, why, None)
                    elif chosen.get(reference) == uid:
                        try:
                            for name in chosen:
                                read_series(index.files_for_series(chosen[name]))
                        except IngestError as exc:
                            out[uid] = (Outcome.READ_ERROR, str(exc), type(exc).__name__)
                        else:
                            out[uid] = (Outcome.DONE, "", None)
                    elif uid in chosen.values():
                        names = [n for n, u in chosen.items() if u == uid]
                        out[uid] = (Outcome.COMPANION_INPUT, f"input {names}", None)
                    else:
                        out[uid] = (Outcome.NOT_SELECTED, rejected, None)
    return out


def test_scan_finds_every_series_and_skips_the_junk(
    batch_export: BatchExport,
    scanned: ScanResult,
) -> None:
    found = {s.series_instance_uid: s for s in scanned.series}
    assert set(found) == {s.series_uid for s in batch_export.series.values()}
    for label, written in batch_export.series.items():
        info = found[written.series_uid]
        assert info.study_instance_uid == written.study_uid, label
        assert info.modality == written.modality, label
        assert info.number_of_instances == len(written.files), label
        assert info.decodable, label  # the corrupt series look fine to the scan
    skipped = {r.path: r.reason for r in scanned.skipped}
    assert skipped == {p.resolve(): reason for p, reason in batch_export.junk.items()}
    objects = {o.path: o for o in scanned.non_image_objects}
    for label, path in batch_export.rtstructs.items():
        assert objects[path.resolve()].modality == "RTSTRUCT"
        rs = pydicom.dcmread(path, stop_before_pixels=True)
        frame = rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
        assert frame == found[batch_export.uid(label)].attributes["FrameOfReferenceUID"]
    studies = {s.study_instance_uid for p in scanned.patients for s in p.studies}
    assert len(studies) == 5


@pytest.mark.parametrize("bundle", [CT_BUNDLE, GLIOMA_BUNDLE])
def test_expectations_follow_from_selection_and_reading(
    batch_export: BatchExport,
    scanned: ScanResult,
    bundle: str,
) -> None:
    expected = batch_export.expected(bundle, seeds_from_export=True)
    observed = _observed(scanned, bundle)
    assert set(observed) == set(expected)
    for uid, want in expected.items():
        outcome, reason, error_type = observed[uid]
        label = batch_export.label_of(uid)
        assert outcome is want.outcome, (label, reason)
        assert re.search(want.reason, reason, re.IGNORECASE), (label, want.reason, reason)
        assert error_type == want.error_type, label
        if outcome is Outcome.READ_ERROR:  # the error names the undecodable file
            assert any(p.name in reason for p in batch_export.corrupt_files), reason


def test_every_status_occurs_for_each_bundle(batch_export: BatchExport) -> None:
    for bundle in (CT_BUNDLE, GLIOMA_BUNDLE):
        expected = batch_export.expected(bundle, seeds_from_export=True)
        statuses = {e.status for e in expected.values()}
        assert statuses == {"done", "skipped", "failed"}, bundle
    unseeded = batch_export.expected(CT_BUNDLE, seeds_from_export=False)
    assert {e.status for e in unseeded.values()} == {"skipped"}
    assert sum(e.outcome is Outcome.NO_SEEDS for e in unseeded.values()) == 2


def test_outcome_categories_map_to_statuses() -> None:
    assert ExpectedOutcome(Outcome.DONE).status == "done"
    assert ExpectedOutcome(Outcome.READ_ERROR).status == "failed"
    skipped = set(Outcome) - {Outcome.DONE, Outcome.READ_ERROR}
    assert {ExpectedOutcome(o).status for o in skipped} == {"skipped"}
