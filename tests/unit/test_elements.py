"""The element walker shared by the header scan and the native reader, against pydicom."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_tumor.ingest import headers
from monai_tumor.ingest.elements import (
    IMPLICIT_VR_LE,
    UNDEFINED_LENGTH,
    FallbackError,
    NeedMoreError,
    file_meta_elements,
    walk_elements,
)
from monai_tumor.ingest.headers import inspect_file
from monai_tumor.ingest.native_header import scan_native
from monai_tumor.ingest.records import InstanceHeader

PRIVATE_CREATOR = 0x00091010


def _walk(buf: bytes) -> tuple[list[int], dict[int, bytes | None]]:
    """Top-level tags in file order and their raw values (None: undefined length, skipped)."""
    meta, pos = file_meta_elements(buf)
    syntax = next(buf[at : at + n] for tag, _, at, n in meta if tag == 0x00020010)
    implicit = syntax.rstrip(b"\x00 ").decode() == IMPLICIT_VR_LE
    tags: list[int] = []
    values: dict[int, bytes | None] = {}
    found, _ = walk_elements(buf, pos, implicit)
    for tag, _, length, at in found:
        tags.append(tag)
        values[tag] = None if length == UNDEFINED_LENGTH else buf[at : at + length]
    return tags, values


def _image(extra: list[tuple[int, str, object]], *, implicit: bool = False) -> Dataset:
    """A small CT slice with ``extra`` private elements (tag, VR, value) in group 0009."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID("1.2.3.4")
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.5"
    ds.Modality = "CT"
    ds.add_new(PRIVATE_CREATOR, "LO", "ACME")
    for tag, vr, value in extra:
        ds.add_new(tag, vr, value)
    ds.Rows, ds.Columns = 4, 2
    ds.PixelSpacing = [0.5, 0.75]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, -12.5]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(16))
    return ds


def _bytes(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _pydicom_view(buf: bytes) -> tuple[list[int], dict[int, bytes]]:
    ds = pydicom.dcmread(BytesIO(buf))
    elements = list(ds.elements())  # raw elements stay raw (values as in the file)
    tags = [int(elem.tag) for elem in elements]
    return tags, {int(e.tag): e.value for e in elements if isinstance(e.value, bytes)}


def _assert_same_values(values: dict[int, bytes | None], ref_values: dict[int, bytes]) -> None:
    """pydicom's raw values equal the walker's; None marks an element the walker stepped over.

    pydicom also keeps an implicit-VR undefined-length element of unknown VR as raw bytes;
    the walker steps over those (undefined length) without taking a value.
    """
    for tag, value in ref_values.items():
        assert values[tag] is None or values[tag] == value, hex(tag)


# ---------------------------------------------------------------- long VRs (PS3.5 7.1.2)

LONG_VR_CASES = [
    ("SV", -(1 << 40)),
    ("UV", 1 << 63),
    ("OV", b"\x01" * 16),
    ("UC", "a long text value"),
    ("UR", "http://example.org/x"),
    ("UT", "unlimited text"),
]


@pytest.mark.parametrize(("vr", "value"), LONG_VR_CASES, ids=[c[0] for c in LONG_VR_CASES])
def test_long_vrs_walk_like_pydicom(vr: str, value: object) -> None:
    """Every VR with a 4-byte length (SV and UV included) is stepped over correctly."""
    buf = _bytes(_image([(0x00091001, vr, value)]))
    tags, values = _walk(buf)
    ref_tags, ref_values = _pydicom_view(buf)
    assert tags == ref_tags
    _assert_same_values(values, ref_values)
    native = scan_native(buf)
    assert (
        native is not None
        and native[0x00091001].value == pydicom.dcmread(BytesIO(buf))[0x00091001].value
    )


@pytest.mark.parametrize(("vr", "value"), LONG_VR_CASES, ids=[c[0] for c in LONG_VR_CASES])
def test_long_vrs_keep_the_header_scan_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vr: str, value: object
) -> None:
    """The header scan reads such files itself (it used to misread SV/UV and fall back)."""
    path = tmp_path / "slice.dcm"
    path.write_bytes(_bytes(_image([(0x00091001, vr, value)])))
    expected = inspect_file(path, use_fast_path=False)

    def no_fallback(*args: object, **kwargs: object) -> None:
        raise AssertionError("the header scan fell back to pydicom")

    monkeypatch.setattr(headers, "_parse_with_pydicom", no_fallback)
    fast = inspect_file(path)
    assert isinstance(fast, InstanceHeader) and fast == expected
    assert (fast.rows, fast.columns) == (4, 2)


# ------------------------------------------------------------ sequences of undefined length


def _un_sequence(tag: int) -> bytes:
    """An explicit-VR UN element of undefined length: a sequence with implicit-VR items."""
    group, elem = tag >> 16, tag & 0xFFFF
    item_body = struct.pack("<HHL", 0x0008, 0x0060, 2) + b"MR"
    return (
        struct.pack("<HH2sHL", group, elem, b"UN", 0, UNDEFINED_LENGTH)
        + struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
        + item_body
        + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHL", 0xFFFE, 0xE000, len(item_body))
        + item_body
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )


def test_undefined_length_un_is_skipped_as_an_implicit_sequence() -> None:
    buf = _bytes(_image([(0x00091001, "LO", "before"), (0x00091003, "LO", "after")]))
    after = struct.pack("<HH", 0x0009, 0x1003)
    at = buf.index(after + b"LO")
    patched = buf[:at] + _un_sequence(0x00091002) + buf[at:]
    tags, values = _walk(patched)
    ref_tags, ref_values = _pydicom_view(patched)
    assert tags == ref_tags and 0x00091002 in tags and 0x00091003 in tags
    _assert_same_values(values, ref_values)


@pytest.mark.parametrize("vr", [b"OB", b"OW", b"UT"])
def test_other_undefined_lengths_fall_back(vr: bytes) -> None:
    """Only sequences (SQ, UN, implicit) are stepped over; other undefined lengths fall back."""
    element = struct.pack("<HH2sHL", 0x0009, 0x1001, vr, 0, UNDEFINED_LENGTH)
    items = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    with pytest.raises(FallbackError):
        walk_elements(element + items, 0, False)
    assert walk_elements(element + items, 0, False, stop_at={0x00091001})[0] == [
        (0x00091001, vr, UNDEFINED_LENGTH, 12)  # ... unless the walk stops there
    ]
    stray = struct.pack("<HHL", 0xFFFE, 0xE0DD, UNDEFINED_LENGTH)
    with pytest.raises(FallbackError):  # a stray delimiter is never "stepped over"
        walk_elements(stray, 0, True)


def test_invalid_explicit_vr_falls_back() -> None:
    buf = struct.pack("<HH2sH", 0x0008, 0x0060, b"\x00\x01", 2) + b"CT"
    with pytest.raises(FallbackError):
        walk_elements(buf, 0, False)
    # read as implicit VR, bytes 4-8 are the length (far past the end of the buffer)
    assert walk_elements(buf, 0, True, stop_from=0) == ([(0x00080060, None, 0x00020100, 8)], 0)
    with pytest.raises(NeedMoreError):
        walk_elements(buf, 0, True)


def test_file_meta_needs_the_dicm_prefix() -> None:
    buf = _bytes(_image([]))
    with pytest.raises(NeedMoreError):
        file_meta_elements(buf[:131])
    with pytest.raises(FallbackError):
        file_meta_elements(b"\0" * 128 + b"DICX" + buf[132:])
    meta, pos = file_meta_elements(buf)
    assert [tag for tag, *_ in meta][:1] == [0x00020000] and buf[pos : pos + 2] == b"\x08\x00"


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("group_length", ["right", "missing", "too_short", "too_long"])
def test_file_meta_with_any_group_length(implicit: bool, group_length: str) -> None:
    """FileMetaInformationGroupLength is used when right and never trusted when not."""
    buf = _bytes(_image([], implicit=implicit))
    expected = pydicom.dcmread(BytesIO(buf)).file_meta
    (value,) = struct.unpack_from("<L", buf, 140)
    if group_length == "missing":
        buf = buf[:132] + buf[144:]
    elif group_length != "right":
        wrong = value - 2 if group_length == "too_short" else value + 6
        buf = buf[:140] + struct.pack("<L", wrong) + buf[144:]
    meta, pos = file_meta_elements(buf)
    tags = [tag for tag, *_ in meta]
    written = [int(elem.tag) for elem in expected]
    assert tags == [t for t in written if group_length != "missing" or t != 0x00020000]
    syntax = next(buf[at : at + n] for tag, _, at, n in meta if tag == 0x00020010)
    assert syntax.rstrip(b"\x00").decode() == expected.TransferSyntaxUID
    assert buf[pos : pos + 4] == b"\x08\x00\x16\x00"  # the dataset starts with SOPClassUID


# ----------------------------------------------------------------------- property tests

_TEXT = st.text(alphabet=st.characters(min_codepoint=0x30, max_codepoint=0x7A), max_size=12)
_SIMPLE = st.one_of(
    st.tuples(st.just("LO"), _TEXT),
    st.tuples(st.just("US"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("SV"), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.tuples(st.just("UV"), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("OB"), st.binary(max_size=10)),
    st.tuples(st.just("UT"), _TEXT),
    st.tuples(st.just("FD"), st.floats(allow_nan=False, allow_infinity=False)),
)


@st.composite
def _sequence(draw: st.DrawFn, depth: int = 0) -> tuple[str, Sequence]:
    items = []
    for _ in range(draw(st.integers(0, 2))):
        item = Dataset()
        item.add_new(PRIVATE_CREATOR, "LO", "ACME")
        for k in range(draw(st.integers(0, 3))):
            if depth < 1 and draw(st.booleans()):
                vr, value = draw(_sequence(depth + 1))
            else:
                vr, value = draw(_SIMPLE)
            item.add_new(0x00091001 + k, vr, value)
        item.is_undefined_length_sequence_item = draw(st.booleans())
        items.append(item)
    return "SQ", Sequence(items)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    elements=st.lists(st.one_of(_SIMPLE, _sequence()), max_size=6),
    undefined=st.lists(st.booleans(), min_size=6, max_size=6),
    implicit=st.booleans(),
    cut=st.floats(0.0, 1.0),
)
def test_walker_agrees_with_pydicom_on_any_dataset(
    elements: list[tuple[str, object]], undefined: list[bool], implicit: bool, cut: float
) -> None:
    """Random private elements and nested sequences, defined or undefined length, either VR
    encoding: the walker finds pydicom's top-level elements, and any truncated copy either
    raises NeedMoreError or yields a prefix of them (never a wrong element)."""
    extra = [(0x00091001 + i, vr, value) for i, (vr, value) in enumerate(elements)]
    ds = _image(extra, implicit=implicit)
    for (tag, vr, _), flag in zip(extra, undefined, strict=False):
        if vr == "SQ":
            ds[tag].is_undefined_length = flag
    buf = _bytes(ds)
    tags, values = _walk(buf)
    ref_tags, ref_values = _pydicom_view(buf)
    assert tags == ref_tags
    _assert_same_values(values, ref_values)

    short = buf[: max(132, int(len(buf) * cut))]
    try:
        cut_tags, _ = _walk(short)
    except NeedMoreError:
        return
    assert cut_tags == tags[: len(cut_tags)]
