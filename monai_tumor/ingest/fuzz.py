"""Mutated DICOM files and the check that every one is read or refused cleanly.

Used by the test suite (a couple of thousand cases) and by
``benchmarks/bench_fuzz.py`` (a hundred thousand and more): each case is a real
DICOM file with one mutation (bytes flipped, the file cut short, or an absurd
header value), read the way an export is read (:func:`inspect_file`, then
:func:`read_series` on an image), and judged:

* ``accepted``: a volume with a finite affine and positive spacing came out;
* ``skipped``: the header scan listed the file as skipped, with a reason;
* ``refused``: a :class:`~monai_tumor.errors.MonaiTumorError` naming the file;
* anything else is a defect: ``unnamed`` (our error without the file's name),
  ``crashed`` (any other exception), ``bad_volume`` (a volume with a non-finite
  affine or non-positive spacing), ``hung`` (over the per-case time limit,
  see :func:`run_cases`).

Mutations never need to be decoded to be written: absurd values are written as
raw element bytes, so the file says exactly what the mutation says.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.dataset
import pydicom.uid
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from monai_tumor.errors import MonaiTumorError

__all__ = [
    "DEFECTS",
    "SEED_FILES",
    "FuzzCase",
    "FuzzReport",
    "Mutation",
    "Outcome",
    "check_file",
    "make_case",
    "run_cases",
]


#: Real files of the shared data used as seeds (paths relative to the data root):
#: CT, MR and PET slices, the same MR image in nine transfer syntaxes (explicit and
#: implicit little endian, big endian, RLE, JPEG lossless, JPEG-LS, JPEG 2000).
SEED_FILES: tuple[str, ...] = (
    "sts/STS_001/CT/dicom/image/000000.dcm",
    "sts/STS_002/MR_T1/dicom/image/000000.dcm",
    "sts/STS_003/PET/dicom/image/000000.dcm",
    *(f"dcm_qa_ts/In/{i}.dcm" for i in range(1, 10)),
)


class Mutation(str, Enum):
    """What is done to the seed file."""

    BYTE_FLIPS = "byte_flips"
    """1 to 16 random bytes of the header region (or anywhere) replaced."""
    TRUNCATE = "truncate"
    """The file cut at a random length."""
    HUGE_ROWS_COLUMNS = "huge_rows_columns"
    """Rows and Columns 65535."""
    HUGE_FRAMES = "huge_frames"
    """NumberOfFrames 999999 (with Rows/Columns 65535: a 65535 x 65535 x 999999 declaration)."""
    ODD_BITS = "odd_bits"
    """BitsAllocated 7 (or another value no decoder handles)."""
    NONFINITE_POSITION = "nonfinite_position"
    """ImagePositionPatient with NaN or infinity."""
    ZERO_SPACING = "zero_spacing"
    """PixelSpacing 0\\0 (or negative)."""
    DEGENERATE_ORIENTATION = "degenerate_orientation"
    """ImageOrientationPatient with zero or parallel direction cosines."""
    UNKNOWN_TRANSFER_SYNTAX = "unknown_transfer_syntax"
    """A transfer syntax UID nobody knows."""
    EMPTY_UIDS = "empty_uids"
    """Study, series and/or SOP instance UIDs emptied."""
    RANDOM_VALUE = "random_value"
    """One image-describing element given random bytes."""


class Outcome(str, Enum):
    """How reading one mutated file ended."""

    ACCEPTED = "accepted"
    SKIPPED = "skipped"
    REFUSED = "refused"
    UNNAMED = "unnamed"
    CRASHED = "crashed"
    BAD_VOLUME = "bad_volume"
    HUNG = "hung"


#: Outcomes that are defects of the reader.
DEFECTS: frozenset[Outcome] = frozenset(
    {Outcome.UNNAMED, Outcome.CRASHED, Outcome.BAD_VOLUME, Outcome.HUNG}
)

_IMAGE_TAGS = (
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # BitsAllocated
    0x00280101,  # BitsStored
    0x00280102,  # HighBit
    0x00280103,  # PixelRepresentation
    0x00280002,  # SamplesPerPixel
    0x00280008,  # NumberOfFrames
    0x00280030,  # PixelSpacing
    0x00200032,  # ImagePositionPatient
    0x00200037,  # ImageOrientationPatient
    0x00281052,  # RescaleIntercept
    0x00281053,  # RescaleSlope
    0x00280004,  # PhotometricInterpretation
)
_VR = {
    0x00280010: "US",
    0x00280011: "US",
    0x00280100: "US",
    0x00280101: "US",
    0x00280102: "US",
    0x00280103: "US",
    0x00280002: "US",
    0x00280008: "IS",
    0x00280030: "DS",
    0x00200032: "DS",
    0x00200037: "DS",
    0x00281052: "DS",
    0x00281053: "DS",
    0x00280004: "CS",
}


@dataclass(frozen=True)
class FuzzCase:
    """One mutated file: its bytes and what was done.

    Attributes
    ----------
    seed
        Name of the seed file (for the report).
    mutation
        The kind of mutation.
    detail
        What exactly was changed (offsets, values), to reproduce the case.
    data
        The file's bytes.
    """

    seed: str
    mutation: Mutation
    detail: str
    data: bytes


def _set_raw(ds: pydicom.Dataset, tag: int, vr: str, value: bytes) -> None:
    """Put ``value`` into the dataset as raw bytes (no validation, no conversion)."""
    if len(value) % 2:
        value += b" " if vr in {"DS", "IS", "CS", "UI", "SH", "LO"} else b"\0"
    if vr == "UI" and value.endswith(b" "):
        value = value[:-1] + b"\0"
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _us(value: int) -> bytes:
    return int(value).to_bytes(2, "little")


def _serialise(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _header_end(data: bytes) -> int:
    """Offset of the Pixel Data element (or the whole length): where flips matter most."""
    for marker in (b"\xe0\x7f\x10\x00",):
        at = data.rfind(marker)
        if at > 0:
            return at + 12
    return len(data)


def make_case(
    seed: Path, template: pydicom.Dataset, raw: bytes, rng: np.random.Generator, mutation: Mutation
) -> FuzzCase:
    """Mutate one seed file.

    Parameters
    ----------
    seed
        The seed file (its name goes into the report).
    template
        The seed parsed by pydicom (not modified).
    raw
        The seed's bytes.
    rng
        Random generator (the case is reproducible from its state).
    mutation
        What to do.

    Returns
    -------
    FuzzCase
        The mutated bytes and a description of the change.
    """
    name = seed.name
    if mutation is Mutation.BYTE_FLIPS:
        flipped = bytearray(raw)
        n = int(rng.integers(1, 17))
        limit = _header_end(raw) if rng.random() < 0.8 else len(raw)
        offsets = rng.integers(0, max(limit, 1), size=n)
        for off in offsets:
            flipped[int(off)] = int(rng.integers(0, 256))
        where = f"offsets {sorted(int(o) for o in offsets)}"
        return FuzzCase(name, mutation, where, bytes(flipped))
    if mutation is Mutation.TRUNCATE:
        cut = int(rng.integers(0, len(raw)))
        return FuzzCase(name, mutation, f"cut at {cut} of {len(raw)}", raw[:cut])
    ds = template.copy()
    ds.file_meta = pydicom.dataset.FileMetaDataset(template.file_meta)
    if mutation is Mutation.HUGE_ROWS_COLUMNS:
        _set_raw(ds, 0x00280010, "US", _us(65535))
        _set_raw(ds, 0x00280011, "US", _us(65535))
        detail = "Rows = Columns = 65535"
    elif mutation is Mutation.HUGE_FRAMES:
        _set_raw(ds, 0x00280008, "IS", b"999999")
        if rng.random() < 0.5:
            _set_raw(ds, 0x00280010, "US", _us(65535))
            _set_raw(ds, 0x00280011, "US", _us(65535))
            detail = "65535 x 65535 x 999999"
        else:
            detail = "NumberOfFrames = 999999"
    elif mutation is Mutation.ODD_BITS:
        bits = int(rng.choice([0, 1, 7, 12, 24, 64, 65535]))
        _set_raw(ds, 0x00280100, "US", _us(bits))
        detail = f"BitsAllocated = {bits}"
    elif mutation is Mutation.NONFINITE_POSITION:
        values = [rng.choice(["nan", "inf", "-inf", "1e999", "0"]) for _ in range(3)]
        if all(v == "0" for v in values):
            values[2] = "nan"
        _set_raw(ds, 0x00200032, "DS", "\\".join(values).encode())
        detail = f"ImagePositionPatient = {values}"
    elif mutation is Mutation.ZERO_SPACING:
        text = str(rng.choice(["0\\0", "0\\1", "-1\\-1", "nan\\1", "1e-300\\1e-300"]))
        _set_raw(ds, 0x00280030, "DS", text.encode())
        detail = f"PixelSpacing = {text}"
    elif mutation is Mutation.DEGENERATE_ORIENTATION:
        choices = ["0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "nan\\0\\0\\0\\1\\0", "1\\0\\0"]
        text = str(rng.choice(choices))
        _set_raw(ds, 0x00200037, "DS", text.encode())
        detail = f"ImageOrientationPatient = {text}"
    elif mutation is Mutation.UNKNOWN_TRANSFER_SYNTAX:
        # Written with the real encoding, then the UID's bytes replaced in place
        # (same length, so no group length changes): pydicom will not write a file
        # in a syntax it does not know, which is the point.
        original = str(template.file_meta.get("TransferSyntaxUID", ""))
        if not original:
            return FuzzCase(name, mutation, "no TransferSyntaxUID to replace", raw)
        kind = str(rng.choice(["standard", "private", "garbage"]))
        filler = {"standard": "1.2.840.10008.9.", "private": "9.", "garbage": "x"}[kind]
        uid = (filler + "9" * 64)[: len(original)] if kind != "garbage" else "x" * len(original)
        data = _serialise(ds).replace(original.encode(), uid.encode(), 1)
        return FuzzCase(name, mutation, f"TransferSyntaxUID = {uid!r}", data)
    elif mutation is Mutation.EMPTY_UIDS:
        emptied = [
            kw
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
            if rng.random() < 0.6
        ] or ["SeriesInstanceUID"]
        for kw in emptied:
            setattr(ds, kw, "")
        if "SOPInstanceUID" in emptied and rng.random() < 0.5:
            ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID("")
        detail = f"emptied {emptied}"
    elif mutation is Mutation.RANDOM_VALUE:
        tag = int(rng.choice(_IMAGE_TAGS))
        size = int(rng.choice([0, 1, 2, 4, 8, 16, 64]))
        value = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        _set_raw(ds, tag, _VR[tag], value)
        detail = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) = {value.hex()}"
    else:  # pragma: no cover - every member handled above
        raise ValueError(mutation)
    return FuzzCase(name, mutation, detail, _serialise(ds))


def _volume_ok(volume: Any) -> bool:
    affine = np.asarray(volume.affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.all(np.isfinite(affine)) and np.all(spacing > 0))


def check_file(path: Path) -> tuple[Outcome, str]:
    """Read one file as an export is read, and judge the result.

    Parameters
    ----------
    path
        The file (any bytes).

    Returns
    -------
    (Outcome, str)
        The outcome and one line: the skip reason, the error message, or the
        exception type and message of a defect.
    """
    from monai_tumor.ingest.headers import inspect_file
    from monai_tumor.ingest.reader import read_series
    from monai_tumor.ingest.records import InstanceHeader, SkippedFile

    try:
        record = inspect_file(path, patient_key=b"fuzz-key-0123456789")
    except Exception as exc:  # a defect: inspect_file never raises for bad input
        return Outcome.CRASHED, f"inspect_file: {type(exc).__name__}: {exc}"
    if isinstance(record, SkippedFile):
        return Outcome.SKIPPED, record.reason.value
    if not isinstance(record, InstanceHeader):
        return Outcome.SKIPPED, "non-image object"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            volume = read_series([path])
    except MonaiTumorError as exc:
        if str(path) in str(exc) or path.name in str(exc):
            return Outcome.REFUSED, type(exc).__name__
        return Outcome.UNNAMED, f"{type(exc).__name__}: {exc}"[:300]
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return (
            Outcome.CRASHED,
            f"{type(exc).__name__}: {str(exc)[:200]} at {Path(where.filename).name}:{where.lineno}",
        )
    if not _volume_ok(volume):
        return Outcome.BAD_VOLUME, f"affine {np.asarray(volume.affine).round(3).tolist()}"
    return Outcome.ACCEPTED, ""


@dataclass
class FuzzReport:
    """Counts of a fuzzing run.

    Attributes
    ----------
    cases
        Number of cases run.
    outcomes
        Count per outcome.
    by_mutation
        Count per (mutation, outcome).
    defects
        ``(seed, mutation, detail, outcome, message)`` of every defect.
    seconds
        Wall time.
    slowest_case_s
        Longest single case (s).
    """

    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_mutation: Counter[str] = field(default_factory=Counter)
    defects: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    seconds: float = 0.0
    slowest_case_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "cases": self.cases,
            "outcomes": dict(self.outcomes),
            "by_mutation": dict(self.by_mutation),
            "defects": [list(d) for d in self.defects],
            "seconds": round(self.seconds, 2),
            "slowest_case_s": round(self.slowest_case_s, 3),
        }


def _cases(seeds: Sequence[Path], count: int, seed: int) -> Iterator[FuzzCase]:
    rng = np.random.default_rng(seed)
    parsed = []
    for path in seeds:
        raw = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed.append((path, pydicom.dcmread(io.BytesIO(raw), force=True), raw))
    mutations = list(Mutation)
    for i in range(count):
        path, template, raw = parsed[i % len(parsed)]
        mutation = mutations[int(rng.integers(0, len(mutations)))]
        yield make_case(path, template, raw, rng, mutation)


def _worker(conn: Any, workdir: str) -> None:
    """Child process: receive cases, write each to a file, check it, send the outcome."""
    folder = Path(workdir)
    counter = 0
    while True:
        case = conn.recv()
        if case is None:
            return
        counter += 1
        path = folder / f"case{counter % 4}_{case.seed}"
        path.write_bytes(case.data)
        start = time.perf_counter()
        outcome, message = check_file(path)
        conn.send((outcome.value, message, time.perf_counter() - start))


def run_cases(
    seeds: Sequence[Path],
    *,
    count: int,
    workdir: Path,
    seed: int = 0,
    time_limit_s: float = 30.0,
) -> FuzzReport:
    """Run ``count`` mutated cases in a child process, killing it on a hang.

    Parameters
    ----------
    seeds
        Real DICOM files to mutate (round robin).
    count
        Number of cases.
    workdir
        Scratch folder for the case files (a few files, overwritten).
    seed
        Random seed: the same seed gives the same cases.
    time_limit_s
        A case that takes longer is a defect (``hung``); the child is killed
        and a new one takes the next case.

    Returns
    -------
    FuzzReport
        Counts and every defect with what reproduces it.
    """
    # Imported here, before the children are forked, so that none pays for
    # importing torch and MONAI inside its first case's time limit.
    from monai_tumor.ingest import headers, reader  # noqa: F401

    workdir.mkdir(parents=True, exist_ok=True)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    report = FuzzReport()
    start = time.perf_counter()
    parent: Any = None
    child: Any = None

    def spawn() -> tuple[Any, Any]:
        a, b = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(b, str(workdir)), daemon=True)  # type: ignore[attr-defined]
        proc.start()
        return a, proc

    try:
        parent, child = spawn()
        for case in _cases(seeds, count, seed):
            parent.send(case)
            if parent.poll(time_limit_s):
                try:
                    outcome, message, took = parent.recv()
                except EOFError:  # the child died (killed for memory, or a crash in C)
                    child.join()
                    outcome, message, took = (
                        Outcome.CRASHED.value,
                        f"reader process died (exit code {child.exitcode})",
                        0.0,
                    )
                    parent, child = spawn()
            else:
                child.kill()
                child.join()
                outcome, message, took = Outcome.HUNG.value, f"over {time_limit_s} s", time_limit_s
                parent, child = spawn()
            report.cases += 1
            report.outcomes[outcome] += 1
            report.by_mutation[f"{case.mutation.value}:{outcome}"] += 1
            report.slowest_case_s = max(report.slowest_case_s, took)
            if Outcome(outcome) in DEFECTS:
                report.defects.append(
                    (case.seed, case.mutation.value, case.detail, outcome, message)
                )
    finally:
        if parent is not None:
            with contextlib.suppress(OSError):
                parent.send(None)
        if child is not None:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    report.seconds = time.perf_counter() - start
    return report
