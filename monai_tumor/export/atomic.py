"""Atomic file writes: an output is either complete or absent, never half-written.

Everything the package writes goes through these helpers: the content is
written to a temporary file in the destination folder, flushed and fsync-ed,
then renamed over the destination (``os.replace`` is atomic on POSIX and
Windows for paths on one file system). A crash or kill at any moment leaves
either the previous file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


@contextmanager
def atomic_path(destination: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write to; move it onto ``destination`` on success.

    Parameters
    ----------
    destination
        Final path of the file. Its folder is created if missing.
    suffix
        Suffix of the temporary file (some writers pick the format from it,
        e.g. ``".nii.gz"``). Defaults to the destination's full suffix.

    Yields
    ------
    Path
        A path in the destination's folder. If the ``with`` body raises, the
        temporary file is removed and the destination is left untouched.
    """
    dest = Path(destination)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes) if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain
        # open() would (0666 minus the umask) so colleagues can read outputs.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    # Linux reports the umask in /proc without changing it; os.umask can only
    # be read by setting it, which would race with other writer threads, so it
    # is the fallback only.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_with(destination: str | Path, writer: Callable[[Path], object]) -> Path:
    with atomic_path(destination) as tmp:
        writer(tmp)
    return Path(destination)


def atomic_write_bytes(destination: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``destination`` atomically and return the path."""
    return _write_with(destination, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(destination: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``destination`` atomically and return the path."""
    return _write_with(destination, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(destination: str | Path, payload: Any, *, indent: int = 2) -> Path:
    """Serialise ``payload`` as JSON (non-JSON values via ``str``) atomically."""
    text = json.dumps(payload, indent=indent, default=str, sort_keys=False) + "\n"
    return atomic_write_text(destination, text)
