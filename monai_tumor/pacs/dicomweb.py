"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) on top of ``dicomweb-client``.

:class:`DicomwebClient` adds what a hospital connection needs around
:class:`dicomweb_client.api.DICOMwebClient`: basic or bearer authentication, a CA bundle
for TLS, separate connect and read timeouts, retries with exponential backoff of
*every* transient failure (connection refused or reset, a transfer cut half-way, a
timeout, 408/429/500/502/503/504), error messages that say what to do, and a download
path that writes each instance atomically into an :class:`~monai_tumor.pacs.cache.InstanceCache`.

dicomweb-client's own retry covers HTTP status codes only (not a refused connection or a
body cut short), so it is switched off and one policy (:class:`RetryPolicy`) handles all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response

from monai_tumor.errors import PacsError
from monai_tumor.pacs.cache import InstanceCache
from monai_tumor.pacs.config import DicomwebConfig
from monai_tumor.pacs.retry import TransientPacsError, with_retries

__all__ = ["TRANSIENT_HTTP_STATUS", "DicomwebClient"]

_log = logging.getLogger(__name__)

#: HTTP answers worth retrying (the server is busy, restarting, or a proxy timed out).
TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})

#: Results per QIDO-RS page.
QIDO_PAGE = 500
_STUDY_UID_TAG = "0020000D"
_SERIES_UID_TAG = "0020000E"

T = TypeVar("T")


class _TrustAdapter(HTTPAdapter):
    """Verify https against one CA bundle, whatever the environment says.

    requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` override a session's
    ``verify`` (set on many machines to the system bundle), so the site's CA given with
    ``--ca-bundle`` would silently be ignored; the adapter applies it to every request.
    """

    def __init__(self, ca_bundle: str) -> None:
        super().__init__()
        self._ca_bundle = ca_bundle

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        kwargs["verify"] = self._ca_bundle
        return super().send(request, **kwargs)


def _no_bulk_data(_tag: str, _vr: str, _uri: str) -> bytes:
    # Metadata only: Pixel Data stays a present-but-empty element (never fetched here).
    return b""


class DicomwebClient:
    """One DICOMweb server, with authentication, timeouts and retries.

    Parameters
    ----------
    config
        URL, credentials, CA bundle, timeouts, retry policy.

    Examples
    --------
    >>> from monai_tumor.pacs import DicomwebClient, DicomwebConfig
    >>> client = DicomwebClient(DicomwebConfig("http://localhost:8042/dicom-web",
    ...                                        username="u", password="p"))
    >>> client.config.safe_url
    'http://localhost:8042/dicom-web'
    """

    def __init__(self, config: DicomwebConfig) -> None:
        self.config = config
        session = requests.Session()
        if config.username is not None and config.password is not None:
            session.auth = (config.username, config.password)
        if config.ca_bundle is not None:
            session.verify = str(config.ca_bundle)
            session.mount("https://", _TrustAdapter(str(config.ca_bundle)))
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else None
        self._client = DICOMwebClient(
            url=config.url,
            session=session,
            headers=headers,
            timeout=(config.connect_timeout, config.read_timeout),
        )
        self._client.set_http_retry_params(retry=False)

    # ---------------------------------------------------------------- error handling

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        """Run one HTTP operation under the retry policy, mapping errors to PacsError."""
        full = f"{what} at {self.config.safe_url}"

        def attempt() -> T:
            try:
                return operation()
            except requests.exceptions.SSLError as exc:
                raise PacsError(
                    f"{full}: the TLS certificate was not accepted ({_first_line(exc)}); give "
                    "the site's CA bundle (--ca-bundle) or check the URL's host name"
                ) from exc
            except requests.exceptions.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status in TRANSIENT_HTTP_STATUS:
                    raise TransientPacsError(f"HTTP {status} from the server") from exc
                if status in (401, 403):
                    raise PacsError(
                        f"{full}: HTTP {status}, the server refused our credentials; check "
                        "the user name and password (--user, --password-env) or the token "
                        "(--token-env)"
                    ) from exc
                if status == 404:
                    raise PacsError(
                        f"{full}: HTTP 404, not found; check the URL (the DICOMweb root, "
                        "e.g. .../dicom-web) and the UIDs"
                    ) from exc
                raise PacsError(f"{full}: HTTP {status} ({_first_line(exc)})") from exc
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                raise TransientPacsError(f"{type(exc).__name__}: {_first_line(exc)}") from exc
            except (ValueError, EOFError, InvalidDicomError) as exc:
                # A garbled or short multipart answer (e.g. a proxy that cut the body
                # without saying so): worth another try, never written to the cache.
                raise TransientPacsError(
                    f"the answer could not be decoded ({_first_line(exc)})"
                ) from exc

        return with_retries(attempt, policy=self.config.retry, what=full)

    # ------------------------------------------------------------------------- QIDO

    def _search(
        self, what: str, search: Callable[..., list[dict[str, Any]]], key: str
    ) -> list[Dataset]:
        """All pages of a QIDO-RS search.

        Paged here rather than with dicomweb-client's ``get_remaining``, which loops for
        ever on a server that ignores ``offset`` for some filters (seen with Orthanc and
        ``ModalitiesInStudy``): a page that brings nothing new ends the search.
        """
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self._call(what, partial(search, limit=QIDO_PAGE, offset=offset))
            new = {
                str(item.get(key, {}).get("Value", [""])[0]): item
                for item in page
                if str(item.get(key, {}).get("Value", [""])[0]) not in found
            }
            found.update(new)
            if not new or len(page) < QIDO_PAGE:
                break
            offset += len(page)
        return [Dataset.from_json(item) for item in found.values()]

    def search_studies(self, query: Mapping[str, str] | None = None) -> list[Dataset]:
        """QIDO-RS study search (every page); attributes as pydicom datasets.

        Parameters
        ----------
        query
            Matching keys as DICOM keywords or tags, e.g. ``{"PatientID": "X",
            "StudyDate": "20240101-20241231", "ModalitiesInStudy": "MR"}``.
        """
        filters: dict[str, Any] = dict(query or {})
        return self._search(
            "QIDO-RS study search",
            lambda **page: self._client.search_for_studies(search_filters=filters, **page),
            _STUDY_UID_TAG,
        )

    def search_series(self, study_uid: str) -> list[Dataset]:
        """QIDO-RS series of one study (every page)."""
        return self._search(
            f"QIDO-RS series search of study {study_uid}",
            lambda **page: self._client.search_for_series(study_instance_uid=study_uid, **page),
            _SERIES_UID_TAG,
        )

    # ------------------------------------------------------------------------- WADO

    def series_metadata(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """WADO-RS metadata of every instance of a series (no pixel data is transferred)."""
        found = self._call(
            f"WADO-RS metadata of series {series_uid}",
            lambda: self._client.retrieve_series_metadata(study_uid, series_uid),
        )
        return [Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data) for item in found]

    def fetch_instance(
        self, study_uid: str, series_uid: str, sop_uid: str, *, cache: InstanceCache
    ) -> tuple[Path, bool]:
        """Make sure one instance is in ``cache``; return its path and whether it was fetched.

        An instance already cached is not fetched again. A download cut half-way is
        retried and leaves no file behind (the cache writes atomically).
        """
        if cache.has(study_uid, series_uid, sop_uid):
            return cache.path_for(study_uid, series_uid, sop_uid), False

        ds = self._call(
            f"WADO-RS instance {sop_uid}", partial(self._download, study_uid, series_uid, sop_uid)
        )
        path = cache.write(study_uid, series_uid, sop_uid, lambda tmp: _save(ds, tmp))
        return path, True

    def _download(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        # "*": the instance as stored (no transcoding by the server).
        ds = self._client.retrieve_instance(
            study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),)
        )
        if str(ds.get("SOPInstanceUID", "")) != sop_uid:
            raise TransientPacsError(
                f"asked for instance {sop_uid}, received "
                f"{str(ds.get('SOPInstanceUID', ''))[:64] or 'something else'}"
            )
        return ds

    def fetch_series(
        self,
        study_uid: str,
        series_uid: str,
        sop_uids: Sequence[str],
        *,
        cache: InstanceCache,
    ) -> int:
        """Make sure the given instances of a series are in ``cache``; return how many were fetched.

        When most of them are missing, the series is retrieved in one WADO-RS request and
        streamed: each instance is written to the cache as its part arrives (never the
        whole series in memory), those already cached are skipped. A few missing ones
        (a rerun after a cut) are retrieved one by one. A transfer cut half-way keeps the
        instances that arrived whole and retries for the rest.
        """
        wanted = set(sop_uids)
        fetched = 0

        def attempt() -> None:
            nonlocal fetched
            missing = sorted(s for s in wanted if not cache.has(study_uid, series_uid, s))
            if not missing:
                return
            if len(missing) <= max(1, len(wanted) // 4):
                for sop in missing:
                    ds = self._download(study_uid, series_uid, sop)
                    cache.write(study_uid, series_uid, sop, partial(_save, ds))
                    fetched += 1
                return
            todo = set(missing)
            for ds in self._client.iter_series(
                study_uid, series_uid, media_types=(("application/dicom", "*"),)
            ):
                sop = str(ds.get("SOPInstanceUID", ""))
                if sop in todo:
                    cache.write(study_uid, series_uid, sop, partial(_save, ds))
                    todo.discard(sop)
                    fetched += 1
            if todo:
                raise TransientPacsError(
                    f"the server sent {len(missing) - len(todo)} of the {len(missing)} "
                    "instances asked for"
                )

        self._call(f"WADO-RS series {series_uid}", attempt)
        return fetched

    # ------------------------------------------------------------------------- STOW

    def store(self, paths: Sequence[Path], *, study_uid: str | None = None) -> list[str]:
        """STOW-RS the given files; return the SOP Instance UIDs the server accepted.

        Raises
        ------
        PacsError
            The server refused an instance (its FailedSOPSequence), or the upload failed
            after the retries.
        """
        datasets = [dcmread(path) for path in paths]
        answer = self._call(
            f"STOW-RS of {len(datasets)} instance(s)",
            lambda: self._client.store_instances(datasets, study_instance_uid=study_uid),
        )
        failed = [
            str(item.get("ReferencedSOPInstanceUID", "?"))
            for item in answer.get("FailedSOPSequence", None) or []
        ]
        if failed:
            raise PacsError(
                f"STOW-RS at {self.config.safe_url}: the server refused {len(failed)} "
                f"instance(s) ({', '.join(failed[:3])}); see the server's log"
            )
        accepted = [
            str(item.get("ReferencedSOPInstanceUID", ""))
            for item in answer.get("ReferencedSOPSequence", None) or []
        ]
        return accepted or [str(ds.SOPInstanceUID) for ds in datasets]


def _save(ds: Dataset, path: Path) -> None:
    """Write a retrieved instance as a DICOM file (file meta made if the server sent none)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
