"""Read LIDC-IDRI reader annotations (the original XML) onto a CT's voxel grid.

The LIDC-IDRI archive ships one XML file per CT series (``LidcReadMessage``) with up to
four blinded-then-unblinded ``readingSession``s. Each reader marks

* nodules >= 3 mm (``unblindedReadNodule`` with ``characteristics``: subtlety ...
  malignancy 1-5) as one ``roi`` per slice: the slice's ``imageSOP_UID`` and
  ``imageZposition``, ``inclusion`` (``FALSE``: the contour cuts a hole) and the outline as
  ``edgeMap`` points in pixel coordinates (``xCoord`` = column, ``yCoord`` = row);
* nodules < 3 mm as a single ``edgeMap`` point, without characteristics;
* non-nodules (``nonNodule``) as one ``locus`` point.

:func:`read_lidc_xml` parses the file; :func:`rasterise_mark` draws one reader's outline
on the series read by :func:`monai_tumor.ingest.reader.read_series` (slices matched by SOP
Instance UID, falling back to the z position); :func:`group_marks` gathers the readers'
marks of one physical nodule; :func:`lidc_consensus` builds the consensus masks at 50 %
agreement (a voxel is in when at least half of the readers who marked that nodule include
it), as the LIDC literature does.

Why not pylidc: it reads these files into its own SQL database built from the whole
archive, its last release needs ``numpy.int`` (gone in numpy 2) and it would bring
SQLAlchemy for a parser of one XML schema. Its grouping rule is reproduced here (marks of
one nodule are linked when their outlines come within a tolerance, the tolerance shrinks
while a group holds two marks of one reader) and its consensus level (0.5) is the default.

Outline convention: the LIDC readers drew each outline on the first pixels *outside* the
nodule; the nodule is the set of pixels whose centres lie strictly inside the outline
(``skimage.draw.polygon``), the outline pixels excluded. ``include_outline=True`` adds the
outline pixels (pylidc's ``boolean_mask`` convention in some releases); the tests measure
both against the ``lidc_nodules/`` VOI mask of LIDC-IDRI-0001.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from skimage.draw import polygon, polygon_perimeter

from monai_tumor.errors import AnnotationError, InvalidSeriesError
from monai_tumor.geometry import ras_to_lps, spacing_from_affine, voxel_to_patient

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "CONSENSUS_LEVEL",
    "ConsensusNodule",
    "LidcAnnotations",
    "LidcMark",
    "LidcNonNodule",
    "LidcRoi",
    "group_marks",
    "lidc_consensus",
    "rasterise_mark",
    "read_lidc_xml",
]

#: The LIDC consensus level: a voxel is in when at least this share of the readers who
#: marked the nodule include it.
CONSENSUS_LEVEL = 0.5

#: Nodule characteristics a reader rates (1-5 or 1-6), in the XML's order.
CHARACTERISTICS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)

_NS = "{http://www.nih.gov}"


@dataclass(frozen=True)
class LidcRoi:
    """One outline (or point) of a reader's mark on one slice.

    Attributes
    ----------
    z_position
        ``imageZposition``: the slice's z (DICOM patient z, mm).
    sop_instance_uid
        ``imageSOP_UID`` of the slice it was drawn on ("" if missing).
    inclusion
        ``False``: the outline cuts a hole in the nodule on that slice.
    points
        ``(N, 2)`` float array of ``(column, row)`` pixel coordinates.
    """

    z_position: float
    sop_instance_uid: str
    inclusion: bool
    points: npt.NDArray[np.float64] = field(repr=False)


@dataclass(frozen=True)
class LidcMark:
    """One reader's mark of one nodule.

    Attributes
    ----------
    reader
        The reading session's ``servicingRadiologistID`` (anonymised in the archive), or
        ``"session N"`` when missing.
    nodule_id
        The reader's own ``noduleID`` (not shared between readers).
    rois
        Its outlines, one or more per slice.
    characteristics
        Ratings (``malignancy`` 1-5 ...), empty for nodules < 3 mm.
    """

    reader: str
    nodule_id: str
    rois: tuple[LidcRoi, ...]
    characteristics: dict[str, int] = field(default_factory=dict)

    @property
    def is_small(self) -> bool:
        """A nodule < 3 mm: one point, no outline to fill."""
        return all(len(r.points) == 1 for r in self.rois)

    @property
    def malignancy(self) -> int | None:
        """The malignancy rating 1-5, ``None`` if not rated."""
        return self.characteristics.get("malignancy")


@dataclass(frozen=True)
class LidcNonNodule:
    """A reader's non-nodule mark (a point).

    Attributes
    ----------
    reader
        See :attr:`LidcMark.reader`.
    non_nodule_id
        ``nonNoduleID``.
    z_position, sop_instance_uid
        The slice, as for :class:`LidcRoi`.
    point
        ``(column, row)`` pixel coordinates.
    """

    reader: str
    non_nodule_id: str
    z_position: float
    sop_instance_uid: str
    point: tuple[float, float]


@dataclass(frozen=True)
class LidcAnnotations:
    """All readers' marks of one LIDC XML file.

    Attributes
    ----------
    path
        The XML file.
    series_instance_uid, study_instance_uid
        From the ``ResponseHeader`` ("" if missing).
    readers
        The reading sessions' reader ids, in file order.
    marks
        Every nodule mark (>= 3 mm outlines and < 3 mm points) of every reader.
    non_nodules
        Every non-nodule point.
    """

    path: Path
    series_instance_uid: str
    study_instance_uid: str
    readers: tuple[str, ...]
    marks: tuple[LidcMark, ...]
    non_nodules: tuple[LidcNonNodule, ...]


@dataclass(frozen=True)
class ConsensusNodule:
    """One physical nodule >= 3 mm: its readers' marks and their 50 % consensus.

    Attributes
    ----------
    marks
        The readers' marks grouped as this nodule (one per reader).
    mask
        ``(I, J, K)`` bool consensus mask on the reference grid.
    reader_masks
        ``(n, I, J, K)`` bool: each mark rasterised, in ``marks`` order.
    level
        The consensus level used.
    centroid_lps
        Centre of mass of the consensus mask, LPS mm.
    volume_ml
        Consensus volume, mL.
    diameter_mm
        Equivalent-sphere diameter of the consensus volume, mm.
    """

    marks: tuple[LidcMark, ...]
    mask: npt.NDArray[np.bool_] = field(repr=False)
    reader_masks: npt.NDArray[np.bool_] = field(repr=False)
    level: float
    centroid_lps: tuple[float, float, float]
    volume_ml: float
    diameter_mm: float

    @property
    def readers(self) -> tuple[str, ...]:
        """The readers who marked this nodule."""
        return tuple(m.reader for m in self.marks)

    @property
    def malignancy(self) -> tuple[int, ...]:
        """The readers' malignancy ratings (those who rated it)."""
        return tuple(m.malignancy for m in self.marks if m.malignancy is not None)


# --------------------------------------------------------------------------- parsing


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: ET.Element, name: str) -> ET.Element | None:
    for child in node:
        if _local(child.tag) == name:
            return child
    return None


def _children(node: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in node if _local(child.tag) == name]


def _text(node: ET.Element, name: str) -> str:
    child = _child(node, name)
    return (child.text or "").strip() if child is not None else ""


def _number(node: ET.Element, name: str, path: Path, where: str) -> float:
    text = _text(node, name)
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(
            f"{where}: <{name}> is {text!r}, expected a number; the LIDC XML is damaged "
            "(re-download it from the archive)",
            path=path,
        ) from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: <{name}> is {text!r}, expected a finite number", path=path)
    return value


def _point(node: ET.Element, path: Path, where: str) -> tuple[float, float]:
    return (_number(node, "xCoord", path, where), _number(node, "yCoord", path, where))


def _roi(node: ET.Element, path: Path, where: str) -> LidcRoi:
    points = [_point(e, path, where) for e in _children(node, "edgeMap")]
    if not points:
        raise AnnotationError(
            f"{where}: a <roi> without <edgeMap> points; expected at least one point per roi",
            path=path,
        )
    inclusion = _text(node, "inclusion").upper()
    if inclusion not in {"TRUE", "FALSE"}:
        raise AnnotationError(
            f"{where}: <inclusion> is {inclusion!r}, expected TRUE or FALSE", path=path
        )
    return LidcRoi(
        z_position=_number(node, "imageZposition", path, where),
        sop_instance_uid=_text(node, "imageSOP_UID"),
        inclusion=inclusion == "TRUE",
        points=np.asarray(points, dtype=np.float64),
    )


def _characteristics(node: ET.Element | None, path: Path, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    if node is None:
        return out
    for name in CHARACTERISTICS:
        text = _text(node, name)
        if not text:
            continue
        try:
            out[name] = int(text)
        except ValueError:
            raise AnnotationError(
                f"{where}: characteristic <{name}> is {text!r}, expected an integer rating",
                path=path,
            ) from None
    return out


def read_lidc_xml(path: str | os.PathLike[str]) -> LidcAnnotations:
    """Parse an LIDC-IDRI reader XML file (``LidcReadMessage``).

    Parameters
    ----------
    path
        The XML file (e.g. ``lidc_full/LIDC-IDRI-0001/annotations.xml``).

    Returns
    -------
    LidcAnnotations

    Raises
    ------
    AnnotationError
        If the file cannot be read, is not XML, is not an LIDC read message, or a mark is
        malformed (no points, a non-numeric coordinate, an unknown inclusion value); the
        message names the file, the reader and the nodule.
    """
    xml_path = Path(path)
    try:
        root = ET.parse(xml_path).getroot()
    except OSError as exc:
        raise AnnotationError(f"cannot read the LIDC XML: {exc}", path=xml_path) from exc
    except ET.ParseError as exc:
        raise AnnotationError(
            f"not well-formed XML ({exc}); expected an LIDC-IDRI LidcReadMessage",
            path=xml_path,
        ) from exc
    if _local(root.tag) != "LidcReadMessage":
        raise AnnotationError(
            f"root element is <{_local(root.tag)}>, expected <LidcReadMessage> (the LIDC-IDRI "
            "reader annotation format)",
            path=xml_path,
        )
    header = _child(root, "ResponseHeader")
    series_uid = _text(header, "SeriesInstanceUid") if header is not None else ""
    study_uid = _text(header, "StudyInstanceUID") if header is not None else ""
    sessions = _children(root, "readingSession")
    if not sessions:
        raise AnnotationError(
            "no <readingSession>; expected one per reader (an LIDC XML of a CT series)",
            path=xml_path,
        )
    readers: list[str] = []
    marks: list[LidcMark] = []
    non_nodules: list[LidcNonNodule] = []
    for number, session in enumerate(sessions, start=1):
        reader = _text(session, "servicingRadiologistID") or f"session {number}"
        if reader in readers:
            reader = f"{reader} (session {number})"
        readers.append(reader)
        for nodule in _children(session, "unblindedReadNodule"):
            nodule_id = _text(nodule, "noduleID")
            where = f"reader {reader}, nodule {nodule_id or '?'}"
            rois = tuple(_roi(r, xml_path, where) for r in _children(nodule, "roi"))
            if not rois:
                raise AnnotationError(
                    f"{where}: no <roi>; expected at least one outline or point", path=xml_path
                )
            characteristics = _characteristics(_child(nodule, "characteristics"), xml_path, where)
            marks.append(LidcMark(reader, nodule_id, rois, characteristics))
        for item in _children(session, "nonNodule"):
            item_id = _text(item, "nonNoduleID")
            where = f"reader {reader}, non-nodule {item_id or '?'}"
            locus = _child(item, "locus")
            if locus is None:
                raise AnnotationError(f"{where}: no <locus> point", path=xml_path)
            non_nodules.append(
                LidcNonNodule(
                    reader=reader,
                    non_nodule_id=item_id,
                    z_position=_number(item, "imageZposition", xml_path, where),
                    sop_instance_uid=_text(item, "imageSOP_UID"),
                    point=_point(locus, xml_path, where),
                )
            )
    return LidcAnnotations(
        path=xml_path,
        series_instance_uid=series_uid,
        study_instance_uid=study_uid,
        readers=tuple(readers),
        marks=tuple(marks),
        non_nodules=tuple(non_nodules),
    )


# --------------------------------------------------------------------------- geometry


def _affine_lps(reference: MetaTensor) -> npt.NDArray[np.float64]:
    return ras_to_lps(np.asarray(torch.as_tensor(reference.affine).detach().cpu().numpy()))


def _slice_z(reference: MetaTensor) -> npt.NDArray[np.float64]:
    """Patient z (LPS, mm) of each slice k's first voxel."""
    count = int(reference.shape[-1])
    ijk = np.zeros((count, 3), dtype=np.float64)
    ijk[:, 2] = np.arange(count)
    return voxel_to_patient(_affine_lps(reference), ijk)[:, 2]


def _slice_index(
    roi_uid: str,
    z: float,
    uids: Sequence[str],
    slice_z: npt.NDArray[np.float64],
    slice_mm: float,
    path: Path,
    where: str,
) -> int:
    """Find the reference slice an outline was drawn on: by SOP Instance UID, else by z."""
    nearest = int(np.argmin(np.abs(slice_z - z)))
    miss = float(abs(slice_z[nearest] - z))
    if roi_uid and roi_uid in uids:
        k = list(uids).index(roi_uid)
        if abs(slice_z[k] - z) > slice_mm / 2:
            raise InvalidSeriesError(
                f"{where}: imageSOP_UID is slice {k} at z {slice_z[k]:.2f} mm, but "
                f"imageZposition is {z:.2f} mm; the XML does not describe this series' geometry",
                path=path,
            )
        return k
    if miss > slice_mm / 2:
        raise InvalidSeriesError(
            f"{where}: no slice of the reference series has SOP Instance UID {roi_uid or '?'} "
            f"or lies at z {z:.2f} mm (nearest {slice_z[nearest]:.2f} mm); the annotations "
            "belong to another series",
            path=path,
        )
    return nearest


def rasterise_mark(
    mark: LidcMark,
    reference: MetaTensor,
    *,
    path: str | os.PathLike[str] = "",
    include_outline: bool = False,
) -> npt.NDArray[np.bool_]:
    """Draw one reader's nodule outlines on the reference CT's voxel grid.

    Each ``roi`` goes on the slice with its ``imageSOP_UID`` (the reference's
    ``meta["sop_instance_uids"]``), or, when the UID is missing or unknown, the slice at its
    ``imageZposition`` (within half a slice). Its ``(column, row)`` points are the voxel's
    ``(i, j)``: :func:`~monai_tumor.ingest.reader.read_series` keeps the DICOM pixel order
    (``[column, row, slice]``, no flips). Inclusion outlines are filled first, exclusion
    outlines (``inclusion`` FALSE) are then cut out of the same slice.

    Parameters
    ----------
    mark
        The reader's mark (>= 3 mm; a one-point mark gives its single voxel).
    reference
        The CT ``(C, I, J, K)`` the XML belongs to, as read by ``read_series``.
    path
        The XML file, for error messages.
    include_outline
        Also count the outline pixels as nodule (see the module's note).

    Returns
    -------
    numpy.ndarray
        ``(I, J, K)`` bool.

    Raises
    ------
    InvalidSeriesError
        If an outline's slice is not in the reference (UID unknown and no slice at its z),
        its UID and z disagree, or its points lie outside the slice.
    """
    xml_path = Path(path)
    shape = tuple(int(s) for s in reference.shape[1:])
    uids = [str(u) for u in reference.meta.get("sop_instance_uids", [])]
    slice_z = _slice_z(reference)
    slice_mm = float(spacing_from_affine(_affine_lps(reference))[2])
    include = np.zeros(shape, dtype=bool)
    exclude = np.zeros(shape, dtype=bool)
    where = f"reader {mark.reader}, nodule {mark.nodule_id}"
    for roi in mark.rois:
        k = _slice_index(
            roi.sop_instance_uid, roi.z_position, uids, slice_z, slice_mm, xml_path, where
        )
        cols, rows = roi.points[:, 0], roi.points[:, 1]
        if (
            np.any(cols < 0)
            or np.any(rows < 0)
            or np.any(cols > shape[0] - 1)
            or np.any(rows > shape[1] - 1)
        ):
            raise InvalidSeriesError(
                f"{where}: outline points reach column {cols.min():.0f}-{cols.max():.0f}, row "
                f"{rows.min():.0f}-{rows.max():.0f}, outside the {shape[0]} x {shape[1]} slice",
                path=xml_path,
            )
        layer = np.zeros(shape[:2], dtype=bool)
        if len(roi.points) < 3:  # a point (nodule < 3 mm) or a two-pixel line: its pixels
            layer[np.rint(cols).astype(int), np.rint(rows).astype(int)] = True
        else:
            rr, cc = polygon(cols, rows, shape=shape[:2])
            layer[rr, cc] = True
            # The outline's own pixels (LIDC: a chain of neighbouring pixels, i.e. the
            # vertices; the lines between vertices in general) lie outside the nodule, so
            # they are left out of an inclusion and belong to the hole of an exclusion.
            outline_r, outline_c = polygon_perimeter(cols, rows, shape=shape[:2])
            layer[outline_r, outline_c] = include_outline == roi.inclusion
        (include if roi.inclusion else exclude)[:, :, k] |= layer
    return include & ~exclude


def _points_lps(mark: LidcMark, mask: npt.NDArray[np.bool_], affine_lps: Any) -> Any:
    """Patient coordinates (mm) of the mark's voxels (its outline's surface)."""
    idx = np.argwhere(mask).astype(np.float64)
    return voxel_to_patient(affine_lps, idx)


def _min_distance(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    if len(a) == 0 or len(b) == 0:
        return math.inf
    best = math.inf
    for start in range(0, len(a), 512):
        chunk = a[start : start + 512]
        d = np.sqrt(((chunk[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).min()
        best = min(best, float(d))
    return best


def _components(adjacent: npt.NDArray[np.bool_]) -> list[list[int]]:
    n = len(adjacent)
    seen = [False] * n
    out: list[list[int]] = []
    for start in range(n):
        if seen[start]:
            continue
        stack, group = [start], []
        seen[start] = True
        while stack:
            node = stack.pop()
            group.append(node)
            for other in np.flatnonzero(adjacent[node]):
                if not seen[int(other)]:
                    seen[int(other)] = True
                    stack.append(int(other))
        out.append(sorted(group))
    return out


def group_marks(
    marks: Sequence[LidcMark],
    masks: Sequence[npt.NDArray[np.bool_]],
    reference: MetaTensor,
    *,
    tolerance_mm: float | None = None,
    factor: float = 0.9,
) -> list[list[int]]:
    """Group the readers' marks that outline the same physical nodule.

    pylidc's rule (``Scan.cluster_annotations``), hand-written here (see the module's note):
    two marks are linked when the smallest distance between their voxels is at most
    ``tolerance_mm``; groups are the connected components of that graph. While a group holds
    two marks of one reader (a reader marks a nodule once), the tolerance is multiplied by
    ``factor`` and the graph rebuilt; overlapping marks stay linked at any tolerance.

    Parameters
    ----------
    marks
        The marks to group (normally the >= 3 mm ones).
    masks
        Each mark rasterised on the reference grid (:func:`rasterise_mark`).
    reference
        The CT the masks are on.
    tolerance_mm
        Linking distance; default the reference's slice spacing (neighbouring slices of one
        nodule are linked, separate nodules rarely come that close).
    factor
        Shrinking factor while a group holds two marks of one reader.

    Returns
    -------
    list of list of int
        Indices into ``marks``, one list per nodule, ordered by the first index.
    """
    affine_lps = _affine_lps(reference)
    if tolerance_mm is None:
        tolerance_mm = float(spacing_from_affine(affine_lps)[2])
    points = [_points_lps(m, k, affine_lps) for m, k in zip(marks, masks, strict=True)]
    n = len(marks)
    distance = np.full((n, n), math.inf)
    overlap = np.zeros((n, n), dtype=bool)
    for a in range(n):
        for b in range(a + 1, n):
            overlap[a, b] = overlap[b, a] = bool(np.any(masks[a] & masks[b]))
            distance[a, b] = distance[b, a] = (
                0.0 if overlap[a, b] else _min_distance(points[a], points[b])
            )
    tol = tolerance_mm
    while True:
        groups = _components(overlap | (distance <= tol))
        clash = any(len({marks[i].reader for i in group}) < len(group) for group in groups)
        if not clash or tol < 1e-3:
            return groups
        tol *= factor


def lidc_consensus(
    annotations: LidcAnnotations | str | os.PathLike[str],
    reference: MetaTensor,
    *,
    level: float = CONSENSUS_LEVEL,
    include_outline: bool = False,
) -> list[ConsensusNodule]:
    """Build the consensus mask of every nodule >= 3 mm on the reference CT's grid.

    Parameters
    ----------
    annotations
        Parsed annotations or the XML file.
    reference
        The CT series the XML belongs to (``read_series`` of its DICOM folder).
    level
        A voxel is in when at least this share of the readers who marked the nodule
        include it (0.5: at least half of them; one reader alone is the whole of itself).
    include_outline
        See :func:`rasterise_mark`.

    Returns
    -------
    list of ConsensusNodule
        One per physical nodule, ordered from superior to inferior (by centroid z).
        Nodules whose consensus is empty (readers who do not overlap at all) are kept with
        an empty mask and ``volume_ml`` 0.

    Raises
    ------
    AnnotationError
        If the XML is malformed.
    InvalidSeriesError
        If the XML belongs to another series (see :func:`rasterise_mark`).
    """
    parsed = annotations if isinstance(annotations, LidcAnnotations) else read_lidc_xml(annotations)
    if not 0.0 < level <= 1.0:
        raise AnnotationError(f"consensus level is {level!r}, expected 0 < level <= 1")
    series_uid = str(reference.meta.get("SeriesInstanceUID", ""))
    if parsed.series_instance_uid and series_uid and parsed.series_instance_uid != series_uid:
        raise InvalidSeriesError(
            f"the XML is for series {parsed.series_instance_uid}, the reference image is "
            f"series {series_uid}; read the series the XML names",
            path=parsed.path,
        )
    outlined = [m for m in parsed.marks if not m.is_small]
    masks = [
        rasterise_mark(m, reference, path=parsed.path, include_outline=include_outline)
        for m in outlined
    ]
    affine_lps = _affine_lps(reference)
    voxel_ml = float(abs(np.linalg.det(affine_lps[:3, :3]))) / 1000.0
    out: list[ConsensusNodule] = []
    for group in group_marks(outlined, masks, reference):
        stack = np.stack([masks[i] for i in group])
        votes = stack.sum(axis=0)
        consensus = votes >= level * len(group) - 1e-9
        count = int(consensus.sum())
        if count:
            centre = voxel_to_patient(affine_lps, np.argwhere(consensus).mean(axis=0)[None])[0]
        else:
            centre = voxel_to_patient(
                affine_lps, np.argwhere(stack.any(axis=0)).mean(axis=0)[None]
            )[0]
        volume = count * voxel_ml
        out.append(
            ConsensusNodule(
                marks=tuple(outlined[i] for i in group),
                mask=consensus,
                reader_masks=stack,
                level=level,
                centroid_lps=(float(centre[0]), float(centre[1]), float(centre[2])),
                volume_ml=volume,
                diameter_mm=float((6.0 * volume * 1000.0 / math.pi) ** (1.0 / 3.0)),
            )
        )
    out.sort(key=lambda n: -n.centroid_lps[2])
    return out
