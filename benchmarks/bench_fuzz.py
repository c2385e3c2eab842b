"""Benchmark: fuzzing the reader with mutated real DICOM files.

Each case is one real file of the shared data (``monai_tumor.ingest.fuzz.SEED_FILES``:
CT, MR and PET slices and one MR image in nine transfer syntaxes) with one mutation
(random bytes of the header flipped, the file cut short, Rows/Columns 65535,
NumberOfFrames 999999, BitsAllocated 7, NaN/inf positions, zero spacing, degenerate
orientation, an unknown transfer syntax, empty UIDs, random bytes in an image
attribute), read as an export is read: the header scan (``inspect_file``), then
``read_series`` on an image. Cases run in child processes with a per-case time
limit; a case over the limit is killed and counted as hung.

Reported: cases run, outcomes (accepted, skipped at scan time, refused with a
``MonaiTumorError`` naming the file) and defects (an error without the file's name,
any other exception, a volume with a non-finite affine, a dead or hung reader
process), which must all be zero, per mutation; wall time, cases/s, slowest case.

Usage::

    .venv/bin/python benchmarks/bench_fuzz.py [--cases 100000] [--workers 2] [--seed 0]

Writes ``benchmarks/results/fuzz.json`` and prints a markdown table. Run it niced
on a shared machine (``nice -n 10``): it keeps ``--workers`` cores busy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import run_info  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402
from monai_tumor.ingest.fuzz import DEFECTS, SEED_FILES, Outcome, run_cases  # noqa: E402


def _shard(args: tuple[int, int, int, float]) -> dict[str, Any]:
    count, seed, shard, limit = args
    seeds = [data_root() / s for s in SEED_FILES]
    with tempfile.TemporaryDirectory(prefix=f"fuzz{shard}-") as tmp:
        report = run_cases(
            seeds, count=count, workdir=Path(tmp), seed=seed * 1000 + shard, time_limit_s=limit
        )
    return report.to_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per case")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    args = parser.parse_args()

    # Many small shards, and the results file rewritten after each one: an interrupted
    # run still records every case it finished (``"complete": false``).
    shards = max(args.workers, 1) * 25
    per = [args.cases // shards + (1 if i < args.cases % shards else 0) for i in range(shards)]
    start = time.perf_counter()
    outcomes: Counter[str] = Counter()
    by_mutation: Counter[str] = Counter()
    defects: list[Any] = []
    cases = 0
    slowest = 0.0
    result: dict[str, Any] = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [
            pool.submit(_shard, (n, args.seed, i, args.time_limit)) for i, n in enumerate(per)
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            r = future.result()
            outcomes.update(r["outcomes"])
            by_mutation.update(r["by_mutation"])
            defects += r["defects"]
            cases += r["cases"]
            slowest = max(slowest, r["slowest_case_s"])
            wall = time.perf_counter() - start
            result = {
                **run_info(),
                "complete": done == len(futures),
                "cases_requested": args.cases,
                "cases": cases,
                "workers": args.workers,
                "seed": args.seed,
                "time_limit_s": args.time_limit,
                "seeds": list(SEED_FILES),
                "outcomes": dict(outcomes),
                "defect_count": sum(outcomes.get(o.value, 0) for o in DEFECTS),
                "by_mutation": dict(sorted(by_mutation.items())),
                "defects": defects[:200],
                "wall_s": round(wall, 1),
                "cases_per_s": round(cases / wall, 1),
                "slowest_case_s": slowest,
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    wall = time.perf_counter() - start

    mutations = sorted({k.split(":")[0] for k in by_mutation})
    columns = [o.value for o in Outcome]
    print("| mutation | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for m in mutations:
        row = [str(by_mutation.get(f"{m}:{c}", 0)) for c in columns]
        print(f"| {m} | " + " | ".join(row) + " |")
    total = [str(outcomes.get(c, 0)) for c in columns]
    print("| **all** | " + " | ".join(total) + " |")
    print(
        f"\n{cases} cases in {wall:.0f} s ({cases / wall:.1f}/s), slowest case "
        f"{result['slowest_case_s']:.2f} s, defects {result['defect_count']}"
    )
    return 1 if result["defect_count"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
