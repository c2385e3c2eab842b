"""Batch runs whose studies come from a PACS and whose SEGs go back to it.

:func:`run_dicomweb_batch` is the library behind ``monai-tumor batch --dicomweb URL``:
find the studies (QIDO-RS), select series on their metadata and fetch only those
(:func:`~monai_tumor.pacs.pull.pull_studies`) into ``OUT/.monai-tumor/pacs-cache``, run
the same pipeline as for an export folder (:func:`monai_tumor.pipeline.batch.run_batch`
on that cache), then send each new SEG back by STOW-RS through a persistent
:class:`~monai_tumor.pacs.outbox.Outbox`. :func:`run_dimse_batch` does the same with
C-FIND and C-GET, sending SEGs back by C-STORE.

A rerun resumes: cached instances are not fetched again, finished series are not
segmented again, and SEGs the destination accepted are not sent again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from monai_tumor.errors import EXIT_CODES, ConfigError, PacsError
from monai_tumor.inference.bundle import BundleInfo, read_bundle_info
from monai_tumor.ingest.selection import load_rules
from monai_tumor.pacs.cache import InstanceCache, safe_uid
from monai_tumor.pacs.config import DicomNode, DicomwebConfig
from monai_tumor.pacs.dicomweb import DicomwebClient
from monai_tumor.pacs.dimse import DimseOptions, find_series, get_series, send_files
from monai_tumor.pacs.outbox import Delivery, Outbox
from monai_tumor.pacs.pull import PulledSeries, PullResult, find_studies, pull_studies
from monai_tumor.pipeline.batch import BatchOptions, BatchResult, SeriesStatus, run_batch
from monai_tumor.pipeline.infer import Segmenter
from monai_tumor.pipeline.outputs import SEG_NAME

__all__ = [
    "PacsBatchResult",
    "cache_folder",
    "outbox_for",
    "run_dicomweb_batch",
    "run_dimse_batch",
    "seg_files",
]

_log = logging.getLogger(__name__)

#: Folder of the run's PACS state inside the output folder.
STATE_FOLDER = Path(".monai-tumor")


@dataclass(frozen=True)
class PacsBatchResult:
    """A PACS batch run: what was fetched, the batch itself, what was sent back.

    Attributes
    ----------
    studies
        StudyInstanceUIDs of the run.
    pull
        Series fetched (and the selection of every study).
    batch
        The pipeline's result (per-series records, report paths).
    delivery
        SEGs sent back (``None`` when sending was switched off).
    """

    studies: tuple[str, ...]
    pull: PullResult
    batch: BatchResult
    delivery: Delivery | None

    @property
    def exit_code(self) -> int:
        """The batch's exit code, else that of :class:`PacsError` if a SEG is still unsent."""
        if self.batch.exit_code:
            return self.batch.exit_code
        if self.delivery is not None and not self.delivery.ok:
            return EXIT_CODES[PacsError]
        return 0


def cache_folder(out_dir: str | os.PathLike[str]) -> Path:
    """Where a PACS run keeps the instances it fetched: ``OUT/.monai-tumor/pacs-cache``."""
    return Path(out_dir) / STATE_FOLDER / "pacs-cache"


def outbox_for(out_dir: str | os.PathLike[str], destination: str) -> Outbox:
    """Return the persistent outbox of one destination inside an output folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", destination)[:60].strip("_")
    digest = hashlib.sha256(destination.encode("utf-8")).hexdigest()[:8]
    return Outbox(Path(out_dir) / STATE_FOLDER / "outbox" / f"{slug}-{digest}", destination)


def seg_files(batch: BatchResult, studies: Sequence[str]) -> list[Path]:
    """List the SEG files of the batch's finished series that belong to the given studies."""
    wanted = set(studies)
    found: list[Path] = []
    for record in batch.records:
        if record.status is not SeriesStatus.DONE or record.folder is None:
            continue
        if record.study_instance_uid not in wanted:
            continue
        seg = batch.out_dir / record.folder / SEG_NAME
        if seg.is_file():
            found.append(seg)
    return found


def _deliver(
    out: Path, destination: str, segs: Sequence[Path], send: Callable[[Sequence[Path]], None]
) -> Delivery:
    outbox = outbox_for(out, destination)
    for seg in segs:
        outbox.put(seg)
    delivery = outbox.flush(send)
    for sop, error in delivery.failed:
        _log.warning("SEG %s not sent to %s (kept in the outbox): %s", sop, destination, error)
    return delivery


def _bundle(bundle: str | os.PathLike[str] | BundleInfo) -> BundleInfo:
    return bundle if isinstance(bundle, BundleInfo) else read_bundle_info(Path(bundle))


def _segment_and_send(
    cache: InstanceCache,
    out: Path,
    info: BundleInfo,
    opts: BatchOptions,
    segmenter: Segmenter | None,
    pull: PullResult,
    studies: Sequence[str],
    destination: tuple[str, Callable[[Sequence[Path]], None]] | None,
) -> PacsBatchResult:
    """Run the folder pipeline on the cache, then send the studies' new SEGs."""
    batch = run_batch(
        cache.root,
        out,
        bundle=info,
        options=replace(opts, index_path=opts.index_path or out / STATE_FOLDER / "index.sqlite"),
        segmenter=segmenter,
    )
    delivery = None
    if destination is not None:
        name, send = destination
        delivery = _deliver(out, name, seg_files(batch, studies), send)
    return PacsBatchResult(studies=tuple(studies), pull=pull, batch=batch, delivery=delivery)


def run_dicomweb_batch(
    source: DicomwebConfig,
    out_dir: str | os.PathLike[str],
    *,
    bundle: str | os.PathLike[str] | BundleInfo,
    studies: Sequence[str] = (),
    query: Mapping[str, str] | None = None,
    stow: bool = True,
    stow_to: DicomwebConfig | None = None,
    options: BatchOptions | None = None,
    segmenter: Segmenter | None = None,
) -> PacsBatchResult:
    """Pull studies over DICOMweb, segment them, STOW-RS the SEGs back.

    Parameters
    ----------
    source
        The DICOMweb server to search and retrieve from.
    out_dir
        Output folder, as for :func:`~monai_tumor.pipeline.batch.run_batch`; the fetched
        instances are kept in ``OUT/.monai-tumor/pacs-cache`` (see :func:`cache_folder`)
        and the SEGs waiting to be sent in ``OUT/.monai-tumor/outbox``.
    bundle
        Bundle folder or description.
    studies
        StudyInstanceUIDs.
    query
        QIDO-RS study query (keyword -> value); its studies are added to ``studies``.
    stow
        Send the SEGs back (default). ``False`` keeps them local only.
    stow_to
        Where to send them (default: ``source``).
    options
        The batch options (rules, device, seeds, resume).
    segmenter
        A loaded model (tests, or a caller that keeps one loaded).

    Returns
    -------
    PacsBatchResult
        Its ``exit_code`` is non-zero if a series failed or a SEG could not be sent.

    Raises
    ------
    PacsError
        The source could not be searched or read after the retries (everything fetched
        before is kept; rerun to resume).
    ConfigError
        Bad options (no studies and no query, bad rules).
    """
    opts = options or BatchOptions()
    out = Path(out_dir).expanduser().resolve()
    info = _bundle(bundle)
    rules = load_rules(opts.rules if opts.rules is not None else info.selection_rules)
    client = DicomwebClient(source)
    uids = find_studies(client, study_uids=studies, query=query)
    cache = InstanceCache(cache_folder(out))
    pull = pull_studies(client, uids, rules=rules, cache=cache, seed_objects=opts.seeds_from_export)
    _log.info("%d instances fetched, %d already cached", pull.fetched, pull.cached)
    destination: tuple[str, Callable[[Sequence[Path]], None]] | None = None
    if stow:
        target = DicomwebClient(stow_to) if stow_to is not None else client

        def send(paths: Sequence[Path]) -> None:
            target.store(paths)

        destination = (target.config.safe_url, send)
    return _segment_and_send(cache, out, info, opts, segmenter, pull, uids, destination)


def pull_dimse(
    node: DicomNode,
    study_uids: Sequence[str],
    *,
    cache: InstanceCache,
    options: DimseOptions,
    seed_objects: bool = False,
) -> PullResult:
    """C-FIND the series of each study and C-GET the image series into ``cache``.

    DIMSE queries return only a few series attributes, so every image series of a study
    is fetched (selection then runs on the files, as for a folder); RTSTRUCT/SEG series
    only with ``seed_objects``. A series whose instance count matches the cache is not
    fetched again.

    Raises
    ------
    PacsError
        A study is unknown to the node, or the node failed after the retries.
    """
    pulled: list[PulledSeries] = []
    for study_uid in study_uids:
        series = find_series(node, study_uid, options=options)
        if not series:
            raise PacsError(
                f"study {study_uid} is not on {node} (C-FIND found no series); check the UID"
            )
        for ds in series:
            series_uid = safe_uid(str(ds.get("SeriesInstanceUID", "")), what="SeriesInstanceUID")
            modality = str(ds.get("Modality", "")).upper()
            if modality in ("RTSTRUCT", "SEG") and not seed_objects:
                continue
            if modality in ("SR", "PR", "KO", "REG", "RTPLAN", "RTDOSE"):
                continue
            expected = ds.get("NumberOfSeriesRelatedInstances")
            folder = cache.study_folder(study_uid) / series_uid
            have = len([p for p in folder.glob("*.dcm") if not p.name.startswith(".")])
            fetched = 0
            if expected is None or have < int(expected):
                fetched = len(get_series(node, study_uid, series_uid, cache=cache, options=options))
            total = len([p for p in folder.glob("*.dcm") if not p.name.startswith(".")])
            role = "seeds" if modality in ("RTSTRUCT", "SEG") else "image"
            pulled.append(PulledSeries(study_uid, series_uid, modality, role, total, fetched))
    return PullResult(series=tuple(pulled))


def run_dimse_batch(
    node: DicomNode,
    out_dir: str | os.PathLike[str],
    *,
    bundle: str | os.PathLike[str] | BundleInfo,
    studies: Sequence[str],
    store: bool = True,
    store_to: DicomNode | None = None,
    dimse: DimseOptions | None = None,
    options: BatchOptions | None = None,
    segmenter: Segmenter | None = None,
) -> PacsBatchResult:
    """Query/retrieve studies by C-FIND + C-GET, segment them, C-STORE the SEGs back.

    Parameters
    ----------
    node
        The PACS (it must know our AE title and allow C-FIND and C-GET from it).
    out_dir
        Output folder; instances are kept in ``OUT/.monai-tumor/pacs-cache``.
    bundle
        Bundle folder or description.
    studies
        StudyInstanceUIDs.
    store
        Send the SEGs back by C-STORE (default).
    store_to
        Where to (default: ``node``).
    dimse
        Our AE title, TLS, timeouts, retries.
    options
        The batch options.
    segmenter
        A loaded model.

    Returns
    -------
    PacsBatchResult
        As :func:`run_dicomweb_batch`.
    """
    if not studies:
        raise ConfigError("give the studies to retrieve (--study or --studies-from)")
    opts = options or BatchOptions()
    net = dimse or DimseOptions()
    out = Path(out_dir).expanduser().resolve()
    info = _bundle(bundle)
    cache = InstanceCache(cache_folder(out))
    cache.check_writable()
    pull = pull_dimse(node, studies, cache=cache, options=net, seed_objects=opts.seeds_from_export)
    destination: tuple[str, Callable[[Sequence[Path]], None]] | None = None
    if store:
        target = store_to or node

        def send(paths: Sequence[Path]) -> None:
            send_files(paths, target, options=net)

        destination = (str(target), send)
    return _segment_and_send(cache, out, info, opts, segmenter, pull, studies, destination)
