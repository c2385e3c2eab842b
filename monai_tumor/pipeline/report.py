"""Run-level report of a batch: ``summary.csv``, ``summary.json``, ``index.html``.

:func:`write_report` is called after every series, so the three files always
describe what is finished; each is written atomically
(:mod:`monai_tumor.export.atomic`), so a run killed at any moment leaves a
valid report. ``index.html`` is one self-contained page (its small script and
plots inline, no external resources): summary plots (lesion volumes, time per
series), one sortable and filterable table of every series
(:data:`SERIES_COLUMNS`, built from :class:`monai_tumor.report.table.Column`,
so more columns are added without touching the page), links to each series'
3D viewer, and one section per study with the thumbnail of ``overlay.png`` and
the measurements of each lesion from ``lesions.json``. Every link is relative.

Rows carry only hashed folder keys, UIDs, series numbers, modalities and
descriptions already scrubbed of patient names and IDs; nothing here reads
patient identifiers.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_tumor.export.atomic import atomic_write_json, atomic_write_text
from monai_tumor.pipeline.records import SeriesRecord
from monai_tumor.report.assets import asset_bytes
from monai_tumor.report.table import Column, histogram_svg, render_table

__all__ = [
    "CSV_COLUMNS",
    "SERIES_COLUMNS",
    "SUMMARY_SCHEMA",
    "BatchReport",
    "read_summary",
    "write_report",
]

#: Identifier of the ``summary.json`` layout.
SUMMARY_SCHEMA = "monai-tumor/batch-summary/1"
#: Columns of ``summary.csv``, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "study_key",
    "series_key",
    "series_number",
    "modality",
    "series_description",
    "number_of_slices",
    "status",
    "reason",
    "review",
    "review_reasons",
    "reused",
    "lesion_count",
    "total_volume_ml",
    "largest_diameter_mm",
    "malignancy_probabilities",
    "malignancy_model",
    "seconds",
    "folder",
    "study_instance_uid",
    "series_instance_uid",
    "worker",
    "attempts",
)
_STATUS_ORDER = ("done", "failed", "skipped", "pending")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.3em .5em;vertical-align:top;font-size:.9em;text-align:left}
th{background:#eee}.done{color:#176317;font-weight:bold}.failed{color:#a11;font-weight:bold}
.skipped{color:#777}.pending{color:#a60}.reason{max-width:40em;word-break:break-word}
img.thumb{width:420px;background:#000}.lesions td{font-size:.8em}code{font-size:.85em}
.counts span{margin-right:1.5em}
table.series th{cursor:pointer}table.series td{font-size:.85em}
figure.plot{display:inline-block;margin:0 2em 0 0}figcaption{font-size:.85em;color:#444}
.review{color:#fff;background:#b35c00;font-weight:bold;padding:0 .3em}
"""


def _viewer_link(row: Mapping[str, Any]) -> str:
    folder, extra = row.get("folder"), row.get("_extra") or {}
    if not folder or not extra.get("viewer_bytes"):
        return ""
    href = html.escape(str(folder))
    return f"<a href='{href}/viewer.html'>3D viewer</a>"


def _series_cell(row: Mapping[str, Any]) -> str:
    text = html.escape(
        f"#{_fmt(row.get('series_number'))} {row.get('modality', '')} "
        f"{row.get('series_description', '')}"
    )
    key = html.escape(str(row.get("series_key", "")))
    return f"<a href='#{key}'>{text}</a>"


def _extra(row: Mapping[str, Any], key: str) -> Any:
    return (row.get("_extra") or {}).get(key)


def _viewer_mb(row: Mapping[str, Any]) -> float | None:
    size = _extra(row, "viewer_bytes")
    return None if size is None else float(size) / 1e6


#: Columns of the series table in ``index.html`` (sortable, filterable by ``key:value``).
#: Values come from the summary rows; ``row["_extra"]`` holds what the report reads from
#: each series' manifest (``viewer_bytes``, ``lesions_at_edge``).
SERIES_COLUMNS: tuple[Column, ...] = (
    Column("study", "study", "text", lambda r: r.get("study_key")),
    Column(
        "series",
        "series",
        "text",
        lambda r: f"{r.get('modality', '')} {r.get('series_description', '')}",
        cell=_series_cell,
    ),
    Column("status", "status", "text", lambda r: r.get("status")),
    Column("review", "needs review", "text", lambda r: "review" if r.get("review") else ""),
    Column("lesions", "lesions", "number", lambda r: r.get("lesion_count")),
    Column("volume", "volume (mL)", "number", lambda r: r.get("total_volume_ml"), digits=3),
    Column(
        "diameter",
        "largest 3D diameter (mm)",
        "number",
        lambda r: r.get("largest_diameter_mm"),
        digits=1,
    ),
    Column(
        "malignancy",
        "highest malignancy probability (research model)",
        "number",
        lambda r: max(r.get("malignancy_probabilities") or [], default=None),
    ),
    Column(
        "truncated",
        "lesions at the volume's edge",
        "number",
        lambda r: _extra(r, "lesions_at_edge"),
    ),
    Column("reused", "reused", "text", lambda r: bool(r.get("reused"))),
    Column("seconds", "time (s)", "number", lambda r: r.get("seconds"), digits=1),
    Column(
        "viewer",
        "viewer (MB)",
        "number",
        _viewer_mb,
        digits=1,
        cell=lambda r: (
            f"{_viewer_link(r)} {_fmt(_viewer_mb(r), 1)}" if _viewer_mb(r) is not None else ""
        ),
    ),
    Column("reason", "reason", "text", lambda r: r.get("reason")),
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return "; ".join(_fmt(v, digits) for v in value)
    return str(value)


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row, c) for c in CSV_COLUMNS])
    return buffer.getvalue()


def _csv_cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if column in ("reused", "review"):
        return str(bool(value)).lower()
    if column == "review_reasons":
        return " | ".join(str(r) for r in value or ())
    return _fmt(value, 4)


def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(_STATUS_ORDER, 0)
    for row in rows:
        status = str(row.get("status", ""))
        counts[status] = counts.get(status, 0) + 1
    return counts


def _cached_json(path: Path, cache: dict[str, Any], read: Callable[[Any], Any]) -> Any:
    """``read(json of path)``, cached by path, size and mtime; ``None`` if unreadable."""
    try:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        hit = cache.get(str(path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = read(payload)
    cache[str(path)] = (stamp, value)
    return value


def _lesion_list(payload: Any) -> list[dict[str, Any]]:
    lesions = payload.get("lesions") if isinstance(payload, dict) else None
    return list(lesions) if isinstance(lesions, list) else []


def _viewer_facts(manifest: Any) -> dict[str, Any]:
    viewer = manifest.get("viewer") if isinstance(manifest, dict) else None
    if not isinstance(viewer, dict):
        return {}
    return {"viewer_bytes": viewer.get("bytes"), "lesions_at_edge": viewer.get("lesions_at_edge")}


def _lesions(out_dir: Path, folder: str | None, cache: dict[str, Any]) -> list[dict[str, Any]]:
    """Lesions of a series' ``lesions.json`` (read once per change)."""
    if not folder:
        return []
    found = _cached_json(out_dir / folder / "lesions.json", cache, _lesion_list)
    return list(found or [])


def _manifest_extra(out_dir: Path, folder: str | None, cache: dict[str, Any]) -> dict[str, Any]:
    """Read what the table shows from a series' ``manifest.json`` (once per change)."""
    if not folder:
        return {}
    return dict(_cached_json(out_dir / folder / "manifest.json", cache, _viewer_facts) or {})


def _lesion_table(lesions: Sequence[Mapping[str, Any]]) -> str:
    if not lesions:
        return "<p>no lesion</p>"
    classified = any("malignancy_probability" in les for les in lesions)
    head = (
        "<tr><th>#</th><th>volume (mL)</th><th>3D diameter (mm)</th><th>axial diameter (mm)"
        "</th><th>centroid LPS (mm)</th><th>mean / max</th><th>slices</th>"
        + ("<th>malignancy probability</th>" if classified else "")
        + "</tr>"
    )
    notices = sorted(
        {
            f"{les['malignancy'].get('model', '')}: {les['malignancy'].get('notice', '')}"
            for les in lesions
            if isinstance(les.get("malignancy"), Mapping)
        }
    )
    rows = []
    for les in lesions[:20]:
        centroid = ", ".join(f"{float(v):.1f}" for v in les.get("centroid_lps_mm", []))
        rows.append(
            "<tr>"
            f"<td>{_fmt(les.get('index'))}</td>"
            f"<td>{_fmt(les.get('volume_ml'), 3)}</td>"
            f"<td>{_fmt(les.get('diameter_3d_mm'), 1)}</td>"
            f"<td>{_fmt(les.get('diameter_axial_mm'), 1)}</td>"
            f"<td>({html.escape(centroid)})</td>"
            f"<td>{_fmt(les.get('intensity_mean'), 1)} / {_fmt(les.get('intensity_max'), 1)} "
            f"{html.escape(str(les.get('intensity_unit', '')))}</td>"
            f"<td>{_fmt(les.get('first_slice'))}-{_fmt(les.get('last_slice'))}</td>"
            + (f"<td>{_fmt(les.get('malignancy_probability'), 2)}</td>" if classified else "")
            + "</tr>"
        )
    more = f"<p>... {len(lesions) - 20} more in lesions.json</p>" if len(lesions) > 20 else ""
    notice = "".join(f"<p class='notice'>{html.escape(n)}</p>" for n in notices)
    return f"<table class='lesions'>{head}{''.join(rows)}</table>{more}{notice}"


def _plots(out_dir: Path, rows: Sequence[Mapping[str, Any]], cache: dict[str, Any]) -> str:
    done = [r for r in rows if r.get("status") == "done" and r.get("folder")]
    volumes = [
        float(les["volume_ml"])
        for r in done
        for les in _lesions(out_dir, str(r["folder"]), cache)
        if isinstance(les.get("volume_ml"), int | float)
    ]
    seconds = [float(r["seconds"]) for r in done if isinstance(r.get("seconds"), int | float)]
    return (
        "<div class='plots'>"
        + histogram_svg(volumes, title="lesion volumes", unit="mL", log=True)
        + histogram_svg(seconds, title="time per series", unit="s")
        + "</div>"
    )


def _html(
    out_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    run_info: Mapping[str, Any],
    cache: dict[str, Any],
    columns: Sequence[Column] = SERIES_COLUMNS,
) -> str:
    esc = html.escape
    counts = _counts(rows)
    table_rows = [
        {**row, "_extra": _manifest_extra(out_dir, row.get("folder"), cache)}
        if row.get("status") == "done"
        else dict(row)
        for row in rows
    ]
    viewer_bytes = sum(
        int(r["_extra"].get("viewer_bytes") or 0) for r in table_rows if "_extra" in r
    )
    needs_review = sum(1 for row in rows if row.get("review"))
    skipped_files = run_info.get("skipped_files", 0)
    bundle = run_info.get("bundle") or {}
    title = "monai-tumor batch report"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><link rel='icon' href='data:,'>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<p>Bundle: <code>"
        + esc(" ".join(f"{k}={v}" for k, v in dict(bundle).items()))
        + "</code></p>",
        "<p class='counts'>"
        + "".join(f"<span class='{esc(k)}'>{esc(k)}: {v}</span>" for k, v in counts.items() if v)
        + (f"<span class='review'>needs review: {needs_review}</span>" if needs_review else "")
        + f"<span>series: {len(rows)}</span>"
        + f"<span>files skipped by the scan: {esc(str(skipped_files))}</span>"
        + f"<span>3D viewer display copies: {viewer_bytes / 1e6:.1f} MB</span></p>",
        "<p>Patient coordinates are DICOM LPS in mm. Thumbnails: radiological convention "
        "(patient right on the image left). Links open each series' outputs. The 3D viewer "
        "pages need WebGL2; if a browser refuses to open them from files, run "
        "<code>monai-tumor report serve</code> on this folder and open the address it "
        "prints.</p>",
        _plots(out_dir, rows, cache),
        "<h2>All series</h2>",
        render_table(table_rows, columns, table_id="series"),
    ]
    studies: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        studies.setdefault(str(row.get("study_key", "")), []).append(row)
    for key, members in studies.items():
        parts.append(f"<h2>Study {esc(key)}</h2><table>")
        parts.append("<tr><th>series</th><th>status</th><th>overlay</th><th>measurements</th></tr>")
        for row in members:
            status = str(row.get("status", ""))
            folder = row.get("folder")
            number = esc(_fmt(row.get("series_number")))
            modality = esc(str(row.get("modality", "")))
            description = esc(str(row.get("series_description", "")))
            skey = esc(str(row.get("series_key", "")))
            ident = (
                f"<b>#{number}</b> {modality} {description}<br><code>{skey}</code><br>"
                f"{esc(_fmt(row.get('number_of_slices')))} slices"
            )
            state = (
                f"<span class='{esc(status)}'>{esc(status)}</span>"
                + (" (reused)" if row.get("reused") else "")
                + (" <span class='review'>REVIEW</span>" if row.get("review") else "")
                + f"<div class='reason'>{esc(str(row.get('reason', '')))}</div>"
                + "".join(
                    f"<div class='reason'>review: {esc(str(r))}</div>"
                    for r in row.get("review_reasons") or ()
                )
            )
            thumb = measures = ""
            if status == "done" and folder:
                href = esc(str(folder))
                thumb = (
                    f"<a href='{href}/overlay.png'><img class='thumb' loading='lazy' "
                    f"src='{href}/overlay.png' alt='overlay'></a>"
                )
                links = " ".join(
                    f"<a href='{href}/{name}'>{label}</a>"
                    for name, label in (
                        ("viewer.html", "3D viewer"),
                        ("mask.nii.gz", "mask.nii.gz"),
                        ("seg.dcm", "seg.dcm"),
                        ("lesions.json", "lesions.json"),
                        ("manifest.json", "manifest.json"),
                    )
                    if (out_dir / str(folder) / name).exists()
                )
                measures = (
                    f"{esc(_fmt(row.get('lesion_count')))} lesion(s), "
                    f"{esc(_fmt(row.get('total_volume_ml'), 3))} mL total"
                    f"{_lesion_table(_lesions(out_dir, str(folder), cache))}<p>{links}</p>"
                )
            parts.append(
                f"<tr id='{skey}'><td>{ident}</td><td>{state}</td><td>{thumb}</td>"
                f"<td>{measures}</td></tr>"
            )
        parts.append("</table>")
    script = asset_bytes("report.js").decode("utf-8")
    parts.append(f"<script>{script}</script></body></html>\n")
    return "".join(parts)


def write_report(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    run_info: Mapping[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
    columns: Sequence[Column] = SERIES_COLUMNS,
) -> list[Path]:
    """Write ``summary.csv``, ``summary.json`` and ``index.html`` atomically.

    Parameters
    ----------
    out_dir
        The run's output folder; series folders in ``rows[i]["folder"]`` are
        relative to it.
    rows
        One JSON-ready dict per series
        (:meth:`monai_tumor.pipeline.batch.SeriesRecord.to_dict`).
    run_info
        Run-level facts (export, bundle provenance, times); no patient data.
    cache
        A dict kept by the caller between calls, so each ``lesions.json`` and
        ``manifest.json`` is read once per change rather than on every rewrite.
    columns
        Columns of the series table (default :data:`SERIES_COLUMNS`).

    Returns
    -------
    list of Path
        The three files, in the order above.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = dict(run_info or {})
    payload = {
        "schema": SUMMARY_SCHEMA,
        "run": info,
        "counts": _counts(rows),
        "series": [dict(r) for r in rows],
    }
    csv_path = atomic_write_text(out / "summary.csv", _csv_text(rows))
    json_path = atomic_write_json(out / "summary.json", payload)
    html_path = atomic_write_text(
        out / "index.html", _html(out, rows, info, cache if cache is not None else {}, columns)
    )
    return [csv_path, json_path, html_path]


def read_summary(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``summary.json`` of a run folder."""
    data: dict[str, Any] = json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))
    return data


class BatchReport:
    """The run-level report of a batch, kept by the client and rewritten as results come in.

    Holds one :class:`~monai_tumor.pipeline.records.SeriesRecord` per series in
    plan order; :meth:`update` replaces a series' record with its result and
    rewrites the three files (:func:`write_report`), so they always describe
    what is finished. Safe to call from several threads.

    Parameters
    ----------
    out_dir
        The run's output folder.
    records
        The planned records (every image series of the export).
    run_info
        Run-level facts for ``summary.json`` (export, bundle provenance, times;
        no patient data). ``started_utc`` is added if missing.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        records: Iterable[SeriesRecord],
        *,
        run_info: Mapping[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self._records = list(records)
        self._position = {r.series_instance_uid: i for i, r in enumerate(self._records)}
        self._run_info = dict(run_info or {})
        self._run_info.setdefault("started_utc", _utc_now())
        self._lesion_cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def records(self) -> tuple[SeriesRecord, ...]:
        """The current record of every series, in plan order."""
        with self._lock:
            return tuple(self._records)

    def set(self, records: Iterable[SeriesRecord]) -> None:
        """Replace records (by SeriesInstanceUID) without writing the files."""
        with self._lock:
            for record in records:
                self._records[self._position[record.series_instance_uid]] = record

    def update(self, record: SeriesRecord) -> None:
        """Replace one series' record (by SeriesInstanceUID) and rewrite the files."""
        with self._lock:
            self._records[self._position[record.series_instance_uid]] = record
            self._write()

    def write(self) -> list[Path]:
        """Rewrite ``summary.csv``, ``summary.json`` and ``index.html``; return their paths."""
        with self._lock:
            return self._write()

    def finish(self) -> list[Path]:
        """Stamp ``finished_utc`` into the run facts and write the files a last time."""
        with self._lock:
            self._run_info["finished_utc"] = _utc_now()
            return self._write()

    def _write(self) -> list[Path]:
        return write_report(
            self.out_dir,
            [r.to_dict() for r in self._records],
            run_info=self._run_info,
            cache=self._lesion_cache,
        )


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
