"""Run report: summary.csv, summary.json, index.html (escaped, atomic, self-contained)."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from monai_tumor.pipeline.report import (
    CSV_COLUMNS,
    SERIES_COLUMNS,
    SUMMARY_SCHEMA,
    read_summary,
    write_report,
)
from monai_tumor.report.table import Column, histogram_svg


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


def test_html_is_escaped_self_contained_and_links_outputs(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    write_report(tmp_path, rows)
    text = (tmp_path / "index.html").read_text()
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    assert "<b>axial</b>" not in text
    parser = _Collect()
    parser.feed(text)
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert images == ["study-aaaa/series-1/overlay.png"]
    links = {a["href"] for t, a in parser.tags if t == "a"}
    assert "study-aaaa/series-1/lesions.json" in links
    assert "study-aaaa/series-1/seg.dcm" not in links  # only existing outputs are linked
    # One script, the page's own (table sorting and filtering), inline: nothing external.
    scripts = [a for t, a in parser.tags if t == "script"]
    assert scripts == [{}]
    assert "monaiTumorReport" in text
    assert not [a for _, attrs in parser.tags for a in attrs.values() if a and "//" in a]
    assert "17.0" in text and "(10.0, -20.0, 30.5)" in text  # lesion measurements shown


def test_rewrite_replaces_previous_report(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    write_report(tmp_path, rows[:1])
    write_report(tmp_path, rows)
    assert len(read_summary(tmp_path)["series"]) == 4


def test_series_table_plots_and_viewer_column(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    folder = tmp_path / "study-aaaa" / "series-1"
    (folder / "viewer.html").write_text("<!DOCTYPE html>")
    viewer = {"bytes": 2_500_000, "lesions_at_edge": 1, "steps": [1, 1, 1], "shape": [4, 4, 4]}
    (folder / "manifest.json").write_text(json.dumps({"viewer": viewer}))
    write_report(tmp_path, rows)
    text = (tmp_path / "index.html").read_text()
    parser = _Collect()
    parser.feed(text)
    heads = [a.get("data-key") for t, a in parser.tags if t == "th" and a.get("data-key")]
    assert heads == [c.key for c in SERIES_COLUMNS]
    assert "study-aaaa/series-1/viewer.html" in {a["href"] for t, a in parser.tags if t == "a"}
    assert "3D viewer display copies: 2.5 MB" in text
    assert "<td data-value='1'>1</td>" in text  # one lesion at the volume's edge
    assert text.count("<figure class='plot'><svg") == 2  # lesion volumes, time per series
    assert "lesion volumes (n = 1)" in text and "time per series (n = 1)" in text


def test_series_table_takes_more_columns(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    flag = Column("review", "review", "text", lambda r: "check" if r["status"] == "done" else "")
    write_report(tmp_path, rows, columns=(*SERIES_COLUMNS, flag))
    text = (tmp_path / "index.html").read_text()
    assert "data-key='review'" in text and "<td data-value='check'>check</td>" in text


def test_histogram_svg() -> None:
    svg = histogram_svg([0.01, 0.1, 1.0, 10.0, float("nan"), -1.0], title="v", unit="mL", log=True)
    assert svg.count("<rect") == 12 and "(n = 4)" in svg and "log scale" in svg
    assert "nothing to plot" in histogram_svg([], title="t", unit="s")


def test_review_flag_and_reasons_in_every_summary(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    reasons = ["92% of the segmented voxels lie within 3 mm of the brain's outer rim <rim>"]
    rows[0] = {**rows[0], "review": True, "review_reasons": reasons}
    write_report(tmp_path, rows)
    with open(tmp_path / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["review"] == "true" and table[0]["review_reasons"] == reasons[0]
    assert table[1]["review"] == "false" and table[1]["review_reasons"] == ""
    series = read_summary(tmp_path)["series"]
    assert series[0]["review"] is True and series[0]["review_reasons"] == reasons
    text = (tmp_path / "index.html").read_text()
    assert "REVIEW" in text and "needs review: 1" in text
    assert "brain&#x27;s outer rim &lt;rim&gt;" in text
