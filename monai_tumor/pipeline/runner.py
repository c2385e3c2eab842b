"""Running work items: read, segment, write outputs (manifest last), return a record.

The three stages of one :class:`~monai_tumor.pipeline.plan.WorkItem` are
separate functions, so the same code runs the items in two arrangements:

- :func:`run_work_item` runs one item start to end (read -> segment -> write)
  and returns its :class:`~monai_tumor.pipeline.records.SeriesRecord`: what a
  worker process executes per task;
- :func:`run_items_locally` pipelines them on one machine: the next item is
  read in a background thread while the current one is segmented, and
  outputs are written by a pool of threads (the arrangement of nnU-Net's
  predictor: data iterator, network, export).

Nothing here raises for a bad series: a failure becomes a ``failed`` record
with the error text (paths shown relative to the export, the patient's name
and ID scrubbed), so one bad series never stops a run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pydicom
from monai.data import MetaTensor

from monai_tumor.errors import EXIT_CODES, MonaiTumorError
from monai_tumor.ingest.reader import ReadOptions, read_series
from monai_tumor.ingest.selection import load_inputs
from monai_tumor.ingest.sidecar import acquisition_fields
from monai_tumor.pipeline.analysis import malignancy_model_name, malignancy_probabilities
from monai_tumor.pipeline.infer import (
    Segmenter,
    filter_seeds,
    read_source_headers,
    source_provenance,
)
from monai_tumor.pipeline.outputs import write_series_outputs
from monai_tumor.pipeline.plan import RunContext, WorkItem
from monai_tumor.pipeline.records import SeriesRecord, SeriesStatus, review_fields
from monai_tumor.postprocess.review import ReviewResult, review_prediction
from monai_tumor.radiomics.pool import FeaturePool

if TYPE_CHECKING:
    from monai_tumor.inference.seeds import Seed

__all__ = [
    "LOCAL_WORKER",
    "LoadedItem",
    "failed_record",
    "load_item",
    "run_items_locally",
    "run_work_item",
    "segment_and_write",
    "write_item",
]

_log = logging.getLogger(__name__)

#: ``SeriesRecord.worker`` of series run in the client's own process.
LOCAL_WORKER = "local"


@dataclass
class LoadedItem:
    """A work item with its inputs read (or the error that stopped the reading).

    Attributes
    ----------
    item
        The work item.
    image
        The model input: the reference series, or every input on its grid
        (multi-channel).
    reference
        The reference series (outputs are on its grid).
    images
        Each input as read.
    datasets
        Headers of the reference series' instances (the SEG references them).
    seeds, seed_problems
        VOI bundles: the seeds inside the volume, and why seed sources gave none.
    error
        The exception that stopped the reading, if any.
    seconds
        Time spent reading.
    """

    item: WorkItem
    image: MetaTensor | None = None
    reference: MetaTensor | None = None
    images: dict[str, MetaTensor] = field(default_factory=dict)
    datasets: list[pydicom.Dataset] = field(default_factory=list)
    seeds: list[Seed] = field(default_factory=list)
    seed_problems: list[str] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0


def _exit_code(exc: BaseException) -> int:
    """Exit code of the most specific known error class (1 for anything else)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def _short_error(exc: BaseException, export_dir: os.PathLike[str] | str) -> str:
    text = f"{exc}" or type(exc).__name__
    export = str(export_dir)
    return text.replace(export + os.sep, "EXPORT/").replace(export, "EXPORT")


def failed_record(
    item: WorkItem, exc: BaseException, seconds: float, context: RunContext
) -> SeriesRecord:
    """Return the ``failed`` record of an item: error text (scrubbed), class, exit code."""
    _log.warning("series %s failed: %s", item.record.series_key, type(exc).__name__)
    return replace(
        item.record,
        status=SeriesStatus.FAILED,
        reason=item.redact(_short_error(exc, context.export_dir)),
        error_type=type(exc).__name__,
        exit_code=_exit_code(exc),
        seconds=seconds,
    )


def _load_seeds(
    item: WorkItem, reference: MetaTensor, context: RunContext
) -> tuple[list[Seed], list[str]]:
    """Seeds inside the reference volume, and why seed sources gave none."""
    from monai_tumor.inference.seeds import seeds_from_csv, seeds_from_rtstruct, seeds_from_seg

    seeds: list[Seed] = []
    problems: list[str] = []
    if context.seeds_csv is not None:
        seeds += list(
            seeds_from_csv(
                context.seeds_csv,
                series_uid=item.record.series_instance_uid,
                study_uid=item.record.study_instance_uid,
            )
        )
    for obj in item.seed_objects:
        try:
            if obj.modality == "SEG":
                seeds += list(seeds_from_seg(obj.path, reference))
            else:
                seeds += list(seeds_from_rtstruct(obj.path, reference, roi=context.seed_roi))
        except MonaiTumorError as exc:
            problems.append(f"{obj.modality} {obj.sop_instance_uid}: {exc.reason}")
    return filter_seeds(seeds, reference), problems


def load_item(item: WorkItem, context: RunContext) -> LoadedItem:
    """Read every input of an item, its source headers and (VOI bundles) its seeds.

    Never raises: an error is kept in :attr:`LoadedItem.error`.
    """
    start = time.perf_counter()
    loaded = LoadedItem(item)
    try:
        read_opts = ReadOptions()
        names = tuple(item.inputs)
        for name in names:
            loaded.images[name] = read_series(
                list(item.files[name]), options=read_opts, series_uid=item.inputs[name]
            )
        ref = loaded.images[item.reference]
        loaded.reference = ref
        loaded.image = (
            ref
            if len(names) == 1
            else load_inputs(loaded.images, reference=item.reference, order=names)
        )
        loaded.datasets = read_source_headers(
            list(item.files[item.reference]), item.inputs[item.reference]
        )
        if context.bundle.kind == "voi":
            loaded.seeds, loaded.seed_problems = _load_seeds(item, ref, context)
    except Exception as exc:  # one bad series never stops the run
        loaded.error = exc
    loaded.seconds = time.perf_counter() - start
    return loaded


def _not_segmentable(loaded: LoadedItem, context: RunContext) -> SeriesRecord | None:
    """Return the record of an unsegmentable item (read failed, no seeds), else None."""
    item = loaded.item
    if loaded.error is not None:
        return failed_record(item, loaded.error, loaded.seconds, context)
    if context.bundle.kind == "voi" and not loaded.seeds:
        problems = "; ".join(loaded.seed_problems)
        return replace(
            item.record,
            status=SeriesStatus.SKIPPED,
            reason=f"the {context.bundle.name!r} bundle segments around seed points and none "
            "of the given seeds lies inside this series" + (f" ({problems})" if problems else ""),
        )
    return None


def write_item(
    loaded: LoadedItem,
    mask: MetaTensor,
    infer_seconds: float,
    context: RunContext,
    *,
    feature_pool: FeaturePool | None = None,
) -> SeriesRecord:
    """Write an item's outputs atomically, ``manifest.json`` last; return its record.

    Never raises: a failed write gives a ``failed`` record. ``feature_pool``: worker
    processes for the radiomics features (default: computed in this thread).
    """
    item = loaded.item
    t0 = time.perf_counter()
    assert loaded.reference is not None and item.record.folder is not None
    try:

        def review() -> ReviewResult | None:  # run once the lesion analysis has started
            return _review(loaded, mask, context)

        analysis = context.analysis.load(pool=feature_pool) if not context.analysis.empty else None
        outputs = write_series_outputs(
            context.out_dir / item.record.folder,
            image=loaded.reference,
            mask=mask,
            bundle=context.bundle,
            cache_key=item.cache_key,
            provenance=source_provenance(context.bundle, loaded.images, loaded.seeds),
            source_datasets=loaded.datasets,
            overlay=context.overlay,
            viewer=context.viewer,
            run_dir=context.out_dir,
            extra={
                "series": acquisition_fields(loaded.datasets[0]) if loaded.datasets else {},
                "inputs": dict(item.inputs),
                "seconds_read": round(loaded.seconds, 3),
                "seconds_inference": round(infer_seconds, 3),
            },
            review=review,
            analysis=analysis,
        )
    except Exception as exc:  # one bad series never stops the run
        seconds = loaded.seconds + infer_seconds + time.perf_counter() - t0
        return failed_record(item, exc, seconds, context)
    total = loaded.seconds + infer_seconds + time.perf_counter() - t0
    _log.info("series %s done in %.1f s", item.record.series_key, total)
    return replace(
        item.record,
        status=SeriesStatus.DONE,
        reason=f"SEG {outputs.seg_status}",
        lesion_count=outputs.lesion_count,
        total_volume_ml=outputs.total_volume_ml,
        largest_diameter_mm=outputs.largest_diameter_mm,
        malignancy_probabilities=malignancy_probabilities(outputs.manifest),
        malignancy_model=malignancy_model_name(outputs.manifest),
        seconds=total,
        **review_fields(outputs.review.to_dict() if outputs.review is not None else None),
    )


def _review(loaded: LoadedItem, mask: MetaTensor, context: RunContext) -> ReviewResult | None:
    """Review one result as the bundle declares (None without a review block)."""
    if loaded.image is None:
        return None
    bundle = context.bundle
    result = review_prediction(
        loaded.image, mask, spec=bundle.review, input_names=bundle.input_names
    )
    if result is not None and result.review:
        _log.warning("series %s needs review: %s", loaded.item.record.series_key, result.reasons)
    return result


def _segment(
    loaded: LoadedItem, segmenter: Segmenter, context: RunContext
) -> tuple[MetaTensor | None, float, SeriesRecord | None]:
    """Segment a loaded item: (mask, seconds, None), or (None, seconds, final record)."""
    early = _not_segmentable(loaded, context)
    if early is not None:
        return None, 0.0, early
    assert loaded.image is not None
    t0 = time.perf_counter()
    try:
        mask = segmenter.segment(loaded.image, seeds=tuple(loaded.seeds))
    except Exception as exc:  # one bad series never stops the run
        seconds = time.perf_counter() - t0
        return None, seconds, failed_record(loaded.item, exc, loaded.seconds + seconds, context)
    return mask, time.perf_counter() - t0, None


def segment_and_write(
    loaded: LoadedItem, segmenter: Segmenter, context: RunContext
) -> SeriesRecord:
    """Segment a loaded item and write its outputs; return its record (never raises)."""
    mask, seconds, record = _segment(loaded, segmenter, context)
    if record is not None:
        return record
    assert mask is not None
    return write_item(loaded, mask, seconds, context)


def run_work_item(item: WorkItem, context: RunContext, segmenter: Segmenter) -> SeriesRecord:
    """Run one item start to end: read, segment, write; return its record.

    Parameters
    ----------
    item
        What to segment (from :func:`monai_tumor.pipeline.plan.plan_batch`).
    context
        Run-wide settings (output folder, bundle, seed options).
    segmenter
        The loaded model.

    Returns
    -------
    SeriesRecord
        ``done``, ``skipped`` (VOI bundle, no seed inside the series) or
        ``failed`` (with the error); never raises for a bad series.
    """
    return segment_and_write(load_item(item, context), segmenter, context)


def run_items_locally(
    items: Sequence[WorkItem],
    context: RunContext,
    segmenter: Segmenter,
    *,
    writers: int,
    on_result: Callable[[SeriesRecord], None],
    feature_pool: FeaturePool | None = None,
) -> None:
    """Run items on this machine: prefetch-read ‖ segment ‖ write.

    The next item is read in one background thread while the current one is
    segmented on the calling thread; outputs are written by ``writers`` threads
    (at most that many segmented items are held in memory for writing).

    Parameters
    ----------
    items
        The items to run, in order.
    context
        Run-wide settings.
    segmenter
        The loaded model (called from the calling thread only).
    writers
        Output-writing threads.
    on_result
        Called with each item's record as soon as it is final, ``worker`` set
        to :data:`LOCAL_WORKER` and ``attempts`` to 1 (from the calling thread
        or a writer thread: it must be thread-safe).
    feature_pool
        Worker processes for the radiomics features (default: computed by the writer
        threads, holding the interpreter the segmentation and reading also need).
    """
    if not items:
        return
    writers = max(1, writers)
    pending_writes: list[Future[None]] = []
    slots = threading.BoundedSemaphore(writers)

    def publish(record: SeriesRecord) -> None:
        on_result(replace(record, worker=LOCAL_WORKER, attempts=1))

    def write(loaded: LoadedItem, mask: MetaTensor, seconds: float) -> None:
        publish(write_item(loaded, mask, seconds, context, feature_pool=feature_pool))

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-read") as reader,
        ThreadPoolExecutor(max_workers=writers, thread_name_prefix="batch-write") as writer,
    ):
        next_read: Future[LoadedItem] | None = reader.submit(load_item, items[0], context)
        for i in range(len(items)):
            assert next_read is not None
            loaded = next_read.result()
            # Prefetch: the next series is read while this one is segmented.
            next_read = (
                reader.submit(load_item, items[i + 1], context) if i + 1 < len(items) else None
            )
            mask, seconds, record = _segment(loaded, segmenter, context)
            if record is not None:
                publish(record)
                continue
            assert mask is not None
            # Bound memory: at most `writers` series held for writing at once.
            slots.acquire()
            future = writer.submit(write, loaded, mask, seconds)
            future.add_done_callback(lambda _f: slots.release())
            pending_writes.append(future)
        for future in pending_writes:
            future.result()
