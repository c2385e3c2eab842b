#!/usr/bin/env python3
"""Fetch the pinned NiiVue build into the package (``monai_tumor/report/static/``).

Asks npm for the pinned ``@niivue/niivue`` tarball (``npm pack``: the npm registry, or
the npm cache), checks the tarball against the pinned integrity hash (SHA-512, as npm's
``dist.integrity``) and the extracted ``dist/niivue.umd.js`` against its pinned SHA-256,
then writes it atomically. Without arguments it does nothing when the file is already
there with the right hash; ``--check`` only verifies (exit 1 if missing or different).

The pins live in ``monai_tumor/report/assets.py`` (NIIVUE_VERSION, NIIVUE_INTEGRITY,
NIIVUE_SHA256); to move to another NiiVue release, change all three together.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "monai_tumor" / "report" / "assets.py"
TARGET = ROOT / "monai_tumor" / "report" / "static" / "niivue.umd.js"
MEMBER = "package/dist/niivue.umd.js"


def _pin(name: str) -> str:
    """Read one pinned constant from assets.py without importing the package (no torch)."""
    text = ASSETS.read_text(encoding="utf-8")
    match = re.search(rf"^{name} = \(?\s*((?:\"[^\"]*\"\s*)+)\)?", text, re.MULTILINE)
    if not match:
        raise SystemExit(f"fetch_niivue: {name} not found in {ASSETS}")
    return "".join(re.findall(r"\"([^\"]*)\"", match.group(1)))


def _ok(path: Path, sha256: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def fetch(version: str, integrity: str, sha256: str) -> bytes:
    """Return the checked ``niivue.umd.js`` of ``version`` from the npm registry."""
    algorithm, _, expected = integrity.partition("-")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["npm", "pack", f"@niivue/niivue@{version}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"fetch_niivue: npm pack failed: {done.stderr.strip()}")
        (tarball,) = Path(tmp).glob("*.tgz")
        digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
        if digest != expected:
            raise SystemExit(
                f"fetch_niivue: {tarball.name} has integrity {algorithm}-{digest}, pinned "
                f"{integrity}; refusing it"
            )
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(MEMBER)
            if member is None:
                raise SystemExit(f"fetch_niivue: {MEMBER} missing from {tarball.name}")
            data = member.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SystemExit(f"fetch_niivue: {MEMBER} does not have the pinned SHA-256 {sha256}")
    return data


def main() -> int:
    """Check, or fetch and check, the NiiVue build; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify the installed file")
    parser.add_argument("--force", action="store_true", help="fetch even if the file is right")
    args = parser.parse_args()
    version, integrity = _pin("NIIVUE_VERSION"), _pin("NIIVUE_INTEGRITY")
    sha256 = _pin("NIIVUE_SHA256")
    if _ok(TARGET, sha256) and not args.force:
        print(f"[niivue] {version} in place ({TARGET.relative_to(ROOT)})")
        return 0
    if args.check:
        print(f"[niivue] {TARGET.relative_to(ROOT)} is missing or not NiiVue {version}")
        return 1
    data = fetch(version, integrity, sha256)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    tmp = TARGET.with_name(f".{TARGET.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, TARGET)
    print(f"[niivue] fetched {version} into {TARGET.relative_to(ROOT)} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
