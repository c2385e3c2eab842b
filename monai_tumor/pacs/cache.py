"""Local store of instances fetched from or received from a PACS, keyed by SOP Instance UID.

Layout: ``ROOT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Each file is
written atomically (a temporary file in the same folder, fsync, rename), so an instance
is either complete or absent: a transfer cut half-way leaves nothing behind, and a rerun
fetches exactly the instances that are missing. The folder is a plain DICOM export:
:func:`monai_tumor.pipeline.batch.run_batch` reads it like any other.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from monai_tumor.errors import PacsError
from monai_tumor.export.atomic import atomic_path

__all__ = ["InstanceCache", "safe_uid"]

_UID = re.compile(r"^[0-9A-Za-z.\-_]{1,64}$")


def safe_uid(uid: str, *, what: str = "UID") -> str:
    """Return ``uid`` if it is safe as a file name (DICOM UIDs are digits and dots).

    Raises
    ------
    PacsError
        The peer sent something else (e.g. ``../``): never used as a path.
    """
    text = str(uid).strip()
    if not _UID.match(text) or text in {".", ".."}:
        raise PacsError(f"the server sent {what} {text[:80]!r}, which is not a DICOM UID")
    return text


@dataclass(frozen=True)
class InstanceCache:
    """Instances on disk under ``root``, one file per SOP Instance UID.

    Parameters
    ----------
    root
        The cache folder (created on first write). Nothing is ever deleted by the
        package; delete the folder to reclaim the space.
    """

    root: Path

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Where an instance lives (whether or not it is there yet)."""
        return (
            self.root
            / safe_uid(study_uid, what="StudyInstanceUID")
            / safe_uid(series_uid, what="SeriesInstanceUID")
            / f"{safe_uid(sop_uid, what='SOPInstanceUID')}.dcm"
        )

    def has(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the instance is already stored (complete: files appear only when whole)."""
        return self.path_for(study_uid, series_uid, sop_uid).is_file()

    def study_folder(self, study_uid: str) -> Path:
        """Return the folder of one study."""
        return self.root / safe_uid(study_uid, what="StudyInstanceUID")

    def write(
        self, study_uid: str, series_uid: str, sop_uid: str, writer: Callable[[Path], object]
    ) -> Path:
        """Store an instance atomically; ``writer`` writes the file at the path it is given.

        An instance already stored is kept as it is (first copy wins: a SOP Instance UID
        names one object).
        """
        dest = self.path_for(study_uid, series_uid, sop_uid)
        if dest.is_file():
            return dest
        with atomic_path(dest, suffix=".dcm") as tmp:
            writer(tmp)
        return dest

    def adopt(
        self, study_uid: str, series_uid: str, sop_uid: str, source: Path
    ) -> tuple[Path, bool]:
        """Move a received file into the cache; return its path and whether it was new.

        ``source`` is consumed: renamed when on the same file system, else copied (in
        chunks, never whole in memory) and removed. A duplicate is discarded.
        """
        dest = self.path_for(study_uid, series_uid, sop_uid)
        if dest.is_file():
            source.unlink(missing_ok=True)
            return dest, False
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, dest)
        except OSError:
            # Another file system (the receive buffer is in the system's temp folder).
            with atomic_path(dest, suffix=".dcm") as tmp:
                shutil.copyfile(source, tmp)
            source.unlink(missing_ok=True)
        return dest, True

    def instances(self, study_uid: str | None = None) -> Iterator[Path]:
        """Yield stored instance files (of one study, or all), skipping unfinished temporaries."""
        base = self.root if study_uid is None else self.study_folder(study_uid)
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*.dcm")):
            if not path.name.startswith("."):
                yield path

    def check_writable(self) -> None:
        """Raise :class:`PacsError` if the cache folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PacsError(
                f"cannot create the PACS cache folder ({exc.strerror}); choose another "
                "with --cache",
                path=self.root,
            ) from exc
        if not os.access(self.root, os.W_OK):
            raise PacsError(
                "the PACS cache folder is not writable; choose another with --cache",
                path=self.root,
            )
