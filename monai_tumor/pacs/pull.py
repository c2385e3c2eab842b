"""Find studies on a DICOMweb server and fetch only the series a bundle needs.

Selection runs before any pixel is fetched: for each study, QIDO-RS lists the series,
WADO-RS *metadata* (headers, no Pixel Data) of each image series is turned into the same
:class:`~monai_tumor.ingest.headers.InstanceHeader` records a folder scan makes
(:func:`~monai_tumor.ingest.headers.inspect_dataset`), summarised per series
(:func:`~monai_tumor.ingest.scan.summarize_series`) and given to the bundle's selection
rules (:func:`~monai_tumor.ingest.selection.select_series`). Only the chosen series (plus,
when asked, the study's RTSTRUCT/SEG objects for seed points) are retrieved (streamed,
each instance written as it arrives) into the :class:`~monai_tumor.pacs.cache.InstanceCache`;
cached instances are never fetched twice.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monai_tumor import config as tumor_config
from monai_tumor.errors import ConfigError, PacsError
from monai_tumor.ingest.headers import inspect_dataset
from monai_tumor.ingest.records import InstanceHeader
from monai_tumor.ingest.selection import SelectionResult, SelectionRules, select_series
from monai_tumor.ingest.series import summarize_series
from monai_tumor.pacs.cache import InstanceCache, safe_uid
from monai_tumor.pacs.dicomweb import DicomwebClient

__all__ = [
    "PullResult",
    "PulledSeries",
    "find_studies",
    "parse_query",
    "pull_studies",
    "read_study_list",
]

_log = logging.getLogger(__name__)

#: Modalities of the non-image objects fetched for seed points (VOI bundles).
SEED_MODALITIES = ("RTSTRUCT", "SEG")


@dataclass(frozen=True)
class PulledSeries:
    """One series brought into the cache.

    Attributes
    ----------
    study_uid, series_uid, modality
        Which series.
    role
        The bundle input it fills (``"flair"``, ``"ct"``...), or ``"seeds"``.
    instances
        Instances of the series.
    fetched
        Of which downloaded by this call (the rest were cached already).
    """

    study_uid: str
    series_uid: str
    modality: str
    role: str
    instances: int
    fetched: int


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull_studies` brought into the cache, and why other series stayed away.

    Attributes
    ----------
    series
        Every series fetched (or found complete in the cache).
    selections
        Per study UID, the selection result on the metadata (reasons for every series).
    """

    series: tuple[PulledSeries, ...]
    selections: Mapping[str, SelectionResult] = field(default_factory=dict)

    @property
    def fetched(self) -> int:
        """Instances downloaded by this call."""
        return sum(s.fetched for s in self.series)

    @property
    def cached(self) -> int:
        """Instances that were already in the cache."""
        return sum(s.instances - s.fetched for s in self.series)


def parse_query(items: Iterable[str]) -> dict[str, str]:
    """Turn ``KEY=VALUE`` strings into a QIDO-RS query (keys are DICOM keywords or tags).

    Raises
    ------
    ConfigError
        An item has no ``=`` or an empty key.
    """
    query: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"query {item!r} is not KEY=VALUE, e.g. ModalitiesInStudy=MR or "
                "StudyDate=20240101-20241231"
            )
        query[key.strip()] = value.strip()
    return query


def read_study_list(path: str | Path) -> list[str]:
    """StudyInstanceUIDs from a CSV file (column ``StudyInstanceUID``, else the first column).

    Raises
    ------
    ConfigError
        The file cannot be read or lists no UID.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the study list ({exc.strerror})", path=path) from exc
    rows = [row for row in csv.reader(text.splitlines()) if row and any(c.strip() for c in row)]
    if not rows:
        raise ConfigError("the study list is empty; expected a StudyInstanceUID column", path=path)
    header = [c.strip() for c in rows[0]]
    column = header.index("StudyInstanceUID") if "StudyInstanceUID" in header else 0
    body = rows[1:] if "StudyInstanceUID" in header else rows
    uids = [row[column].strip() for row in body if len(row) > column and row[column].strip()]
    if not uids:
        raise ConfigError("the study list has no StudyInstanceUID", path=path)
    for uid in uids:
        try:
            safe_uid(uid, what="StudyInstanceUID")
        except PacsError as exc:
            raise ConfigError(f"{uid!r} is not a StudyInstanceUID", path=path) from exc
    return list(dict.fromkeys(uids))


def find_studies(
    client: DicomwebClient,
    *,
    study_uids: Sequence[str] = (),
    query: Mapping[str, str] | None = None,
) -> list[str]:
    """StudyInstanceUIDs to process: the given ones (checked to exist) plus a QIDO-RS query.

    Raises
    ------
    PacsError
        A given study is not on the server, or the server cannot be reached.
    ConfigError
        Neither UIDs nor a query were given.
    """
    if not study_uids and not query:
        raise ConfigError("give studies (--study, --studies-from) or a query (--query)")
    found: list[str] = []
    for uid in study_uids:
        hits = client.search_studies({"StudyInstanceUID": safe_uid(uid)})
        if not hits:
            raise PacsError(
                f"study {uid} is not on {client.config.safe_url}; check the UID (QIDO-RS "
                "found nothing)"
            )
        found.append(uid)
    if query:
        for ds in client.search_studies(query):
            found.append(safe_uid(str(ds.get("StudyInstanceUID", "")), what="StudyInstanceUID"))
    return list(dict.fromkeys(found))


def _headers(
    client: DicomwebClient, cache: InstanceCache, study_uid: str, series_uid: str, key: bytes
) -> list[InstanceHeader]:
    headers: list[InstanceHeader] = []
    for ds in client.series_metadata(study_uid, series_uid):
        sop = safe_uid(str(ds.get("SOPInstanceUID", "")), what="SOPInstanceUID")
        record = inspect_dataset(
            ds, path=cache.path_for(study_uid, series_uid, sop), patient_key=key
        )
        if isinstance(record, InstanceHeader) and record.series_instance_uid == series_uid:
            headers.append(record)
    return headers


def _sop_uids(client: DicomwebClient, study_uid: str, series_uid: str) -> list[str]:
    return [
        safe_uid(str(ds.get("SOPInstanceUID", "")), what="SOPInstanceUID")
        for ds in client.series_metadata(study_uid, series_uid)
    ]


def _fetch_series(
    client: DicomwebClient,
    cache: InstanceCache,
    study_uid: str,
    series_uid: str,
    sop_uids: Sequence[str],
) -> int:
    return client.fetch_series(study_uid, series_uid, sop_uids, cache=cache)


def pull_studies(
    client: DicomwebClient,
    study_uids: Sequence[str],
    *,
    rules: SelectionRules,
    cache: InstanceCache,
    seed_objects: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PullResult:
    """Select series on metadata, then fetch only those into the cache.

    Parameters
    ----------
    client
        The DICOMweb server.
    study_uids
        Studies to look at.
    rules
        The bundle's series selection rules.
    cache
        Where instances go (one file per SOP Instance UID, written atomically).
    seed_objects
        Also fetch the studies' RTSTRUCT and SEG series (seed points of VOI bundles).
    progress
        Called with a short text after each series.

    Returns
    -------
    PullResult
        The series fetched and the selection of every study. A study whose required
        inputs are missing fetches nothing; its selection says why.

    Raises
    ------
    PacsError
        The server failed after the retries (instances fetched before are kept).
    """
    cache.check_writable()
    key = tumor_config.patient_key()
    pulled: list[PulledSeries] = []
    selections: dict[str, SelectionResult] = {}
    for study_uid in study_uids:
        series_list = client.search_series(study_uid)
        infos = []
        headers_by_series: dict[str, list[InstanceHeader]] = {}
        seeds: list[tuple[str, str]] = []
        for ds in series_list:
            series_uid = safe_uid(str(ds.get("SeriesInstanceUID", "")), what="SeriesInstanceUID")
            modality = str(ds.get("Modality", "")).upper()
            if modality in SEED_MODALITIES:
                if seed_objects:
                    seeds.append((series_uid, modality))
                continue
            headers = _headers(client, cache, study_uid, series_uid, key)
            if headers:
                headers_by_series[series_uid] = headers
                infos.append(summarize_series(headers))
        selection = select_series(infos, rules)
        selections[study_uid] = selection
        if not selection.ok:
            _log.warning("study %s: %s; nothing fetched", study_uid, selection.summary())
            continue
        for role, series_uid in selection.selected.items():
            headers = headers_by_series[series_uid]
            sops = [h.sop_instance_uid for h in headers]
            fetched = _fetch_series(client, cache, study_uid, series_uid, sops)
            pulled.append(
                PulledSeries(study_uid, series_uid, headers[0].modality, role, len(sops), fetched)
            )
            if progress is not None:
                progress(f"{role}: {len(sops)} instances ({fetched} fetched)")
        for series_uid, modality in seeds:
            sops = _sop_uids(client, study_uid, series_uid)
            fetched = _fetch_series(client, cache, study_uid, series_uid, sops)
            pulled.append(
                PulledSeries(study_uid, series_uid, modality, "seeds", len(sops), fetched)
            )
    return PullResult(series=tuple(pulled), selections=selections)
