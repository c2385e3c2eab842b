"""A DICOM receiver (C-STORE SCP) that segments each study once it is complete.

``monai-tumor listen`` runs a :class:`Listener`:

* **receive**: pynetdicom writes each incoming instance to disk as it arrives (chunked,
  never whole in memory); the C-STORE handler only moves the file atomically into
  ``OUT/.monai-tumor/incoming/<study>/<series>/<sop>.dcm`` (de-duplicated by SOP Instance
  UID) and enqueues the study. No inference ever runs inside an association.
* **wait**: a study is complete when no instance of it has arrived for ``idle_seconds``.
  Its folder then moves to ``OUT/.monai-tumor/ready/``. A study that receives more
  instances after it was segmented is segmented again (and the new SEG forwarded).
* **process**: :func:`monai_tumor.pipeline.batch.run_batch` on the ready studies (the same
  pipeline as for an export folder; finished series are reused), outputs and the report
  in ``OUT``.
* **forward**: each new SEG goes into a persistent outbox and is sent by C-STORE to the
  forward node, with retries; a send that still fails stays in the outbox and is retried
  every ``resend_seconds``, and after a restart.

Only calling AE titles on the allow-list may associate (others get an A-ASSOCIATE-RJ,
"calling AE title not recognised"); the called AE title must be ours. C-ECHO is answered.
A restart resumes: studies still in ``incoming`` are processed after ``idle_seconds``,
ready studies not finished are processed at once, unsent SEGs are sent.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydicom import dcmread
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from monai_tumor.errors import PacsError
from monai_tumor.inference.bundle import BundleInfo, read_bundle_info
from monai_tumor.pacs.batch import STATE_FOLDER, outbox_for, seg_files
from monai_tumor.pacs.cache import InstanceCache
from monai_tumor.pacs.config import DicomNode, TlsConfig, check_ae_title
from monai_tumor.pacs.dimse import (
    VERIFICATION,
    DimseOptions,
    chunked_receive,
    send_files,
    server_ssl_context,
)
from monai_tumor.pacs.outbox import Delivery
from monai_tumor.pipeline.batch import BatchOptions, BatchResult, run_batch
from monai_tumor.pipeline.infer import Segmenter, load_segmenter
from monai_tumor.pipeline.outputs import MANIFEST_NAME, study_key

__all__ = ["Listener", "ListenerOptions"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenerOptions:
    """What the listener accepts and where results go.

    Attributes
    ----------
    ae_title
        Our AE title; associations calling another title are rejected.
    port
        TCP port to listen on (0: any free port, see :attr:`Listener.port`).
    host
        Address to bind (``"0.0.0.0"``: every interface).
    allow
        Calling AE titles allowed to associate. Empty: any (not recommended outside a
        closed network).
    idle_seconds
        A study is processed when none of its instances arrived for this long.
    forward
        Where SEGs are sent by C-STORE (``None``: kept local only).
    tls
        TLS for the listener (certificate and key; with a CA bundle, clients must
        present a certificate it signed). Forwarding uses ``dimse.tls``.
    resend_seconds
        How often SEGs still in the outbox are tried again.
    dimse
        Timeouts and retry policy of the forward sends (our AE title is ``ae_title``).
    """

    ae_title: str = "MONAITUMOR"
    port: int = 11112
    host: str = "0.0.0.0"
    allow: tuple[str, ...] = ()
    idle_seconds: float = 30.0
    forward: DicomNode | None = None
    tls: TlsConfig | None = None
    resend_seconds: float = 60.0
    dimse: DimseOptions = field(default_factory=DimseOptions)

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title)
        for title in self.allow:
            check_ae_title(title)


class Listener:
    """The receiver, its study queue and its worker (see the module docstring).

    Parameters
    ----------
    out_dir
        Output folder (outputs, report, and the receive state in ``.monai-tumor``).
    bundle
        The bundle every complete study is segmented with.
    options
        AE titles, port, idle time, forward node, TLS.
    batch_options
        Options of the batch run (device, rules, seeds...).
    segmenter
        A loaded model (default: the bundle, loaded at the first study).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        bundle: str | os.PathLike[str] | BundleInfo,
        options: ListenerOptions,
        batch_options: BatchOptions | None = None,
        segmenter: Segmenter | None = None,
    ) -> None:
        self.out = Path(out_dir).expanduser().resolve()
        self.info = bundle if isinstance(bundle, BundleInfo) else read_bundle_info(Path(bundle))
        self.options = options
        self.batch_options = batch_options or BatchOptions(progress=False)
        self._segmenter = segmenter
        state = self.out / STATE_FOLDER
        self.incoming = InstanceCache(state / "incoming")
        self.ready = InstanceCache(state / "ready")
        self._arrivals: queue.Queue[str] = queue.Queue()
        self._last: dict[str, float] = {}
        self._stop = threading.Event()
        self._server: ThreadedAssociationServer | None = None
        self._worker: threading.Thread | None = None
        self._next_resend = 0.0
        #: Results of the batch runs so far (newest last), for callers and tests.
        self.runs: list[BatchResult] = []
        #: Forward deliveries so far (newest last).
        self.deliveries: list[Delivery] = []
        self.received = 0
        self.duplicates = 0

    # -------------------------------------------------------------------- receiving

    def _handle_store(self, event: evt.Event) -> int:
        """Store the instance and enqueue its study; nothing else happens here."""
        try:
            source = Path(event.dataset_path)
            ds = dcmread(source, stop_before_pixels=True)
            study = str(ds.StudyInstanceUID)
            series = str(ds.SeriesInstanceUID)
            sop = str(ds.SOPInstanceUID)
            if self.ready.has(study, series, sop):
                source.unlink(missing_ok=True)
                new = False
            else:
                _, new = self.incoming.adopt(study, series, sop, source)
        except PacsError as exc:
            _log.warning("refused an instance: %s", exc.reason)
            return 0xC000  # cannot understand (bad UIDs)
        except Exception as exc:  # out of resources: disk full, unreadable temp file
            _log.warning("could not store a received instance: %s", type(exc).__name__)
            return 0xA700
        if new:
            self.received += 1
        else:
            self.duplicates += 1
        self._arrivals.put(study)
        return 0x0000

    @property
    def port(self) -> int:
        """The TCP port the listener is bound to."""
        if self._server is None:
            return self.options.port
        return int(self._server.server_address[1])

    def start(self) -> Listener:
        """Start receiving and the worker; resume what a previous run left pending.

        Raises
        ------
        PacsError
            The port cannot be bound.
        """
        chunked_receive()
        ae = self.options.dimse.make_ae()
        ae.ae_title = self.options.ae_title
        ae.require_called_aet = True
        if self.options.allow:
            ae.require_calling_aet = list(self.options.allow)
        else:
            _log.warning("no --allow list: any calling AE title may send to %s", ae.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        ssl_context = server_ssl_context(self.options.tls) if self.options.tls else None
        try:
            self._server = ae.start_server(
                (self.options.host, self.options.port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._handle_store)],
                ssl_context=ssl_context,
            )
        except OSError as exc:
            raise PacsError(
                f"cannot listen on {self.options.host}:{self.options.port} ({exc.strerror}); "
                "choose another --port"
            ) from exc
        now = time.monotonic()
        for study in self._folders(self.incoming):
            self._last[study] = now  # received before a restart: wait idle_seconds again
        self._worker = threading.Thread(target=self._work, name="listen-worker", daemon=True)
        self._worker.start()
        _log.info("listening as %s on %s:%d", self.options.ae_title, self.options.host, self.port)
        return self

    def stop(self) -> None:
        """Stop receiving and let the worker finish its current step."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def stop_soon(self) -> None:
        """Ask the listener to stop (safe in a signal handler); :meth:`wait` returns then."""
        self._stop.set()

    def wait(self) -> None:
        """Block until :meth:`stop_soon` (or :meth:`stop`) is called, then stop cleanly."""
        while not self._stop.wait(0.5):
            pass
        self.stop()

    # ---------------------------------------------------------------------- working

    @staticmethod
    def _folders(cache: InstanceCache) -> list[str]:
        if not cache.root.is_dir():
            return []
        return sorted(p.name for p in cache.root.iterdir() if p.is_dir() and p.name[0] != ".")

    def _work(self) -> None:
        if self._folders(self.ready):
            self._process([])  # a run interrupted by a restart: resume it
        self._resend()
        while not self._stop.is_set():
            try:
                study = self._arrivals.get(timeout=0.2)
                self._last[study] = time.monotonic()
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            due = [s for s, t in self._last.items() if now - t >= self.options.idle_seconds]
            if due:
                for study in due:
                    self._last.pop(study, None)
                    self._promote(study)
                self._process(due)
            elif now >= self._next_resend:
                self._resend()

    def _promote(self, study: str) -> None:
        """Move a complete study from incoming to ready (instance by instance, atomically).

        If the study was segmented before and new instances arrived since (a sender that
        paused longer than ``idle_seconds``), its finished outputs are marked incomplete
        (their manifests removed) so the next run segments the whole study again, and its
        SEGs still waiting in the outbox are withdrawn: a SEG of a partial series must not
        stand as the result.
        """
        source = self.incoming.study_folder(study)
        added = 0
        for path in list(self.incoming.instances(study)):
            series = path.parent.name
            _, new = self.ready.adopt(study, series, path.stem, path)
            added += int(new)
        shutil.rmtree(source, ignore_errors=True)
        outputs = self.out / study_key(study)
        stale = sorted(outputs.glob(f"*/{MANIFEST_NAME}")) if added else []
        for manifest in stale:
            manifest.unlink(missing_ok=True)
        if stale:
            withdrawn = 0
            if self.options.forward is not None:
                outbox = outbox_for(self.out, str(self.options.forward))
                withdrawn = outbox.withdraw_study(study)
            _log.warning(
                "study %s received %d more instance(s) after it was segmented: redone "
                "(%d unsent SEG(s) of it withdrawn)",
                study_key(study),
                added,
                withdrawn,
            )

    def _model(self) -> Segmenter:
        if self._segmenter is None:
            self._segmenter = load_segmenter(self.info, device=self.batch_options.device)
        return self._segmenter

    def _process(self, studies: Sequence[str]) -> None:
        try:
            result = run_batch(
                self.ready.root,
                self.out,
                bundle=self.info,
                options=self.batch_options,
                segmenter=self._model(),
            )
        except Exception as exc:  # keep listening; the studies stay in ready/ for a rerun
            _log.error("processing %d study(ies) failed: %s", len(studies), exc)
            return
        self.runs.append(result)
        _log.info("processed %d study(ies): %d series failed", len(studies), len(result.failed))
        if self.options.forward is not None:
            outbox = outbox_for(self.out, str(self.options.forward))
            for seg in seg_files(result, [r.study_instance_uid for r in result.records]):
                outbox.put(seg)
        self._resend()

    def _resend(self) -> None:
        self._next_resend = time.monotonic() + self.options.resend_seconds
        node = self.options.forward
        if node is None:
            return
        outbox = outbox_for(self.out, str(node))
        if not outbox.pending():
            return
        options = replace(self.options.dimse, ae_title=self.options.ae_title)

        def send(paths: Sequence[Path]) -> None:
            send_files(paths, node, options=options)

        delivery = outbox.flush(send)
        self.deliveries.append(delivery)
        for sop, error in delivery.failed:
            _log.warning("SEG %s kept in the outbox for %s: %s", sop, node, error)
