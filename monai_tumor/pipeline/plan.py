"""Planning a batch run: scan + index + selection -> a record per series and work items.

:func:`plan_batch` is the client's half of a batch run. From a scan
(:func:`monai_tumor.ingest.scan.scan_export`) and its SQLite index it chooses,
per study, the series for each bundle input (the bundle's selection rules) and
returns a :class:`BatchPlan`:

- ``records``: one :class:`~monai_tumor.pipeline.records.SeriesRecord` per
  image series, in export order: ``skipped`` with the reason, or ``pending``
  for a series to segment;
- ``items``: one :class:`WorkItem` per series to segment, carrying everything
  a runner needs (input files, seed objects, cache key) and nothing that needs
  the index: a plan is picklable and can be shipped to other processes or
  hosts (:mod:`monai_tumor.pipeline.runner` executes one item);
- ``context``: the run-wide settings every item is run with (:class:`RunContext`).

:meth:`BatchPlan.resume` then splits the items into the ones whose outputs are
already complete (reused records) and the ones still to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from monai_tumor.errors import ConfigError
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.records import NonImageObject
from monai_tumor.ingest.scan import ScanResult
from monai_tumor.ingest.selection import SelectionResult, SelectionRules, select_series
from monai_tumor.ingest.series import SeriesInfo, StudyInfo
from monai_tumor.ingest.sidecar import acquisition_fields, identifier_strings, redact_identifiers
from monai_tumor.pipeline.analysis import (
    AnalysisSpec,
    malignancy_model_name,
    malignancy_probabilities,
)
from monai_tumor.pipeline.infer import reference_input
from monai_tumor.pipeline.outputs import (
    OverlayStyle,
    cache_key_for,
    completed_manifest,
    series_key,
    study_key,
)
from monai_tumor.pipeline.records import SeriesRecord, SeriesStatus, review_fields
from monai_tumor.report.viewer import ViewerOptions

__all__ = ["BatchPlan", "RunContext", "WorkItem", "plan_batch"]


@dataclass(frozen=True)
class RunContext:
    """Run-wide settings a runner needs besides the work item (picklable).

    Attributes
    ----------
    export_dir
        The export (absolute); error texts show paths relative to it.
    out_dir
        The run's output folder (absolute); ``WorkItem.record.folder`` is
        relative to it. Every runner must see it at this path.
    bundle
        The bundle description (its folder must be readable by every runner).
    seeds_csv
        CSV of LPS seed points (VOI bundles), or ``None``.
    seed_roi
        Regular expression of RTSTRUCT ROI names that give seeds (``None``: all).
    overlay
        Quick-look options.
    viewer
        Options of each series' 3D viewer page; ``None`` writes none.
    analysis
        Radiomics features and classifier per lesion (part of the cache key).
    """

    export_dir: Path
    out_dir: Path
    bundle: BundleInfo
    seeds_csv: Path | None = None
    seed_roi: str | None = "(?i)gtv"
    overlay: OverlayStyle = field(default_factory=OverlayStyle)
    viewer: ViewerOptions | None = field(default_factory=ViewerOptions)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)


@dataclass(frozen=True)
class WorkItem:
    """One series to segment, with everything needed to do it (picklable, no index).

    Attributes
    ----------
    record
        The planned record (status ``pending``, ``folder`` and ``inputs`` set);
        the runner returns a copy with the outcome.
    inputs
        Model input name -> SeriesInstanceUID, in channel order.
    reference
        The input whose grid the label map is on (outputs reference it).
    files
        Input name -> the series' files.
    seed_objects
        RTSTRUCT/SEG objects of the export giving seed points (VOI bundles).
    cache_key
        Key of complete outputs (:func:`~monai_tumor.pipeline.outputs.cache_key_for`).
    identifiers
        The patient's name and ID strings, to scrub them from error texts
        (:func:`~monai_tumor.ingest.sidecar.redact_identifiers`). Never logged
        (kept out of ``repr``).
    """

    record: SeriesRecord
    inputs: Mapping[str, str]
    reference: str
    files: Mapping[str, tuple[Path, ...]]
    seed_objects: tuple[NonImageObject, ...]
    cache_key: str
    identifiers: tuple[str, ...] = field(default=(), repr=False)

    @property
    def series_instance_uid(self) -> str:
        """SeriesInstanceUID of the reference series (the record's)."""
        return self.record.series_instance_uid

    def redact(self, text: str) -> str:
        """``text`` with the patient's name and ID replaced."""
        return redact_identifiers(text, list(self.identifiers))


@dataclass(frozen=True)
class BatchPlan:
    """What a batch run has to do (picklable; holds no index or open file).

    Attributes
    ----------
    records
        One per image series of the export, in export order (``skipped`` or ``pending``).
    items
        One per ``pending`` record, in the same order.
    context
        Settings every item is run with.
    """

    records: tuple[SeriesRecord, ...]
    items: tuple[WorkItem, ...]
    context: RunContext

    def resume(self, *, force: bool = False) -> tuple[list[WorkItem], list[SeriesRecord]]:
        """Split the items into those to run and the records of those already done.

        An item is done when its output folder holds a complete manifest with the
        same cache key (:func:`~monai_tumor.pipeline.outputs.completed_manifest`).

        Parameters
        ----------
        force
            Run every item even when complete outputs exist.

        Returns
        -------
        todo : list of WorkItem
            Items to run, in plan order.
        reused : list of SeriesRecord
            ``done`` records (``reused=True``) of the items with complete outputs.
        """
        todo: list[WorkItem] = []
        reused: list[SeriesRecord] = []
        for item in self.items:
            folder = item.record.folder
            manifest = (
                None
                if force or folder is None
                else completed_manifest(self.context.out_dir / folder, item.cache_key)
            )
            if manifest is None:
                todo.append(item)
                continue
            reused.append(
                replace(
                    item.record,
                    status=SeriesStatus.DONE,
                    reason="reused: complete outputs with the same cache key "
                    f"(SEG {manifest.get('seg')})",
                    reused=True,
                    lesion_count=manifest.get("lesion_count"),
                    total_volume_ml=manifest.get("total_volume_ml"),
                    largest_diameter_mm=manifest.get("largest_diameter_3d_mm"),
                    **review_fields(manifest.get("review")),
                    malignancy_probabilities=malignancy_probabilities(manifest),
                    malignancy_model=malignancy_model_name(manifest),
                    seconds=0.0,
                )
            )
        return todo, reused


def plan_batch(
    scan: ScanResult,
    index: SeriesIndex,
    *,
    rules: SelectionRules,
    context: RunContext,
    seeds_from_export: bool = False,
    seeds_csv_digest: str = "",
) -> BatchPlan:
    """Choose the series to segment and describe each as a self-contained work item.

    Parameters
    ----------
    scan
        The export's scan.
    index
        Its SQLite index (only read here, for the files of each series).
    rules
        Series selection rules (the bundle's, or the user's).
    context
        Run-wide settings (bundle, output folder, seed options).
    seeds_from_export
        VOI bundles: seeds come from RTSTRUCT/SEG objects of the export that
        refer to the series (by SeriesInstanceUID, else by FrameOfReferenceUID).
    seeds_csv_digest
        Hash of ``context.seeds_csv`` (part of the cache key).

    Returns
    -------
    BatchPlan
        Records for every image series, work items for the chosen ones.

    Raises
    ------
    ConfigError
        The rules do not name the bundle's inputs.
    """
    bundle = context.bundle
    records: list[SeriesRecord] = []
    items: list[WorkItem] = []
    names = tuple(bundle.input_names)
    ref_name = reference_input(bundle)
    if set(names) - set(rules.names):
        raise ConfigError(
            f"the selection rules name inputs {list(rules.names)} but the bundle "
            f"{bundle.name!r} needs {list(names)}; use rules written for this bundle"
        )
    for patient in scan.patients:
        for study in patient.studies:
            if not study.series:
                continue
            files = {
                s.series_instance_uid: tuple(index.files_for_series(s.series_instance_uid))
                for s in study.series
            }
            headers = {uid: _first_header(f) for uid, f in files.items()}
            identifiers = {uid: tuple(identifier_strings(h)) for uid, h in headers.items()}
            selection = select_series(study.series, rules)
            chosen = selection.selected
            ref_uid = chosen.get(ref_name) if selection.ok else None
            for info in study.series:
                uid = info.series_instance_uid
                record = _base_record(info, headers[uid])
                if uid != ref_uid:
                    if uid in chosen.values() and selection.ok:
                        which = [n for n, u in chosen.items() if u == uid]
                        reason = (
                            f"input {', '.join(which)} of the series "
                            f"{series_key(ref_uid or '')} (outputs are written there)"
                        )
                    else:
                        reason = redact_identifiers(
                            _skip_reason(uid, selection), list(identifiers[uid])
                        )
                    records.append(replace(record, status=SeriesStatus.SKIPPED, reason=reason))
                    continue
                inputs = {n: chosen[n] for n in names}
                seed_objects: tuple[NonImageObject, ...] = ()
                seed_source = ""
                if bundle.kind == "voi":
                    if seeds_from_export:
                        seed_objects = _seed_objects(info, study)
                        seed_source += "objects:" + ",".join(
                            o.sop_instance_uid for o in seed_objects
                        )
                    if context.seeds_csv is not None:
                        seed_source += f"|csv:{seeds_csv_digest}"
                    if not seed_objects and context.seeds_csv is None:
                        why = (
                            "no RTSTRUCT or SEG in the export refers to this series"
                            if seeds_from_export
                            else "no seeds given (--seeds CSV or --seeds-from-rtstruct)"
                        )
                        records.append(
                            replace(
                                record,
                                status=SeriesStatus.SKIPPED,
                                reason=f"the {bundle.name!r} bundle segments around seed "
                                f"points: {why}",
                            )
                        )
                        continue
                record = replace(
                    record, inputs=inputs, folder=f"{record.study_key}/{record.series_key}"
                )
                records.append(record)
                items.append(
                    WorkItem(
                        record=record,
                        inputs=inputs,
                        reference=ref_name,
                        files={n: files[u] for n, u in inputs.items()},
                        seed_objects=seed_objects,
                        cache_key=cache_key_for(
                            list(inputs.values()),
                            bundle,
                            seeds=[seed_source, context.analysis.cache_token()],
                        ),
                        identifiers=identifiers[uid],
                    )
                )
    return BatchPlan(records=tuple(records), items=tuple(items), context=context)


def _first_header(files: Sequence[Path]) -> pydicom.Dataset | None:
    for path in files[:3]:
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
    return None


def _base_record(info: SeriesInfo, header: pydicom.Dataset | None) -> SeriesRecord:
    description = str(acquisition_fields(header).get("SeriesDescription", "")) if header else ""
    return SeriesRecord(
        study_key=study_key(info.study_instance_uid),
        series_key=series_key(info.series_instance_uid),
        study_instance_uid=info.study_instance_uid,
        series_instance_uid=info.series_instance_uid,
        modality=info.modality,
        series_number=info.series_number,
        series_description=description,
        number_of_slices=info.number_of_slices,
        status=SeriesStatus.PENDING,
        reason="",
    )


def _skip_reason(uid: str, selection: SelectionResult) -> str:
    """Why a series of a study was not chosen (every input's rejection)."""
    if not selection.ok:
        missing = ", ".join(repr(n) for n in selection.missing)
        head = f"the study lacks required input {missing}"
    else:
        head = "not selected"
    parts = []
    for sel in selection.inputs.values():
        for rejection in sel.rejected:
            if rejection.series_uid == uid:
                parts.append(f"{sel.name}: {rejection.reason}")
    return head + (" (" + "; ".join(parts) + ")" if parts else "")


def _frame_of_reference_of(obj: NonImageObject) -> str:
    """FrameOfReferenceUID an RTSTRUCT or SEG refers to (header read)."""
    try:
        ds = pydicom.dcmread(obj.path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return ""
    if "FrameOfReferenceUID" in ds:
        return str(ds.FrameOfReferenceUID)
    refs = ds.get("ReferencedFrameOfReferenceSequence")
    if refs:
        return str(refs[0].get("FrameOfReferenceUID", ""))
    return ""


def _seed_objects(info: SeriesInfo, study: StudyInfo) -> tuple[NonImageObject, ...]:
    """RTSTRUCT/SEG objects of the study that refer to this series (UID, else frame)."""
    direct = tuple(
        o for o in study.non_image_objects if info.series_instance_uid in o.referenced_series_uids
    )
    if direct:
        return direct
    frame = str(info.attributes.get("FrameOfReferenceUID") or "")
    if not frame:
        return ()
    return tuple(o for o in study.non_image_objects if _frame_of_reference_of(o) == frame)
