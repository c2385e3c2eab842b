"""No tracked file, and no TorchScript or checkpoint archive, names a path of a developer's machine.

A bundle someone downloads must not point into the machine it was made on, and the
repository speaks to users and contributors, not about a workstation. The test looks for:

- absolute home and workspace folders of any machine (``/home/<user>/``, ``/Users/<user>/``,
  the root user's home, a top-level ``work`` tree, ``C:\\Users\\<user>\\``; the patterns are
  in ``_GENERIC``);
- the absolute paths of this checkout and of the current user's home, whatever they are.

Text files are read as UTF-8; zip archives (``torch.jit.save`` / ``torch.save`` files) are
opened and every member is searched, since TorchScript archives embed bundle configs.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The folder names are split so that this file does not match itself.
_GENERIC = [
    r"(?<![\w.~$-])/" + "home" + r"/[A-Za-z_][\w.-]*/",
    r"(?<![\w.~$-])/" + "Users" + r"/[A-Za-z_][\w.-]*/",
    r"(?<![\w.~$-])/" + "root" + r"/",
    r"(?<![\w.~$-])/" + "work" + r"/",
    r"[A-Za-z]:\\\\?" + "Users" + r"\\\\?[A-Za-z_]",
]


def _machine_pattern() -> re.Pattern[str]:
    """Generic home/workspace folders, plus this checkout's and this user's absolute paths."""
    specific = {str(REPO), str(REPO.resolve()), os.path.expanduser("~")}
    specific = {s for s in specific if len(s) > 1 and s != "/"}
    parts = _GENERIC + [re.escape(s.rstrip("/")) + r"(?=[/\"'\s]|$)" for s in sorted(specific)]
    return re.compile("|".join(f"(?:{p})" for p in parts))


PATTERN = _machine_pattern()


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}); the tracked files cannot be listed")
    return [REPO / name for name in out.decode("utf-8").split("\0") if name]


def _hits(text: str, where: str) -> list[str]:
    return [
        f"{where}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
        for m in PATTERN.finditer(text)
    ]


def _scan(path: Path, label: str) -> list[str]:
    """Machine paths in one file: every member of a zip archive, or the text of a text file."""
    if zipfile.is_zipfile(path):
        found: list[str] = []
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                data = archive.read(member)
                found += _hits(data.decode("utf-8", errors="replace"), f"{label}!{member}")
        return found
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []  # binary, not an archive: nothing readable as a path
    return _hits(data.decode("utf-8", errors="replace"), label)


def test_no_tracked_file_names_a_machine_path() -> None:
    files = [p for p in _tracked_files() if p.is_file()]
    assert files, "git lists no tracked files"
    hits = [hit for path in files for hit in _scan(path, str(path.relative_to(REPO)))]
    assert not hits, "absolute machine paths in tracked files:\n" + "\n".join(hits[:40])


def test_the_torchscript_archives_are_searched() -> None:
    archives = [p for p in _tracked_files() if p.suffix == ".ts" and zipfile.is_zipfile(p)]
    assert len(archives) >= 2, archives
    for archive in archives:
        with zipfile.ZipFile(archive) as z:
            assert any(name.endswith("extra/inference.json") for name in z.namelist()), archive


@pytest.mark.parametrize(
    "text",
    [
        '"dataset_dir": "/' + 'work/shared/data/brats/validation"',
        "cd /" + "home/alice/monai-tumor",
        "/" + "Users/bob/data",
        "/" + "root/.cache/x",
        r"C:\\" + r"Users\carol\data",
    ],
)
def test_machine_paths_are_recognised(text: str, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(text, encoding="utf-8")
    assert _scan(path, "config.json")
    archive = tmp_path / "model.ts"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model/extra/inference.json", text)
    assert _scan(archive, "model.ts")


@pytest.mark.parametrize(
    "text",
    [
        '"dataset_dir": "$@bundle_root + \'/data\'"',
        "/workspace/data/medical",
        "https://example.org/home/page/",
        "~/.config/monai-tumor/patient.key",
        "$HOME/data",
    ],
)
def test_placeholders_and_urls_are_not_machine_paths(text: str, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(text, encoding="utf-8")
    assert not _scan(path, "config.json")
