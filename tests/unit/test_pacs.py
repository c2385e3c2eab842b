"""monai_tumor.pacs without a server: settings, retries, the instance cache, the outbox.

The servers themselves (Orthanc, dcmtk, the fault proxy) are exercised in
tests/e2e/test_pacs_dicomweb.py and tests/e2e/test_pacs_dimse.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from typer.testing import CliRunner

from monai_tumor.cli.main import app
from monai_tumor.errors import ConfigError, PacsError
from monai_tumor.pacs import (
    DicomNode,
    DicomwebConfig,
    InstanceCache,
    Outbox,
    RetryPolicy,
    TransientPacsError,
    parse_node,
    parse_query,
    read_study_list,
    safe_uid,
    with_retries,
)
from tests.support.dicom_factory import write_series


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("ORTHANC@10.0.0.5:4242", DicomNode("ORTHANC", "10.0.0.5", 4242)),
        (" PACS@pacs.example.org:104 ", DicomNode("PACS", "pacs.example.org", 104)),
        ("A@[::1]:11112", DicomNode("A", "::1", 11112)),
    ],
)
def test_parse_node(text: str, node: DicomNode) -> None:
    assert parse_node(text) == node


@pytest.mark.parametrize(
    "text", ["ORTHANC@host", "host:4242", "WAY_TOO_LONG_AE_TITLE@h:1", "A@h:70000", "A\\B@h:1"]
)
def test_parse_node_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_node(text)


def test_retry_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, backoff_seconds=2, max_backoff_seconds=10)
    assert [policy.delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


def test_with_retries_waits_with_backoff_then_succeeds() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientPacsError("HTTP 503 from the server")
        return "ok"

    policy = RetryPolicy(attempts=4, backoff_seconds=0.5)
    assert with_retries(flaky, policy=policy, what="x", sleep=waits.append) == "ok"
    assert waits == [0.5, 1.0]


def test_with_retries_gives_up_with_a_clear_error_and_never_retries_final_errors() -> None:
    waits: list[float] = []

    def down() -> None:
        raise TransientPacsError("ConnectionError: refused")

    with pytest.raises(PacsError, match=r"WADO-RS at u failed 3 times, last: ConnectionError"):
        with_retries(down, policy=RetryPolicy(attempts=3), what="WADO-RS at u", sleep=waits.append)
    assert len(waits) == 2

    def refused() -> None:
        raise PacsError("HTTP 401")

    with pytest.raises(PacsError, match="HTTP 401"):
        with_retries(refused, policy=RetryPolicy(attempts=3), what="x", sleep=waits.append)
    assert len(waits) == 2


def test_dicomweb_config_checks_and_hides_credentials(tmp_path: Path) -> None:
    assert DicomwebConfig("https://u:p@pacs/dicom-web").safe_url == "https://pacs/dicom-web"
    with pytest.raises(ConfigError, match="http"):
        DicomwebConfig("pacs/dicom-web")
    with pytest.raises(ConfigError, match="both"):
        DicomwebConfig("http://pacs", username="u")
    with pytest.raises(ConfigError, match="not both"):
        DicomwebConfig("http://pacs", username="u", password="p", token="t")
    with pytest.raises(ConfigError, match="CA bundle"):
        DicomwebConfig("https://pacs", ca_bundle=tmp_path / "missing.pem")


def test_uids_from_a_server_never_become_paths() -> None:
    assert safe_uid("1.2.840.10008.1") == "1.2.840.10008.1"
    for bad in ("../etc", "1.2/3", "", ".."):
        with pytest.raises(PacsError):
            safe_uid(bad)


def test_query_and_study_list(tmp_path: Path) -> None:
    assert parse_query(["ModalitiesInStudy=MR", "StudyDate = 2024-2025"]) == {
        "ModalitiesInStudy": "MR",
        "StudyDate": "2024-2025",
    }
    with pytest.raises(ConfigError):
        parse_query(["=MR"])
    plain = tmp_path / "plain.csv"
    plain.write_text("1.2.3\n1.2.4\n1.2.3\n", encoding="utf-8")
    assert read_study_list(plain) == ["1.2.3", "1.2.4"]
    bad = tmp_path / "bad.csv"
    bad.write_text("StudyInstanceUID\n../x\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        read_study_list(bad)


def _instance(tmp_path: Path) -> Path:
    stored = np.zeros((4, 4, 1), dtype=np.int16)
    (path,) = write_series(tmp_path / "series", stored, affine_lps=np.eye(4))
    return path


def test_cache_writes_atomically_and_keeps_the_first_copy(tmp_path: Path) -> None:
    cache = InstanceCache(tmp_path / "cache")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("connection cut")

    with pytest.raises(OSError):
        cache.write("1.2", "1.3", "1.4", broken)
    assert not cache.has("1.2", "1.3", "1.4")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []

    path = cache.write("1.2", "1.3", "1.4", lambda tmp: tmp.write_bytes(b"first"))
    cache.write("1.2", "1.3", "1.4", lambda tmp: tmp.write_bytes(b"second"))
    assert path.read_bytes() == b"first"

    received = tmp_path / "received.dcm"
    received.write_bytes(b"again")
    assert cache.adopt("1.2", "1.3", "1.4", received) == (path, False)
    assert not received.exists() and path.read_bytes() == b"first"


def test_outbox_keeps_what_failed_and_never_resends_what_was_accepted(tmp_path: Path) -> None:
    source = _instance(tmp_path)
    sop = str(dcmread(source).SOPInstanceUID)
    outbox = Outbox(tmp_path / "outbox", "PACS@h:1")
    assert outbox.put(source)

    def down(_paths: Sequence[Path]) -> None:
        raise PacsError("C-STORE to PACS@h:1 failed 6 times")

    delivery = outbox.flush(down)
    assert not delivery.ok and delivery.failed[0][0] == sop
    assert [p.stem for p in outbox.pending()] == [sop]

    sent: list[Path] = []
    assert outbox.flush(sent.extend).sent == (sop,)
    assert outbox.pending() == [] and outbox.was_sent(sop)
    assert not outbox.put(source)  # accepted before: not queued again
    assert outbox.flush(sent.extend).sent == () and len(sent) == 1


def test_batch_needs_exactly_one_source(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["batch", "--bundle", str(tmp_path), "--out", str(tmp_path / "out")]
    assert runner.invoke(app, base).exit_code == 50
    both = [*base, "--dicomweb", "http://pacs/dicom-web", "--dimse", "PACS@h:104"]
    result = runner.invoke(app, both)
    assert result.exit_code == 50 and "exactly one source" in result.output
