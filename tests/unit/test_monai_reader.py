"""DicomSeriesReader inside MONAI's LoadImage/LoadImaged gives what read_series gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, LoadImaged

from monai_tumor.errors import InvalidSeriesError
from monai_tumor.ingest.monai_reader import DicomSeriesReader
from monai_tumor.ingest.reader import ReadOptions, read_series
from tests.support.dicom_factory import lps_affine, random_rotation, write_series

KEYS = (
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "sop_instance_uids",
    "frame_numbers",
    "space",
)


@pytest.fixture
def series(tmp_path: Path) -> Path:
    rot = random_rotation(0.6, 0.1, 0.8)
    aff = lps_affine(iop=[*rot[:, 0], *rot[:, 1]], pixel_spacing=(0.7, 0.9), slice_step=2.2)
    stored = np.random.default_rng(0).integers(-1000, 2000, (7, 5, 6)).astype(np.int16)
    write_series(
        tmp_path / "s",
        stored,
        affine_lps=aff,
        slopes=0.5,
        intercepts=-3,
        shuffle_names=True,
        instance_numbers="random",
    )
    return tmp_path / "s"


def _same(a: MetaTensor, b: MetaTensor) -> None:
    assert a.shape == b.shape
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert torch.allclose(a.affine, b.affine, atol=1e-10)
    for key in KEYS:
        assert a.meta[key] == b.meta[key], key
    assert a.meta["filename_or_obj"] == b.meta["filename_or_obj"]


@pytest.mark.parametrize("channel_first", [False, True])
def test_load_image_matches_read_series(series: Path, channel_first: bool) -> None:
    loaded = LoadImage(
        reader=DicomSeriesReader(), image_only=True, ensure_channel_first=channel_first
    )(series)
    _same(loaded, read_series(series))


def test_load_imaged_matches_read_series(series: Path) -> None:
    # MONAI annotates LoadImaged's reader as `type[ImageReader] | str | None`, but documents and
    # accepts a reader instance (it hands it to LoadImage, whose `reader` is untyped).
    load = LoadImaged(keys="image", reader=DicomSeriesReader())  # type: ignore[arg-type]
    out = load({"image": str(series)})
    _same(out["image"], read_series(series))


def test_options_are_passed_through(tmp_path: Path) -> None:
    stored = np.zeros((4, 4, 6), dtype=np.int16)
    write_series(tmp_path, stored, affine_lps=lps_affine(), skip=(2,))
    # Our error reaches the caller: LoadImage does not fall back to PydicomReader.
    with pytest.raises(InvalidSeriesError, match="non-uniform"):
        LoadImage(reader=DicomSeriesReader(), image_only=True)(tmp_path)
    reader = DicomSeriesReader(ReadOptions(nonuniform="resample"))
    assert LoadImage(reader=reader, image_only=True)(tmp_path).shape == (1, 4, 4, 6)


def test_verify_suffix(series: Path, tmp_path: Path) -> None:
    reader = DicomSeriesReader()
    first = sorted(series.iterdir())[0]
    assert reader.verify_suffix(series)
    assert reader.verify_suffix(first)
    assert reader.verify_suffix([first, first])
    assert reader.verify_suffix(tmp_path / "x.nii.gz")
    text = tmp_path / "a.txt"
    text.write_text("hello")
    assert not reader.verify_suffix(text)


def test_several_folders_are_stacked_as_channels(tmp_path: Path) -> None:
    aff = lps_affine(slice_step=2.0)
    for i in range(2):
        write_series(tmp_path / f"c{i}", np.full((4, 3, 2), i, dtype=np.int16), affine_lps=aff)
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)([tmp_path / "c0", tmp_path / "c1"])
    assert img.shape == (2, 4, 3, 2)
    assert img[1].min() == 1 and img[0].max() == 0


@pytest.mark.realdata
def test_real_series_through_monai(data_dir: Path) -> None:
    folder = data_dir / "sts" / "STS_001" / "PET" / "dicom" / "image"
    _same(LoadImage(reader=DicomSeriesReader(), image_only=True)(folder), read_series(folder))
