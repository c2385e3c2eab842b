"""Run every benchmark script in this folder (``make bench``).

Each ``bench_*.py`` compares one hot path against the obvious alternative in the
same run, prints a markdown table and writes ``benchmarks/results/<name>.json``.
The numbers are copied into ``docs/benchmarks.md`` with the date and machine.
Benchmarks never run as tests: timings are not assertions.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n## {script.stem}\n", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
