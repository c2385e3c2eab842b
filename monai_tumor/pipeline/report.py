"""Run-level report of a batch: ``summary.csv``, ``summary.json``, ``index.html``.

:func:`write_report` is called after every series, so the three files always
describe what is finished; each is written atomically
(:mod:`monai_tumor.export.atomic`), so a run killed at any moment leaves a
valid report. ``index.html`` is static (no scripts, no external resources):
one section per study, one row per series with its status, reason, a thumbnail
of ``overlay.png`` and the measurements of each lesion from ``lesions.json``.

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_tumor.export.atomic import atomic_write_json, atomic_write_text
from monai_tumor.pipeline.records import SeriesRecord

__all__ = [
    "CSV_COLUMNS",
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
    "reused",
    "lesion_count",
    "total_volume_ml",
    "largest_diameter_mm",
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
"""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                _fmt(row.get(c), 4) if c != "reused" else str(bool(row.get(c))).lower()
                for c in CSV_COLUMNS
            ]
        )
    return buffer.getvalue()


def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(_STATUS_ORDER, 0)
    for row in rows:
        status = str(row.get("status", ""))
        counts[status] = counts.get(status, 0) + 1
    return counts


def _lesions(out_dir: Path, folder: str | None, cache: dict[str, Any]) -> list[dict[str, Any]]:
    """Lesions of a series' ``lesions.json`` (cached by path, size and mtime)."""
    if not folder:
        return []
    path = out_dir / folder / "lesions.json"
    try:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        hit = cache.get(str(path))
        if hit is not None and hit[0] == stamp:
            return list(hit[1])
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    lesions = payload.get("lesions") if isinstance(payload, dict) else None
    found = list(lesions) if isinstance(lesions, list) else []
    cache[str(path)] = (stamp, found)
    return found


def _lesion_table(lesions: Sequence[Mapping[str, Any]]) -> str:
    if not lesions:
        return "<p>no lesion</p>"
    head = (
        "<tr><th>#</th><th>volume (mL)</th><th>3D diameter (mm)</th><th>axial diameter (mm)"
        "</th><th>centroid LPS (mm)</th><th>mean / max</th><th>slices</th></tr>"
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
            "</tr>"
        )
    more = f"<p>... {len(lesions) - 20} more in lesions.json</p>" if len(lesions) > 20 else ""
    return f"<table class='lesions'>{head}{''.join(rows)}</table>{more}"


def _html(
    out_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    run_info: Mapping[str, Any],
    cache: dict[str, Any],
) -> str:
    esc = html.escape
    counts = _counts(rows)
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
        + f"<span>series: {len(rows)}</span>"
        + f"<span>files skipped by the scan: {esc(str(skipped_files))}</span></p>",
        "<p>Patient coordinates are DICOM LPS in mm. Thumbnails: radiological convention "
        "(patient right on the image left). Links open each series' outputs.</p>",
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
                + f"<div class='reason'>{esc(str(row.get('reason', '')))}</div>"
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
                f"<tr><td>{ident}</td><td>{state}</td><td>{thumb}</td><td>{measures}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(
    out_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    run_info: Mapping[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
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
        A dict kept by the caller between calls, so each ``lesions.json`` is
        read once per change rather than on every rewrite.

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
        out / "index.html", _html(out, rows, info, cache if cache is not None else {})
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
