"""A persistent outbox: results waiting to be sent to a PACS survive failures and restarts.

Layout under the outbox folder (one per destination)::

    pending/<SOPInstanceUID>.dcm   copies of the objects still to send
    sent/<SOPInstanceUID>.json     one receipt per object the destination accepted

:meth:`Outbox.put` copies an object into ``pending/`` atomically (unless a receipt says it
was sent already); :meth:`Outbox.flush` sends what is pending, writes a receipt and removes
the pending copy only after the destination accepted it. A send that fails after its
retries stays pending and is tried again by the next flush (the next run, or the listener's
next round): a result is never lost, and never sent twice once accepted.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from monai_tumor.errors import PacsError
from monai_tumor.export.atomic import atomic_path, atomic_write_json
from monai_tumor.pacs.cache import safe_uid

__all__ = ["Delivery", "Outbox"]


@dataclass(frozen=True)
class Delivery:
    """What one :meth:`Outbox.flush` did.

    Attributes
    ----------
    destination
        Where to (URL or ``AET@HOST:PORT``).
    sent
        SOP Instance UIDs accepted by the destination in this flush.
    failed
        ``(SOP Instance UID, error)`` of objects still pending.
    """

    destination: str
    sent: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """Nothing is left pending."""
        return not self.failed


@dataclass(frozen=True)
class Outbox:
    """Objects waiting for one destination.

    Parameters
    ----------
    root
        The outbox folder of that destination (created on first use).
    destination
        Human-readable destination (URL without credentials, or ``AET@HOST:PORT``).
    """

    root: Path
    destination: str

    @property
    def _pending(self) -> Path:
        return self.root / "pending"

    @property
    def _sent(self) -> Path:
        return self.root / "sent"

    def was_sent(self, sop_uid: str) -> bool:
        """Whether the destination accepted this object before."""
        return (self._sent / f"{safe_uid(sop_uid)}.json").is_file()

    def put(self, path: Path) -> bool:
        """Queue a copy of a DICOM file; return False if it was sent already.

        Raises
        ------
        PacsError
            The file is not a readable DICOM object.
        """
        try:
            sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        except Exception as exc:
            raise PacsError(f"cannot queue {path.name} for sending ({exc})", path=path) from exc
        if self.was_sent(sop):
            return False
        dest = self._pending / f"{safe_uid(sop)}.dcm"
        if not dest.is_file():
            with atomic_path(dest, suffix=".dcm") as tmp:
                shutil.copyfile(path, tmp)
        return True

    def pending(self) -> list[Path]:
        """Objects still to send, oldest first."""
        if not self._pending.is_dir():
            return []
        files = [p for p in self._pending.glob("*.dcm") if not p.name.startswith(".")]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def withdraw_study(self, study_uid: str) -> int:
        """Drop the pending objects of a study (superseded results); return how many."""
        dropped = 0
        for path in self.pending():
            try:
                study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
            except Exception:  # unreadable: leave it for flush to report
                continue
            if study == study_uid:
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped

    def flush(self, send: Callable[[Sequence[Path]], None]) -> Delivery:
        """Send every pending object (one call of ``send`` per object).

        ``send`` raises :class:`PacsError` when the destination did not accept the object
        after its own retries; the object then stays pending and the error is reported.
        """
        sent: list[str] = []
        failed: list[tuple[str, str]] = []
        for path in self.pending():
            sop = path.stem
            try:
                send([path])
            except PacsError as exc:
                failed.append((sop, str(exc)))
                continue
            atomic_write_json(
                self._sent / f"{sop}.json",
                {
                    "destination": self.destination,
                    "sent_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            path.unlink(missing_ok=True)
            sent.append(sop)
        return Delivery(self.destination, tuple(sent), tuple(failed))
