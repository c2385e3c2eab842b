from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from monai_tumor.cli.main import app
from monai_tumor.cli.scan_cmd import SERIES_COLUMNS, SKIPPED_LISTED
from monai_tumor.config import CACHE_ENV_VAR, default_index_path
from monai_tumor.errors import EXIT_CODES, ConfigError, IngestError
from tests.support.dicom_factory import lps_affine, write_series
from tests.support.folder_snapshot import snapshot
from tests.support.messy_export import MessyExport, build_messy_export

runner = CliRunner()


@pytest.fixture(scope="module")
def messy(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MessyExport:
    return build_messy_export(data_dir, tmp_path_factory.mktemp("messy") / "export")


def _output(result: object) -> str:
    text = getattr(result, "output", "")
    with contextlib.suppress(ValueError):  # older click: stderr not captured separately
        text += getattr(result, "stderr", "") or ""
    return text


@pytest.mark.realdata
def test_table_lists_series_and_skipped_without_identifiers(
    messy: MessyExport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    index = tmp_path / "index.sqlite"
    result = runner.invoke(
        app, ["scan", str(messy.root), "--index", str(index)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, _output(result)
    text = _output(result)
    assert "134" in text and "LOCALIZER" in text and "coronal" in text
    for reason in ("dicomdir", "truncated", "empty", "no_pixel_data", "duplicate_instance"):
        assert reason in text
    assert "RTSTRUCT" in text
    for value in messy.identifiers:
        assert value not in text
        assert value not in caplog.text


@pytest.mark.realdata
def test_json_output_parses(messy: MessyExport, tmp_path: Path) -> None:
    index = tmp_path / "index.sqlite"
    result = runner.invoke(
        app, ["scan", str(messy.root), "--index", str(index), "--json", "--no-progress"]
    )
    assert result.exit_code == 0, _output(result)
    data = json.loads(result.stdout)
    assert data["schema"] == "monai-tumor/scan/1"
    assert set(data) == {"schema", "export_dir", "index", "stats", "patients", "skipped"}
    series = [s for p in data["patients"] for st in p["studies"] for s in st["series"]]
    assert sorted(s["series_instance_uid"] for s in series) == sorted(messy.series)
    lung = next(s for s in series if s["number_of_slices"] == 134)
    assert lung["pixel_spacing"] == [0.9765625, 0.9765625]
    assert lung["slice_spacing"] == pytest.approx(3.0)
    assert lung["uniform"] is True and lung["orientation"] == "axial"
    assert lung["attributes"]["NumberOfSlices"] == 134
    reasons = {r["path"]: r["reason"] for r in data["skipped"]}
    assert reasons == {
        p.relative_to(messy.root).as_posix(): reason.value for p, reason in messy.junk.items()
    }
    for value in messy.identifiers:
        assert value not in result.stdout


def test_unusable_index_cache_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a-file"))
    result = runner.invoke(app, ["scan", str(export)])
    assert result.exit_code == EXIT_CODES[ConfigError]
    assert "--index" in _output(result) and CACHE_ENV_VAR in _output(result)
    assert list(export.iterdir()) == []


def test_default_index_is_in_the_cache_and_printed(
    small_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    before = snapshot(small_export)
    for _ in range(2):
        result = runner.invoke(
            app, ["scan", str(small_export), "--json", "--no-progress"], env={"COLUMNS": "250"}
        )
        assert result.exit_code == 0, _output(result)
        data = json.loads(result.stdout)
        assert Path(data["index"]) == default_index_path(small_export)
        assert Path(data["index"]).parent == tmp_path / "cache" / "index"
    assert data["stats"]["files_found"] == 3 and data["stats"]["files_parsed"] == 0
    assert snapshot(small_export) == before


def test_missing_folder_exit_code(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["scan", str(tmp_path / "nope"), "--index", str(tmp_path / "i.sqlite")]
    )
    assert result.exit_code == EXIT_CODES[IngestError]
    assert "not a folder" in _output(result)


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small") / "export"
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    write_series(root / "ct", np.zeros((8, 8, 3), dtype=np.int16), affine_lps=aff)
    return root


@pytest.mark.parametrize("verbose", [False, True])
def test_scan_writes_its_log_file_and_keeps_the_terminal_quiet(
    small_export: Path, tmp_path: Path, verbose: bool
) -> None:
    log = tmp_path / "logs" / "scan.log"
    args = ["scan", str(small_export), "--index", str(tmp_path / "i.sqlite"), "--no-progress"]
    result = runner.invoke(app, [*args, "--log-file", str(log), *(["-v"] if verbose else [])])
    assert result.exit_code == 0, _output(result)
    assert "1 series" in result.stdout  # the summary
    assert "INFO monai_tumor.ingest.scan: scanned" in log.read_text(encoding="utf-8")
    stderr = result.stderr
    if verbose:
        assert "INFO monai_tumor.ingest.scan: scanned" in stderr
    else:
        assert stderr == ""
        assert "INFO" not in result.stdout


@pytest.mark.realdata
@pytest.mark.parametrize("columns", [60, 80, 120, 250])
def test_series_table_leaves_out_columns_rather_than_squeezing_them(
    messy: MessyExport, tmp_path: Path, columns: int
) -> None:
    index = tmp_path / "index.sqlite"
    args = ["scan", str(messy.root), "--index", str(index), "--no-progress"]
    result = runner.invoke(app, args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, _output(result)
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    header = next(line for line in lines if line.startswith("┃"))
    shown = [cell.strip() for cell in header.strip("┃").split("┃")]
    # every column shown is whole (its header is not cut); these are never left out
    assert set(shown) <= set(SERIES_COLUMNS)
    assert {"patient", "#", "mod", "kind", "slices"} <= set(shown)
    hidden = [name for name in SERIES_COLUMNS if name not in shown]
    text = " ".join(result.stdout.split())
    if hidden:
        assert f"not shown on {columns} columns:" in text
        for name in hidden:
            assert name in text.split("not shown on", 1)[1]
    else:
        assert "not shown on" not in text
    assert (columns >= 250) == (not hidden)


@pytest.mark.parametrize("junk", [3, SKIPPED_LISTED + 5])
def test_many_skipped_files_are_counted_per_reason(
    small_export: Path, tmp_path: Path, junk: int
) -> None:
    export = tmp_path / "export"
    shutil.copytree(small_export, export)
    for k in range(junk):
        (export / f"notes-{k:02d}.txt").write_text("not DICOM", encoding="utf-8")
    args = ["scan", str(export), "--index", str(tmp_path / "i.sqlite"), "--no-progress"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, _output(result)
    text = result.stdout
    assert f"{junk} skipped (not_dicom: {junk})" in text
    if junk <= SKIPPED_LISTED:
        assert all(f"notes-{k:02d}.txt" in text for k in range(junk))
    else:
        assert f"Skipped files ({junk}; --json lists every one)" in text
        assert "notes-00.txt" in text and f"notes-{junk - 1:02d}.txt" not in text
        row = next(line for line in text.splitlines() if "not_dicom" in line and "│" in line)
        assert [c.strip() for c in row.strip("│").split("│")][:2] == ["not_dicom", str(junk)]


MARKUP_LIKE = "T1 [post] [red]gd[/] [/b]"


@pytest.fixture(scope="module")
def bracketed_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A series whose folder path and description look like rich markup.

    The path holds ``export [/b] [red]x``: a folder ``export [`` with a folder ``b] [red]x``
    in it (a closing tag that matches nothing made rich raise).
    """
    root = tmp_path_factory.mktemp("brackets") / "export [" / "b] [red]x"
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    for path in write_series(root / "mr", np.zeros((8, 8, 3), dtype=np.int16), affine_lps=aff):
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = MARKUP_LIKE
        ds.save_as(path)
    (root / "notes [red].txt").write_text("not DICOM", encoding="utf-8")
    return root


def test_names_and_header_text_are_shown_as_they_are(
    bracketed_export: Path, tmp_path: Path
) -> None:
    """Brackets in folder names or descriptions are text, never markup (nor a crash)."""
    args = ["scan", str(bracketed_export), "--index", str(tmp_path / "i.sqlite")]
    result = runner.invoke(app, [*args, "--no-progress"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, _output(result)
    assert MARKUP_LIKE in result.stdout
    assert "export [/b] [red]x" in " ".join(result.stdout.split())
    assert "notes [red].txt" in result.stdout


def test_an_error_naming_a_bracketed_path_is_printed_whole(tmp_path: Path) -> None:
    missing = tmp_path / "gone [" / "b] [red]"
    result = runner.invoke(app, ["scan", str(missing), "--index", str(tmp_path / "i.sqlite")])
    assert result.exit_code == EXIT_CODES[IngestError], _output(result)
    assert "gone [/b] [red]" in " ".join(_output(result).split())
