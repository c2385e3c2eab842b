"""Benchmark: pulling a real CT study from Orthanc over DICOMweb.

The study is the real LUNG1-001 chest CT (134 slices of 512 x 512, plus its RTSTRUCT) from
``$MONAI_TUMOR_DATA/lung1``, loaded with dcmtk's ``storescu`` into Debian's Orthanc with
its DICOMweb plugin, started on loopback exactly as the tests start it (authentication on).

Compared in the same run (median of N runs, each into an empty cache unless "warm"):

* ``pull_studies`` cold: QIDO-RS series search, WADO-RS metadata of every image series,
  selection with ``bundles/lung_nodule_ct``'s rules, then the selected series in one
  streamed WADO-RS request, each instance written atomically into the cache as it arrives;
* ``pull_studies`` warm: the same with every instance already cached (a rerun: only QIDO
  and metadata travel);
* the obvious alternative: dicomweb-client's ``retrieve_series`` (one multipart request for
  the whole series, all instances decoded in memory) then written to files; no selection,
  no resume.

Usage::

    .venv/bin/python benchmarks/bench_pacs.py [--runs 3]

Writes ``benchmarks/results/pacs.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from _common import data_label, run_info  # noqa: E402
from dicomweb_client.api import DICOMwebClient  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402
from monai_tumor.ingest.selection import load_rules  # noqa: E402
from monai_tumor.pacs import DicomwebClient, DicomwebConfig, InstanceCache, pull_studies  # noqa: E402
from tests.support.orthanc_server import PASSWORD, USER, OrthancServer  # noqa: E402

RULES = ROOT / "bundles" / "lung_nodule_ct" / "configs" / "series_selection.json"


def _median(fn: Callable[[], Any], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = data_root()
    case = data / "lung1" / "LUNG1-001"
    files = sorted(p for p in case.rglob("*.dcm") if p.is_file())
    ct_files = sorted((case / "image").rglob("*.dcm"))
    ct_bytes = sum(p.stat().st_size for p in ct_files)
    rules = load_rules(RULES)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = OrthancServer(tmp / "orthanc").start()
        try:
            server.load(files)
            from pydicom import dcmread

            study_uid = str(dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID)
            series_uid = str(dcmread(ct_files[0], stop_before_pixels=True).SeriesInstanceUID)
            config = DicomwebConfig(server.dicomweb_url, username=USER, password=PASSWORD)
            client = DicomwebClient(config)
            counter = iter(range(10_000))

            def cold() -> None:
                cache = InstanceCache(tmp / f"cold{next(counter)}")
                result = pull_studies(client, [study_uid], rules=rules, cache=cache)
                assert result.fetched == len(ct_files), result
                shutil.rmtree(cache.root)

            warm_cache = InstanceCache(tmp / "warm")
            pull_studies(client, [study_uid], rules=rules, cache=warm_cache)

            def warm() -> None:
                result = pull_studies(client, [study_uid], rules=rules, cache=warm_cache)
                assert result.fetched == 0 and result.cached == len(ct_files)

            session = requests.Session()
            session.auth = (USER, PASSWORD)
            plain = DICOMwebClient(server.dicomweb_url, session=session)

            def alternative() -> None:
                out = tmp / f"plain{next(counter)}"
                out.mkdir()
                datasets = plain.retrieve_series(study_uid, series_uid)
                for ds in datasets:
                    ds.save_as(out / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
                assert len(datasets) == len(ct_files)
                shutil.rmtree(out)

            rows: list[dict[str, Any]] = []
            for name, fn in (
                ("pull_studies, cold cache (select on metadata, streamed series WADO-RS)", cold),
                ("pull_studies, warm cache (rerun: QIDO + metadata only)", warm),
                ("dicomweb-client retrieve_series + write (no selection, no resume)", alternative),
            ):
                median, times = _median(fn, args.runs)
                rows.append({"method": name, "median_s": median, "runs_s": times})
        finally:
            server.stop()
    base = float(rows[2]["median_s"])
    for row in rows:
        row["ratio_to_retrieve_series"] = row["median_s"] / base
        row["mb_per_s"] = ct_bytes / 1e6 / row["median_s"]
    result = {
        **run_info(),
        "input": data_label(case, data),
        "instances": len(ct_files),
        "megabytes": ct_bytes / 1e6,
        "runs": args.runs,
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / "pacs.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| method | median s | MB/s | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['median_s']:.2f} | {row['mb_per_s']:.0f} "
            f"| {row['ratio_to_retrieve_series']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
