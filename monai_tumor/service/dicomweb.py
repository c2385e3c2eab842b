"""A DICOMweb server (e.g. Orthanc) as the annotation server's image source.

Series are listed with QIDO-RS (image modalities only; SEG, RTSTRUCT, SR, PR are not images
to annotate), fetched once with WADO-RS into ``<state>/cache/dicom/<SeriesInstanceUID>/``
and read with the project's reader. Every new ``final`` label is also written as a DICOM
SEG on its source series (:func:`monai_tumor.export.seg.write_dicom_seg`) and stored back
with STOW-RS, so viewers that read the server (OHIF) see the corrected segmentation.

``dicomweb-client`` does the HTTP (QIDO/WADO/STOW); image ids are SeriesInstanceUIDs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom
import torch
from monai.data import MetaTensor

from monai_tumor.errors import PacsError, RequestError
from monai_tumor.export.atomic import atomic_path
from monai_tumor.export.seg import AlgorithmInfo, SegExportConfig, SegmentSpec
from monai_tumor.service.datastore import ID_PATTERN, Datastore, LabelVersion, check_id

__all__ = ["NON_IMAGE_MODALITIES", "DicomWebDatastore", "SegmentsFor"]

logger = logging.getLogger(__name__)

#: Series of these modalities are not offered as images.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "DOC"})

#: Given an image (its meta carries ``Modality``), the SEG segments and algorithm to write.
SegmentsFor = Callable[[MetaTensor], tuple[Sequence[SegmentSpec], AlgorithmInfo]]


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


class DicomWebDatastore(Datastore):
    """Images from a DICOMweb server; final labels stored back as DICOM SEG.

    Parameters
    ----------
    url
        The DICOMweb base URL (Orthanc: ``http://host:8042/dicom-web``); user and password
        in it (``http://user:secret@host:8042/dicom-web``) are sent as HTTP basic auth.
    state_dir
        Labels, caches, model versions.
    image_cache
        Decoded images kept in memory.
    listing_ttl
        Seconds a series listing is reused before the server is asked again.
    """

    name = "dicomweb"

    def __init__(
        self, url: str, state_dir: Path, *, image_cache: int = 4, listing_ttl: float = 10.0
    ) -> None:
        from urllib.parse import urlsplit, urlunsplit

        import requests
        from dicomweb_client.api import DICOMwebClient

        super().__init__(state_dir, image_cache=image_cache)
        parts = urlsplit(url.rstrip("/"))
        session = requests.Session()
        if parts.username:  # http://user:password@host/dicom-web: HTTP basic authentication
            session.auth = (parts.username, parts.password or "")
            host = parts.hostname or ""
            parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
        self.url = urlunsplit(parts)  # never the password (it appears in messages)
        self.description = f"DICOMweb {self.url}"
        self._client = DICOMwebClient(url=self.url, session=session)
        self._ttl = listing_ttl
        self._listing: tuple[float, dict[str, str]] = (0.0, {})
        self._fetch_lock = threading.Lock()
        self.segments_for: SegmentsFor | None = None

    def _series(self) -> dict[str, str]:
        """SeriesInstanceUID -> StudyInstanceUID of the image series on the server."""
        stamp, cached = self._listing
        if time.monotonic() - stamp < self._ttl:
            return cached
        try:
            found = self._client.search_for_series(fields=["0020000D", "0020000E", "00080060"])
        except Exception as exc:  # requests/HTTP errors of many kinds
            raise PacsError(f"QIDO-RS series search on {self.url} failed: {exc}") from exc
        listing = {}
        for item in found:
            series, study = _value(item, "0020000E"), _value(item, "0020000D")
            if _value(item, "00080060").upper() in NON_IMAGE_MODALITIES:
                continue
            if ID_PATTERN.fullmatch(series) and ".." not in series and study:
                listing[series] = study
        self._listing = (time.monotonic(), listing)
        return listing

    def _discover(self) -> dict[str, Path]:
        cache = self.state_dir / "cache" / "dicom"
        return {uid: cache / uid for uid in self._series()}

    def image_path(self, image_id: str) -> Path:
        """Return the local folder of a series, fetching it with WADO-RS the first time.

        Raises
        ------
        RequestError
            400/404 for an invalid or unknown id.
        PacsError
            If the server does not deliver the series.
        """
        check_id(image_id)
        series = self._series()
        if image_id not in series:
            uploaded = self._uploads().get(image_id)
            if uploaded is not None:
                return uploaded
            raise RequestError(f"series {image_id!r} not found on {self.url}", status=404)
        folder = self.state_dir / "cache" / "dicom" / image_id
        done = folder / ".complete"
        with self._fetch_lock:
            if not done.is_file():
                self._fetch(series[image_id], image_id, folder)
                done.write_text("ok", encoding="utf-8")
        return folder

    def _fetch(self, study: str, series: str, folder: Path) -> None:
        try:
            instances = self._client.retrieve_series(study, series)
        except Exception as exc:  # requests/HTTP errors of many kinds
            raise PacsError(f"WADO-RS retrieve of series {series} failed: {exc}") from exc
        folder.mkdir(parents=True, exist_ok=True)
        for ds in instances:
            uid = str(ds.SOPInstanceUID)
            if not ID_PATTERN.fullmatch(uid):
                continue
            with atomic_path(folder / f"{uid}.dcm") as tmp:
                ds.save_as(tmp, enforce_file_format=True)

    def on_final_label(self, label: LabelVersion) -> None:
        """Store the new final label as a DICOM SEG on its series (STOW-RS).

        Raises
        ------
        PacsError
            If the server refuses the SEG (the label itself is already saved locally).
        """
        from monai_tumor.export.seg import write_dicom_seg
        from monai_tumor.service.labels import read_label

        if self.segments_for is None or label.image not in self._series():
            return
        image = self.load(label.image)
        data = read_label(label.path).as_tensor().to(torch.uint8)
        mask = MetaTensor(data, affine=image.affine.clone(), meta=dict(image.meta))
        segments, algorithm = self.segments_for(image)
        folder = self.image_path(label.image)
        headers = [
            pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))
        ]
        with self.scratch_file(".dcm") as tmp:
            write_dicom_seg(
                mask,
                headers,
                tmp,
                segments=segments,
                algorithm=algorithm,
                config=SegExportConfig(series_description=f"final label v{label.version}"[:64]),
            )
            seg = pydicom.dcmread(tmp)
            try:
                self._client.store_instances([seg])
            except Exception as exc:  # requests/HTTP errors of many kinds
                raise PacsError(
                    f"STOW-RS of the SEG for series {label.image} failed: {exc}; the label "
                    f"is saved locally as version {label.version}"
                ) from exc
        self._listing = (0.0, {})  # the SEG series is new on the server
