"""One row of a batch run: :class:`SeriesRecord` and its :class:`SeriesStatus`.

A record is what the planner makes for every image series of an export, what
the runner returns for a work item (a copy of the planned record with the
outcome filled in) and what the report writes, one row per series, to
``summary.json`` (every field, see :meth:`SeriesRecord.to_dict`) and
``summary.csv`` (:data:`monai_tumor.pipeline.report.CSV_COLUMNS`).

It is small and picklable (strings and numbers only), so it travels back from
a Dask worker as it is. To report something new per series, add a field with a
default here (it appears in ``summary.json``), and its name to ``CSV_COLUMNS``
if it belongs in the CSV too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

__all__ = ["SeriesRecord", "SeriesStatus", "review_fields"]


class SeriesStatus(str, Enum):
    """Outcome of one series in a batch run."""

    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    #: Planned but not finished (only seen in a report of an interrupted run).
    PENDING = "pending"


#: Field metadata key: ``False`` keeps a field out of ``summary.json``.
_IN_REPORT = "in_report"


@dataclass(frozen=True)
class SeriesRecord:
    """One image series of the export and what the run did with it.

    Attributes
    ----------
    study_key, series_key
        Hashed folder names (:func:`~monai_tumor.pipeline.outputs.study_key`).
    study_instance_uid, series_instance_uid
        The UIDs.
    modality, series_number, series_description
        As stored; the description is scrubbed of the patient's name and ID.
    number_of_slices
        Frames over all stacks.
    status
        done / skipped / failed / pending.
    reason
        Selection reason (skipped), error text (failed), SEG status (done).
    folder
        Output folder relative to the run's output folder (done series).
    reused
        The outputs were complete from an earlier run.
    inputs
        Model input name -> SeriesInstanceUID (done/failed series).
    lesion_count, total_volume_ml, largest_diameter_mm
        From ``lesions.json`` (done series).
    review, review_reasons
        Done series: the plausibility review (:mod:`monai_tumor.postprocess.review`) found
        the result implausible, and why; a person should look before using it.
    malignancy_probabilities, malignancy_model
        Per-lesion probabilities of the classification bundle, in lesion order, and its
        folder name and version (done series of a run with a classifier).
    seconds
        Time spent on the series (read + inference + writing).
    error_type
        Exception class of a failure.
    worker
        What ran the series: ``"local"`` (this process) or the Dask worker's
        address (``None`` for series not run in this run).
    attempts
        Runs of the series in this run (more than 1 when a Dask worker died
        while running it).
    exit_code
        CLI exit code of that exception class (:data:`monai_tumor.errors.EXIT_CODES`;
        1 for errors outside the package's hierarchy). Not written to the report.
    """

    study_key: str
    series_key: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    number_of_slices: int
    status: SeriesStatus
    reason: str
    folder: str | None = None
    reused: bool = False
    inputs: Mapping[str, str] = field(default_factory=dict)
    lesion_count: int | None = None
    total_volume_ml: float | None = None
    largest_diameter_mm: float | None = None
    review: bool = False
    review_reasons: tuple[str, ...] = ()
    malignancy_probabilities: tuple[float, ...] | None = None
    malignancy_model: str | None = None
    seconds: float | None = None
    error_type: str | None = None
    worker: str | None = None
    attempts: int | None = None
    exit_code: int | None = field(default=None, metadata={_IN_REPORT: False})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the rows of ``summary.json``): every field in declaration order."""
        row: dict[str, Any] = {}
        for f in fields(self):
            if not f.metadata.get(_IN_REPORT, True):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "seconds" and value is not None:
                value = round(value, 3)
            row[f.name] = value
        return row


def review_fields(review: Any) -> dict[str, Any]:
    """``review`` / ``review_reasons`` record fields from a review dict.

    Parameters
    ----------
    review
        ``ReviewResult.to_dict()`` as written into ``lesions.json`` and the manifest, or
        ``None`` (no review declared): then no fields.
    """
    if not isinstance(review, Mapping):
        return {}
    return {
        "review": bool(review.get("review")),
        "review_reasons": tuple(str(r) for r in review.get("reasons", ())),
    }
