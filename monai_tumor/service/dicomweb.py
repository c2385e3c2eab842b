"""A DICOMweb server (e.g. Orthanc) as the annotation server's image source.

Series are listed with QIDO-RS (image modalities only; SEG, RTSTRUCT, SR, PR are not images
to annotate), fetched once with WADO-RS into ``<state>/cache/dicom/<SeriesInstanceUID>/``
and read with the project's reader. Every new ``final`` label is also written as a DICOM
SEG on its source series (:func:`monai_tumor.export.seg.write_dicom_seg`) and stored back
with STOW-RS, so viewers that read the server (OHIF) see the corrected segmentation.

The HTTP goes through :class:`monai_tumor.pacs.DicomwebClient` (authentication, timeouts,
retries, errors as :class:`~monai_tumor.errors.PacsError`) and the instances land in its
:class:`~monai_tumor.pacs.InstanceCache`; image ids are SeriesInstanceUIDs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
import torch
from monai.data import MetaTensor

from monai_tumor.errors import RequestError
from monai_tumor.export.seg import AlgorithmInfo, SegExportConfig, SegmentSpec
from monai_tumor.service.datastore import ID_PATTERN, Datastore, LabelVersion, check_id

__all__ = ["NON_IMAGE_MODALITIES", "DicomWebDatastore", "SegmentsFor"]

logger = logging.getLogger(__name__)

#: Series of these modalities are not offered as images.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "DOC"})

#: Given an image (its meta carries ``Modality``), the SEG segments and algorithm to write.
SegmentsFor = Callable[[MetaTensor], tuple[Sequence[SegmentSpec], AlgorithmInfo]]


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
        from urllib.parse import unquote, urlsplit, urlunsplit

        from monai_tumor.pacs import DicomwebClient, DicomwebConfig, InstanceCache

        super().__init__(state_dir, image_cache=image_cache)
        parts = urlsplit(url.rstrip("/"))
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password or "") if parts.username else None
        host = parts.hostname or ""
        plain = urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))
        self.url = plain  # never the password (it appears in messages)
        self.description = f"DICOMweb {self.url}"
        self._client = DicomwebClient(DicomwebConfig(plain, username=user, password=password))
        self._instances = InstanceCache(self.state_dir / "cache" / "dicom")
        self._ttl = listing_ttl
        self._listing: tuple[float, dict[str, str]] = (0.0, {})
        self._fetch_lock = threading.Lock()
        self.segments_for: SegmentsFor | None = None

    def _series(self) -> dict[str, str]:
        """SeriesInstanceUID -> StudyInstanceUID of the image series on the server."""
        stamp, cached = self._listing
        if time.monotonic() - stamp < self._ttl:
            return cached
        listing = {}
        for study in self._client.search_studies():
            study_uid = str(study.get("StudyInstanceUID", ""))
            if not study_uid:
                continue
            for item in self._client.search_series(study_uid):
                series = str(item.get("SeriesInstanceUID", ""))
                if str(item.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
                    continue
                if ID_PATTERN.fullmatch(series) and ".." not in series:
                    listing[series] = study_uid
        self._listing = (time.monotonic(), listing)
        return listing

    def _discover(self) -> dict[str, Path]:
        return {
            uid: self._instances.study_folder(study) / uid for uid, study in self._series().items()
        }

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
        study = series[image_id]
        folder = self._instances.study_folder(study) / image_id
        done = folder / ".complete"
        with self._fetch_lock:
            if not done.is_file():
                for instance in self._client.series_metadata(study, image_id):
                    sop = str(instance.get("SOPInstanceUID", ""))
                    self._client.fetch_instance(study, image_id, sop, cache=self._instances)
                done.write_text("ok", encoding="utf-8")
        return folder

    def on_final_label(self, label: LabelVersion) -> None:
        """Store the new final label as a DICOM SEG on its series (STOW-RS).

        Raises
        ------
        PacsError
            If the server refuses the SEG (the label itself is already saved locally as
            ``label.version``).
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
            self._client.store([tmp], study_uid=str(image.meta.get("StudyInstanceUID", "")) or None)
        self._listing = (0.0, {})  # the SEG series is new on the server
