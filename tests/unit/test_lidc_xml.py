"""LIDC-IDRI reader XML: parsing, rasterising on the CT grid, grouping, 50 % consensus."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_tumor.errors import AnnotationError, InvalidSeriesError
from monai_tumor.geometry import affine_from_dicom
from monai_tumor.ingest.lidc_xml import (
    LidcMark,
    LidcRoi,
    group_marks,
    lidc_consensus,
    rasterise_mark,
    read_lidc_xml,
)

SERIES = "1.2.3.4"
SHAPE = (32, 32, 6)
Z0, DZ = -100.0, 2.5


def _reference(*, uids: bool = True, first_z: float = Z0) -> MetaTensor:
    """A synthetic CT grid: 0.7 mm pixels, 2.5 mm slices, z ascending from ``first_z``."""
    affine = affine_from_dicom([1, 0, 0, 0, 1, 0], [-10.0, -20.0, first_z], [0.7, 0.7], DZ)
    meta = {
        "SeriesInstanceUID": SERIES,
        "sop_instance_uids": [f"9.{k}" for k in range(SHAPE[2])] if uids else [],
    }
    return MetaTensor(torch.zeros((1, *SHAPE)), affine=torch.as_tensor(affine), meta=meta)


def _square(x0: int, y0: int, x1: int, y1: int) -> str:
    """Outline pixels of a rectangle, clockwise, as edgeMap elements."""
    pts = [(x, y0) for x in range(x0, x1 + 1)]
    pts += [(x1, y) for y in range(y0 + 1, y1 + 1)]
    pts += [(x, y1) for x in range(x1 - 1, x0 - 1, -1)]
    pts += [(x0, y) for y in range(y1 - 1, y0, -1)]
    return "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in pts)


def _roi(k: int, body: str, *, inclusion: str = "TRUE", uid: str | None = None) -> str:
    uid = f"9.{k}" if uid is None else uid
    return (
        f"<roi><imageZposition>{Z0 + DZ * k:.6f} </imageZposition>"
        f"<imageSOP_UID>{uid}</imageSOP_UID><inclusion>{inclusion}</inclusion>{body}</roi>"
    )


def _nodule(nodule_id: str, rois: str, malignancy: int | None = 4) -> str:
    ratings = (
        f"<characteristics><subtlety>5</subtlety><malignancy>{malignancy}</malignancy>"
        "</characteristics>"
        if malignancy is not None
        else ""
    )
    return (
        f"<unblindedReadNodule><noduleID>{nodule_id}</noduleID>{ratings}{rois}"
        "</unblindedReadNodule>"
    )


def _session(reader: str, body: str) -> str:
    return (
        f"<readingSession><annotationVersion>3.12</annotationVersion>"
        f"<servicingRadiologistID>{reader}</servicingRadiologistID>{body}</readingSession>"
    )


def _xml(tmp_path: Path, *sessions: str, series: str = SERIES) -> Path:
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<LidcReadMessage xmlns="http://www.nih.gov"><ResponseHeader>'
        f"<SeriesInstanceUid>{series}</SeriesInstanceUid>"
        "<StudyInstanceUID>1.2.3</StudyInstanceUID></ResponseHeader>"
        + "".join(sessions)
        + "</LidcReadMessage>"
    )
    path = tmp_path / "annotations.xml"
    path.write_text(text, encoding="utf-8")
    return path


NON_NODULE = (
    "<nonNodule><nonNoduleID>nn1</nonNoduleID><imageZposition>-97.5</imageZposition>"
    "<imageSOP_UID>9.1</imageSOP_UID><locus><xCoord>3</xCoord><yCoord>4</yCoord></locus>"
    "</nonNodule>"
)
SMALL = _nodule("small", _roi(2, "<edgeMap><xCoord>28</xCoord><yCoord>28</yCoord></edgeMap>"), None)


def test_parse_sessions_marks_ratings_and_points(tmp_path: Path) -> None:
    path = _xml(
        tmp_path,
        _session("r1", _nodule("N1", _roi(1, _square(4, 4, 8, 8)) + _roi(2, _square(4, 4, 8, 8)))),
        _session("r2", _nodule("A", _roi(1, _square(5, 4, 9, 8)), 2) + SMALL + NON_NODULE),
    )
    parsed = read_lidc_xml(path)
    assert parsed.series_instance_uid == SERIES
    assert parsed.readers == ("r1", "r2")
    assert [(m.reader, m.nodule_id, len(m.rois), m.is_small) for m in parsed.marks] == [
        ("r1", "N1", 2, False),
        ("r2", "A", 1, False),
        ("r2", "small", 1, True),
    ]
    assert parsed.marks[0].malignancy == 4
    assert parsed.marks[1].characteristics == {"subtlety": 5, "malignancy": 2}
    assert parsed.marks[2].malignancy is None
    roi = parsed.marks[0].rois[0]
    assert roi.z_position == pytest.approx(-97.5)
    assert roi.sop_instance_uid == "9.1" and roi.inclusion
    assert roi.points.shape == (16, 2)
    (nn,) = parsed.non_nodules
    assert (nn.reader, nn.non_nodule_id, nn.point, nn.sop_instance_uid) == (
        "r2",
        "nn1",
        (3.0, 4.0),
        "9.1",
    )


def test_outline_is_outside_the_nodule_and_holes_are_cut(tmp_path: Path) -> None:
    ring = _roi(3, _square(2, 2, 12, 12)) + _roi(3, _square(5, 5, 9, 9), inclusion="FALSE")
    path = _xml(tmp_path, _session("r1", _nodule("N1", _roi(1, _square(4, 6, 8, 12)) + ring)))
    (mark,) = read_lidc_xml(path).marks
    mask = rasterise_mark(mark, _reference(), path=path)
    # Column x is voxel axis 0, row y axis 1; the outline pixels are excluded.
    expected = np.zeros(SHAPE, dtype=bool)
    expected[5:8, 7:12, 1] = True
    expected[3:12, 3:12, 3] = True
    expected[5:10, 5:10, 3] = False  # the exclusion outline and what it encloses
    np.testing.assert_array_equal(mask, expected)
    with_outline = rasterise_mark(mark, _reference(), path=path, include_outline=True)
    assert with_outline[4:9, 6:13, 1].all() and with_outline[:, :, 1].sum() == 5 * 7


def test_slices_match_by_uid_then_by_z(tmp_path: Path) -> None:
    rois = _roi(1, _square(4, 4, 8, 8)) + _roi(2, _square(4, 4, 8, 8), uid="")
    (mark,) = read_lidc_xml(_xml(tmp_path, _session("r1", _nodule("N1", rois)))).marks
    by_uid = rasterise_mark(mark, _reference())
    assert by_uid[:, :, 1].sum() == 9 and by_uid[:, :, 2].sum() == 9
    # Without UIDs the z positions place the outlines on the same slices.
    np.testing.assert_array_equal(rasterise_mark(mark, _reference(uids=False)), by_uid)


def test_outline_on_another_series_is_refused(tmp_path: Path) -> None:
    path = _xml(tmp_path, _session("r1", _nodule("N1", _roi(1, _square(4, 4, 8, 8), uid="7.7"))))
    (mark,) = read_lidc_xml(path).marks
    with pytest.raises(InvalidSeriesError, match="another series") as info:
        rasterise_mark(mark, _reference(first_z=50.0), path=path)
    assert str(path) in str(info.value)
    # A UID that names a slice whose z disagrees with imageZposition.
    wrong = _xml(tmp_path, _session("r1", _nodule("N1", _roi(1, _square(4, 4, 8, 8), uid="9.4"))))
    with pytest.raises(InvalidSeriesError, match="imageZposition"):
        rasterise_mark(read_lidc_xml(wrong).marks[0], _reference(), path=wrong)
    other = _xml(
        tmp_path, _session("r1", _nodule("N1", _roi(1, _square(4, 4, 8, 8)))), series="5.5"
    )
    with pytest.raises(InvalidSeriesError, match=r"series 5\.5"):
        lidc_consensus(other, _reference())


def test_consensus_at_half_of_the_readers(tmp_path: Path) -> None:
    # Three readers outline one nodule with shifted squares, two readers a second one far away.
    path = _xml(
        tmp_path,
        _session(
            "r1",
            _nodule("a", _roi(1, _square(4, 4, 10, 10)))
            + _nodule("b", _roi(4, _square(20, 20, 26, 26))),
        ),
        _session(
            "r2", _nodule("x", _roi(1, _square(6, 4, 12, 10)) + _roi(2, _square(6, 4, 12, 10)))
        ),
        _session(
            "r3",
            _nodule("p", _roi(1, _square(8, 4, 14, 10)))
            + _nodule("q", _roi(4, _square(22, 20, 28, 26)))
            + SMALL,
        ),
    )
    reference = _reference()
    first, second = lidc_consensus(path, reference)  # superior (higher z) first
    assert first.readers == ("r1", "r3") and second.readers == ("r1", "r2", "r3")
    masks = second.reader_masks.sum(axis=0)
    # Slice 1: columns 5-9 (r1), 7-11 (r2), 9-13 (r3); two of three votes needed.
    expected = np.zeros(SHAPE, dtype=bool)
    expected[7:12, 5:10, 1] = True
    np.testing.assert_array_equal(second.mask, expected)
    assert masks[9, 7, 1] == 3 and masks[5, 7, 1] == 1
    # Two readers: a voxel marked by one of them is in (one of two is half).
    expected2 = np.zeros(SHAPE, dtype=bool)
    expected2[21:28, 21:26, 4] = True
    np.testing.assert_array_equal(first.mask, expected2)
    voxel_ml = 0.7 * 0.7 * 2.5 / 1000
    assert second.volume_ml == pytest.approx(25 * voxel_ml)
    assert second.malignancy == (4, 4, 4)
    # At level 1.0 only what all readers include is left.
    strict = lidc_consensus(path, reference, level=1.0)[1]
    assert strict.mask.sum() == 5 and strict.mask[9, 5:10, 1].all()


def test_one_reader_never_contributes_twice_to_a_nodule(tmp_path: Path) -> None:
    # r1 outlines two touching nodules; r2 outlines one square covering both.
    path = _xml(
        tmp_path,
        _session(
            "r1",
            _nodule("a", _roi(1, _square(2, 4, 8, 10)))
            + _nodule("b", _roi(1, _square(9, 4, 15, 10))),
        ),
        _session("r2", _nodule("c", _roi(1, _square(2, 4, 7, 10)))),
    )
    parsed = read_lidc_xml(path)
    reference = _reference()
    masks = [rasterise_mark(m, reference) for m in parsed.marks]
    groups = group_marks(parsed.marks, masks, reference)
    assert sorted(groups) == [[0, 2], [1]]


def _bad(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.xml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<LidcReadMessage><readingSession>", "not well-formed XML"),
        ("<Other/>", "expected <LidcReadMessage>"),
        ("<LidcReadMessage/>", "no <readingSession>"),
        (
            "<LidcReadMessage><readingSession><unblindedReadNodule><noduleID>N9</noduleID>"
            "</unblindedReadNodule></readingSession></LidcReadMessage>",
            "nodule N9: no <roi>",
        ),
        (
            "<LidcReadMessage><readingSession><unblindedReadNodule><noduleID>N9</noduleID><roi>"
            "<imageZposition>x</imageZposition><inclusion>TRUE</inclusion>"
            "<edgeMap><xCoord>1</xCoord><yCoord>1</yCoord></edgeMap></roi>"
            "</unblindedReadNodule></readingSession></LidcReadMessage>",
            "<imageZposition> is 'x'",
        ),
        (
            "<LidcReadMessage><readingSession><unblindedReadNodule><noduleID>N9</noduleID><roi>"
            "<imageZposition>1</imageZposition><inclusion>MAYBE</inclusion>"
            "<edgeMap><xCoord>1</xCoord><yCoord>1</yCoord></edgeMap></roi>"
            "</unblindedReadNodule></readingSession></LidcReadMessage>",
            "<inclusion> is 'MAYBE'",
        ),
        (
            "<LidcReadMessage><readingSession><unblindedReadNodule><noduleID>N9</noduleID><roi>"
            "<imageZposition>1</imageZposition><inclusion>TRUE</inclusion></roi>"
            "</unblindedReadNodule></readingSession></LidcReadMessage>",
            "without <edgeMap>",
        ),
    ],
)
def test_malformed_xml_names_the_file_and_the_reason(tmp_path: Path, text: str, match: str) -> None:
    path = _bad(tmp_path, text)
    with pytest.raises(AnnotationError, match=match) as info:
        read_lidc_xml(path)
    assert str(path) in str(info.value)


def test_missing_file_is_an_annotation_error(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="cannot read"):
        read_lidc_xml(tmp_path / "absent.xml")


@settings(max_examples=40, deadline=None)
@given(
    x0=st.integers(0, 20),
    y0=st.integers(0, 20),
    w=st.integers(2, 10),
    h=st.integers(2, 10),
    k=st.integers(0, SHAPE[2] - 1),
    first_z=st.floats(-300.0, 300.0, allow_nan=False),
)
def test_rectangle_rasterises_to_its_interior_on_its_slice(
    x0: int, y0: int, w: int, h: int, k: int, first_z: float
) -> None:
    """Any rectangle outline gives its (w-1) x (h-1) interior on the slice at its z."""
    reference = _reference(uids=False, first_z=first_z)
    xs = [x0, x0 + w, x0 + w, x0]
    ys = [y0, y0, y0 + h, y0 + h]
    roi = LidcRoi(
        z_position=first_z + DZ * k + 0.3,  # within half a slice
        sop_instance_uid="",
        inclusion=True,
        points=np.column_stack([xs, ys]).astype(np.float64),
    )
    mask = rasterise_mark(LidcMark("r", "n", (roi,)), reference)
    expected = np.zeros(SHAPE, dtype=bool)
    expected[x0 + 1 : x0 + w, y0 + 1 : y0 + h, k] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.realdata
def test_lidc_0001_consensus_matches_the_voi_mask(data_dir: Path) -> None:
    """LIDC-IDRI-0001: the union of the readers' fills IS the lidc_nodules VOI mask."""
    from monai_tumor.ingest.reader import read_series

    case = data_dir / "lidc_full" / "LIDC-IDRI-0001"
    ct = read_series(case / "dicom")
    parsed = read_lidc_xml(case / "annotations.xml")
    assert len(parsed.readers) == 4
    assert sum(m.is_small for m in parsed.marks) == 9 and len(parsed.non_nodules) == 13
    (nodule,) = lidc_consensus(parsed, ct)
    assert len(nodule.readers) == 4 and nodule.malignancy == (5, 5, 5, 4)
    # Place the VOI (same voxel size, integer offset) at its position in the full CT.
    voi = nib.Nifti1Image.from_filename(
        data_dir / "lidc_nodules" / "nodule_mask" / "LIDC-IDRI-0001_R_1.nii.gz"
    )
    offset = np.linalg.inv(ct.affine.numpy()) @ voi.affine
    np.testing.assert_allclose(offset[:3, :3], np.eye(3), atol=1e-6)
    lo = np.rint(offset[:3, 3]).astype(int)
    np.testing.assert_allclose(offset[:3, 3], lo, atol=1e-3)
    voi_mask = np.asanyarray(voi.dataobj) > 0
    placed = np.zeros(ct.shape[1:], dtype=bool)
    placed[
        lo[0] : lo[0] + voi_mask.shape[0],
        lo[1] : lo[1] + voi_mask.shape[1],
        lo[2] : lo[2] + voi_mask.shape[2],
    ] = voi_mask
    union = nodule.reader_masks.any(axis=0)
    np.testing.assert_array_equal(union, placed)  # voxel for voxel: grid and outline rule
    dice = 2 * (nodule.mask & placed).sum() / (nodule.mask.sum() + placed.sum())
    assert dice == pytest.approx(0.9066, abs=5e-4)
    assert nodule.volume_ml == pytest.approx(6.709, abs=0.01)
