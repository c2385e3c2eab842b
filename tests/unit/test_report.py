"""Run report: summary.csv, summary.json, index.html (escaped, atomic, self-contained)."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from monai_tumor.pipeline.report import CSV_COLUMNS, SUMMARY_SCHEMA, read_summary, write_report


def _row(key: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "study_key": "study-aaaa",
        "series_key": key,
        "study_instance_uid": "1.2.3",
        "series_instance_uid": f"1.2.3.{key[-1]}",
        "modality": "CT",
        "series_number": 3,
        "series_description": "chest <b>axial</b>",
        "number_of_slices": 40,
        "status": status,
        "reason": "",
        "folder": None,
        "reused": False,
        "inputs": {},
        "lesion_count": None,
        "total_volume_ml": None,
        "largest_diameter_mm": None,
        "seconds": None,
        "error_type": None,
        **extra,
    }


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture
def rows(tmp_path: Path) -> list[dict[str, Any]]:
    folder = tmp_path / "study-aaaa" / "series-1"
    folder.mkdir(parents=True)
    (folder / "overlay.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "mask.nii.gz").write_bytes(b"")
    lesion = {
        "index": 1,
        "volume_ml": 1.25,
        "diameter_3d_mm": 17.0,
        "diameter_axial_mm": 15.5,
        "centroid_lps_mm": [10.0, -20.0, 30.5],
        "intensity_mean": 20.0,
        "intensity_max": 80.0,
        "intensity_unit": "HU",
        "first_slice": 4,
        "last_slice": 9,
    }
    (folder / "lesions.json").write_text(json.dumps({"lesions": [lesion]}))
    return [
        _row(
            "series-1",
            "done",
            folder="study-aaaa/series-1",
            lesion_count=1,
            total_volume_ml=1.25,
            largest_diameter_mm=17.0,
            seconds=2.5,
            reason="SEG written",
        ),
        _row("series-2", "skipped", reason="not selected (ct: Modality 'MR' does not match)"),
        _row("series-3", "failed", reason="EXPORT/a: <script>alert(1)</script>"),
        _row("series-4", "pending"),
    ]


def test_three_files_consistent(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    paths = write_report(tmp_path, rows, run_info={"bundle": {"bundle": "x"}, "skipped_files": 3})
    assert [p.name for p in paths] == ["summary.csv", "summary.json", "index.html"]
    summary = read_summary(tmp_path)
    assert summary["schema"] == SUMMARY_SCHEMA
    assert summary["counts"] == {"done": 1, "failed": 1, "skipped": 1, "pending": 1}
    assert [r["series_key"] for r in summary["series"]] == [r["series_key"] for r in rows]
    with open(tmp_path / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [r["status"] for r in table] == ["done", "skipped", "failed", "pending"]
    assert table[0]["total_volume_ml"] == "1.2500" and table[0]["reused"] == "false"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporaries left


def test_html_is_escaped_static_and_links_outputs(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    write_report(tmp_path, rows)
    text = (tmp_path / "index.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<b>axial</b>" not in text
    parser = _Collect()
    parser.feed(text)
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert images == ["study-aaaa/series-1/overlay.png"]
    links = {a["href"] for t, a in parser.tags if t == "a"}
    assert "study-aaaa/series-1/lesions.json" in links
    assert "study-aaaa/series-1/seg.dcm" not in links  # only existing outputs are linked
    assert not any(t == "script" for t, _ in parser.tags)
    assert "17.0" in text and "(10.0, -20.0, 30.5)" in text  # lesion measurements shown


def test_rewrite_replaces_previous_report(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    write_report(tmp_path, rows[:1])
    write_report(tmp_path, rows)
    assert len(read_summary(tmp_path)["series"]) == 4
