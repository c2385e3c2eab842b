"""A byte-for-byte picture of a folder, to check that something only read it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["snapshot"]


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under ``folder`` (itself included): mode, mtime (ns) and file contents.

    Two equal snapshots mean nothing was added, removed, renamed, rewritten or touched.
    """
    entries = {}
    for path in sorted([folder, *folder.rglob("*")]):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        entries[path.relative_to(folder).as_posix()] = (st.st_mode, st.st_mtime_ns, data)
    return entries
