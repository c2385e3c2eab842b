"""DICOM networking (DIMSE) with pynetdicom: C-ECHO, C-STORE, C-FIND and C-GET as a client.

Every operation opens one association, retries connection failures and busy peers with
the :class:`~monai_tumor.pacs.config.RetryPolicy` and turns rejections and failure
statuses into a :class:`~monai_tumor.errors.PacsError` that says what the peer answered
and what to change. Received instances (C-GET) are written to disk by pynetdicom as they
arrive (``STORE_RECV_CHUNKED_DATASET``: never whole in memory) and moved atomically into an
:class:`~monai_tumor.pacs.cache.InstanceCache`, de-duplicated by SOP Instance UID.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, build_role, evt
from pynetdicom.association import Association

from monai_tumor.errors import PacsError
from monai_tumor.pacs.cache import InstanceCache, safe_uid
from monai_tumor.pacs.config import DicomNode, RetryPolicy, TlsConfig, check_ae_title
from monai_tumor.pacs.retry import TransientPacsError, with_retries

__all__ = [
    "RETRIEVE_STORAGE_CLASSES",
    "VERIFICATION",
    "DimseOptions",
    "chunked_receive",
    "echo",
    "find_series",
    "get_series",
    "receive_into",
    "send_files",
    "server_ssl_context",
]

_log = logging.getLogger(__name__)

#: Storage SOP classes accepted when retrieving (C-GET allows at most 128 contexts in all):
#: the cross-sectional images this project reads, their enhanced forms, and RTSTRUCT/SEG.
RETRIEVE_STORAGE_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128",  # PET Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
)

#: SOP classes (pynetdicom.sop_class makes these names at run time, invisible to mypy).
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

#: C-STORE statuses meaning "busy, try later" (out of resources).
_BUSY = range(0xA700, 0xA800)


@dataclass(frozen=True)
class DimseOptions:
    """How we appear on the DICOM network and how patient we are.

    Attributes
    ----------
    ae_title
        Our AE title (the PACS must know it, with our host, to accept us).
    tls
        TLS for the association (``None``: plain TCP).
    acse_timeout, dimse_timeout, network_timeout
        Seconds for association negotiation, for a DIMSE answer, and of network silence.
    retry
        Retries of refused connections, aborted associations and busy answers.
    """

    ae_title: str = "MONAITUMOR"
    tls: TlsConfig | None = None
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title)

    def make_ae(self) -> AE:
        """Make a pynetdicom application entity with these timeouts."""
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = self.acse_timeout
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = self.network_timeout
        return ae


def _client_tls(tls: TlsConfig | None, host: str) -> tuple[ssl.SSLContext, str] | None:
    if tls is None:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_bundle) if tls.ca_bundle else None
    )
    if tls.certificate is not None and tls.private_key is not None:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context, host


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS context of a listener: our certificate; peers verified against the CA bundle.

    Raises
    ------
    PacsError
        No certificate and key were given.
    """
    if tls.certificate is None or tls.private_key is None:
        raise PacsError("a TLS listener needs a certificate and its private key")
    context = ssl.create_default_context(
        ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca_bundle) if tls.ca_bundle else None
    )
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    context.verify_mode = ssl.CERT_REQUIRED if tls.ca_bundle else ssl.CERT_NONE
    return context


def _rejection(assoc: Association, node: DicomNode, options: DimseOptions) -> PacsError:
    reason = ""
    try:
        primitive = assoc.acceptor.primitive
        if primitive is not None:
            reason = f" (result {primitive.result}, source {primitive.result_source}, "
            reason += f"reason {primitive.diagnostic})"
    except AttributeError:
        pass
    return PacsError(
        f"{node} rejected the association from {options.ae_title}{reason}; check that the "
        f"peer's AE title is {node.ae_title} and that it knows {options.ae_title} at this "
        "host (its list of modalities)"
    )


@contextmanager
def _association(
    ae: AE, node: DicomNode, options: DimseOptions, **kwargs: Any
) -> Iterator[Association]:
    """One established association (raises Transient for refused/aborted, PacsError if rejected)."""
    try:
        assoc = ae.associate(
            node.host,
            node.port,
            ae_title=node.ae_title,
            tls_args=_client_tls(options.tls, node.host),
            **kwargs,
        )
    except (OSError, ssl.SSLError) as exc:
        raise TransientPacsError(f"cannot connect ({exc})") from exc
    if assoc.is_rejected:
        raise _rejection(assoc, node, options)
    if not assoc.is_established:
        raise TransientPacsError("no association (connection refused, aborted or timed out)")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _status_of(answer: Dataset | None, *, hint: str = "") -> int:
    if answer is None or "Status" not in answer:
        raise TransientPacsError(
            "no answer: the association was aborted or timed out" + (f" ({hint})" if hint else "")
        )
    return int(answer.Status)


def _refusal_hint(node: DicomNode, options: DimseOptions, right: str) -> str:
    return (
        f"a PACS aborts like this when it does not allow {right} from our AE title "
        f"{options.ae_title} at this host: add it to {node.ae_title}'s modalities"
    )


def echo(node: DicomNode, *, options: DimseOptions | None = None) -> None:
    """C-ECHO a node (the DICOM "ping").

    Raises
    ------
    PacsError
        No association, a rejection, or a failure status (after the retries).
    """
    opts = options or DimseOptions()

    def attempt() -> None:
        ae = opts.make_ae()
        ae.add_requested_context(VERIFICATION)
        with _association(ae, node, opts) as assoc:
            status = _status_of(assoc.send_c_echo())
        if status != 0:
            raise PacsError(f"C-ECHO to {node}: status 0x{status:04X}")

    with_retries(attempt, policy=opts.retry, what=f"C-ECHO to {node}")


def send_files(
    paths: Sequence[Path], node: DicomNode, *, options: DimseOptions | None = None
) -> list[str]:
    """C-STORE DICOM files to a node (one association); return the SOP Instance UIDs sent.

    Raises
    ------
    PacsError
        A file is not DICOM, the peer rejected us or refused an instance (status), or the
        network failed after the retries.
    """
    opts = options or DimseOptions()
    metas: list[tuple[Path, str, str, str]] = []
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise PacsError(f"cannot send: not a DICOM file ({exc})", path=path) from exc
        ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
        metas.append((path, str(ds.SOPClassUID), ts, str(ds.SOPInstanceUID)))

    def attempt() -> list[str]:
        ae = opts.make_ae()
        contexts = {(sop_class, ts) for _, sop_class, ts, _ in metas}
        for sop_class in sorted({c for c, _ in contexts}):
            syntaxes = sorted({ts for c, ts in contexts if c == sop_class})
            for extra in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
                if extra not in syntaxes:
                    syntaxes.append(extra)
            ae.add_requested_context(sop_class, syntaxes)
        sent: list[str] = []
        with _association(ae, node, opts) as assoc:
            for path, _, _, sop in metas:
                status = _status_of(
                    assoc.send_c_store(path), hint=_refusal_hint(node, opts, "storage")
                )
                if status in _BUSY:
                    raise TransientPacsError(f"{node} is busy (status 0x{status:04X})")
                if status != 0 and not 0xB000 <= status <= 0xBFFF:
                    raise PacsError(
                        f"{node} refused instance {sop} with status 0x{status:04X}; see the "
                        "peer's log (is storage from our AE title allowed?)",
                        path=path,
                    )
                sent.append(sop)
        return sent

    return with_retries(attempt, policy=opts.retry, what=f"C-STORE to {node}")


def find_series(
    node: DicomNode, study_uid: str, *, options: DimseOptions | None = None
) -> list[Dataset]:
    """C-FIND (study root, SERIES level) the series of a study.

    Returns
    -------
    list of Dataset
        One identifier per series: SeriesInstanceUID, Modality, SeriesDescription,
        SeriesNumber, NumberOfSeriesRelatedInstances.
    """
    opts = options or DimseOptions()
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = safe_uid(study_uid)
    for keyword in ("SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber"):
        setattr(query, keyword, "")
    query.NumberOfSeriesRelatedInstances = None

    def attempt() -> list[Dataset]:
        ae = opts.make_ae()
        ae.add_requested_context(STUDY_ROOT_FIND)
        found: list[Dataset] = []
        with _association(ae, node, opts) as assoc:
            for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                code = _status_of(status, hint=_refusal_hint(node, opts, "queries"))
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    found.append(identifier)
                elif code != 0:
                    raise PacsError(
                        f"C-FIND at {node} failed with status 0x{code:04X}; is querying "
                        f"allowed for {opts.ae_title}?"
                    )
        return found

    return with_retries(attempt, policy=opts.retry, what=f"C-FIND at {node}")


def receive_into(cache: InstanceCache, received: list[Path]) -> Callable[[evt.Event], int]:
    """Make a C-STORE handler that moves each arriving file into ``cache`` (no decoding).

    Needs pynetdicom's ``STORE_RECV_CHUNKED_DATASET`` (set by the callers in this
    module): the instance is already on disk, written as it arrived.
    """

    def handle(event: evt.Event) -> int:
        try:
            source = Path(event.dataset_path)
            ds = dcmread(source, stop_before_pixels=True)
            path, _new = cache.adopt(
                str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), source
            )
        except Exception as exc:  # the peer gets a failure status, we keep running
            _log.warning("could not store a received instance: %s", exc)
            return 0xA700
        received.append(path)
        return 0x0000

    return handle


def chunked_receive() -> None:
    """Make pynetdicom write received C-STORE datasets to disk as they arrive.

    pynetdicom offers this only as a module setting (``pynetdicom._config``); every
    receiving path of this package wants it, so setting it is idempotent here.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True


def get_series(
    node: DicomNode,
    study_uid: str,
    series_uid: str,
    *,
    cache: InstanceCache,
    options: DimseOptions | None = None,
) -> list[Path]:
    """C-GET one series into ``cache`` (same association; we act as the storage SCP).

    Returns
    -------
    list of Path
        The cached files received (duplicates of cached instances are discarded).

    Raises
    ------
    PacsError
        The peer refused the retrieval or failed after the retries (instances received
        before the failure are kept).
    """
    opts = options or DimseOptions()
    chunked_receive()
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = safe_uid(study_uid)
    query.SeriesInstanceUID = safe_uid(series_uid)

    def attempt() -> list[Path]:
        ae = opts.make_ae()
        ae.add_requested_context(STUDY_ROOT_GET)
        roles = []
        for sop_class in RETRIEVE_STORAGE_CLASSES:
            ae.add_requested_context(sop_class, ALL_TRANSFER_SYNTAXES)
            roles.append(build_role(sop_class, scp_role=True))
        received: list[Path] = []
        handlers = [(evt.EVT_C_STORE, receive_into(cache, received))]
        with _association(ae, node, opts, ext_neg=roles, evt_handlers=handlers) as assoc:
            for status, _identifier in assoc.send_c_get(query, STUDY_ROOT_GET):
                code = _status_of(status, hint=_refusal_hint(node, opts, "retrieval"))
                if code in (0xFF00, 0xFF01, 0x0000):
                    continue
                if code in (0xB000,):
                    raise TransientPacsError(f"some sub-operations failed (0x{code:04X})")
                raise PacsError(
                    f"C-GET of series {series_uid} at {node} failed with status "
                    f"0x{code:04X}; is retrieval allowed for {opts.ae_title}?"
                )
        return received

    return with_retries(attempt, policy=opts.retry, what=f"C-GET of series {series_uid} at {node}")
