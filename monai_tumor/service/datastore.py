"""The annotation server's datastore: images to annotate and their versioned labels.

Images come from a local folder (:class:`LocalDatastore`: NIfTI/NRRD/MHA files, or one
sub-folder of DICOM files per series, read by :mod:`monai_tumor.ingest`) or a DICOMweb
server (:class:`monai_tumor.service.dicomweb.DicomWebDatastore`). Labels and uploaded
images live in the server's state folder, never in the studies folder:

``<state>/labels/<tag>/<image id>/<version>.nii.gz`` (``000001``, ``000002``, ...)
    Every save is a new version, created exclusively (``os.link`` of a complete temporary
    file), so concurrent saves of the same label keep both and nothing is overwritten.
    The newest version is the label; ``DELETE`` moves all versions to ``<state>/trash``.
``<state>/images/<id><ext>``
    Images uploaded through ``PUT /datastore/image``.

Ids are checked against :data:`ID_PATTERN` before any path is built from them, so no id
can leave the state or studies folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.data import MetaTensor

from monai_tumor.errors import MonaiTumorError, RequestError
from monai_tumor.export.atomic import atomic_write_json

__all__ = [
    "ID_PATTERN",
    "LABEL_TAGS",
    "VOLUME_SUFFIXES",
    "Datastore",
    "LabelVersion",
    "LocalDatastore",
    "check_id",
    "load_image",
    "volume_suffix",
]

#: Image ids and label tags: a letter or digit, then letters, digits, ``.``, ``_``, ``-``.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: The label tags MONAI Label clients use: the model's prediction and the corrected label.
LABEL_TAGS = ("original", "final")
#: File suffixes read as volumes (longest first).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def check_id(value: str, *, what: str = "image id") -> str:
    """Return ``value`` if it is a safe id, else raise :class:`RequestError` (400).

    Parameters
    ----------
    value
        An image id or label tag from a request.
    what
        How to name it in the error message.

    Raises
    ------
    RequestError
        If ``value`` does not match :data:`ID_PATTERN` or contains ``..``.
    """
    if not ID_PATTERN.fullmatch(value or "") or ".." in value:
        raise RequestError(
            f"invalid {what} {value[:80]!r}: expected 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return value


def volume_suffix(name: str) -> str | None:
    """Return the volume suffix of a file name (``".nii.gz"`` ...), or ``None`` if it has none."""
    lower = name.lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)


def load_image(path: Path) -> MetaTensor:
    """Read a datastore image as a channel-first MetaTensor with a voxel-to-RAS affine.

    NIfTI goes through MONAI's ``LoadImage`` (NibabelReader), which also reads the stacked
    4D images multi-channel bundles need in MONAI Label (FLAIR + T1c); voxel order is the
    file's, so voxel indices sent by a viewer that loaded the same file mean the same
    voxels. NRRD/MHA and DICOM series folders go through
    :func:`monai_tumor.ingest.reader.read_series` (slices sorted along the normal).

    Raises
    ------
    IngestError, UnsupportedInputError
        If the image cannot be read.
    """
    from monai_tumor.errors import IngestError

    if path.is_file() and volume_suffix(path.name) in (".nii", ".nii.gz"):
        from monai.transforms import LoadImage

        try:
            img = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)(
                str(path)
            )
        except Exception as exc:  # nibabel raises many kinds for a damaged file
            raise IngestError(f"cannot read the NIfTI file: {exc}", path=path) from exc
        if not isinstance(img, MetaTensor) or img.ndim != 4:
            raise IngestError("expected a 3D or 4D (stacked channels) NIfTI image", path=path)
        return img
    from monai_tumor.ingest.reader import read_series

    return read_series(path)


@dataclass(frozen=True)
class LabelVersion:
    """One saved label file.

    Attributes
    ----------
    image
        The image id.
    tag
        ``"final"``, ``"original"`` or another tag.
    version
        1, 2, ... in order of saving.
    path
        The label file (NIfTI).
    info
        What the client sent in ``params`` plus ``ts`` and ``checksum``.
    """

    image: str
    tag: str
    version: int
    path: Path
    info: Mapping[str, Any]


class Datastore:
    """Labels, uploads and the image cache shared by every kind of datastore.

    Subclasses say where images come from (:meth:`_discover`, :meth:`image_path`) and may
    act on saved labels (:meth:`on_final_label`).
    """

    name = "datastore"
    description = ""

    def __init__(self, state_dir: Path, *, image_cache: int = 4) -> None:
        self.state_dir = Path(state_dir)
        self.labels_dir = self.state_dir / "labels"
        self.uploads_dir = self.state_dir / "images"
        for folder in (self.labels_dir, self.uploads_dir, self.state_dir / "trash"):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, MetaTensor] = OrderedDict()
        self._cache_size = max(0, int(image_cache))
        self._image_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ images

    def _discover(self) -> dict[str, Path]:
        """Image id -> file or folder, from the studies source (not the uploads)."""
        raise NotImplementedError

    def _uploads(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(self.uploads_dir.iterdir()):
            suffix = volume_suffix(p.name)
            if suffix and not p.name.startswith("."):
                found[p.name[: -len(suffix)]] = p
        return found

    def images(self) -> dict[str, Path]:
        """Return every image id and where it is (studies first, then uploads)."""
        found = self._discover()
        for key, path in self._uploads().items():
            found.setdefault(key, path)
        return found

    def list_images(self) -> list[str]:
        """Return the image ids, sorted."""
        return sorted(self.images())

    def image_path(self, image_id: str) -> Path:
        """Return the file or DICOM folder of an image.

        Raises
        ------
        RequestError
            400 for an invalid id, 404 for an unknown one.
        """
        check_id(image_id)
        path = self.images().get(image_id)
        if path is None:
            raise RequestError(f"image {image_id!r} not found in the datastore", status=404)
        return path

    def image_file(self, image_id: str) -> Path:
        """Return one file holding the image (NIfTI for DICOM series), for download/training."""
        path = self.image_path(image_id)
        if path.is_file():
            return path
        cached = self.state_dir / "cache" / f"{image_id}.nii.gz"
        if not cached.is_file():
            from monai_tumor.export.nifti import write_nifti

            write_nifti(self.load(image_id), cached)
        return cached

    def load(self, image_id: str) -> MetaTensor:
        """Return the decoded image (channel-first, RAS affine), from a small LRU cache."""
        path = self.image_path(image_id)
        with self._lock:
            if image_id in self._cache:
                self._cache.move_to_end(image_id)
                return self._cache[image_id]
            lock = self._image_locks.setdefault(image_id, threading.Lock())
        with lock:  # one reader per image; others wait for its result
            with self._lock:
                if image_id in self._cache:
                    return self._cache[image_id]
            image = load_image(path)
            with self._lock:
                if self._cache_size:
                    self._cache[image_id] = image
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            return image

    def add_image(self, image_id: str, upload: Path, suffix: str) -> str:
        """Store an uploaded image (a checked volume file) under ``image_id``.

        Raises
        ------
        RequestError
            409 if the id exists, 400 if the file is not a readable image.
        """
        check_id(image_id)
        if suffix not in VOLUME_SUFFIXES:
            raise RequestError(
                f"unsupported image file type {suffix!r}; expected one of {VOLUME_SUFFIXES}",
                status=415,
            )
        try:
            load_image(upload)
        except MonaiTumorError as exc:
            raise RequestError(f"the uploaded image cannot be read: {exc.reason}") from exc
        target = self.uploads_dir / f"{image_id}{suffix}"
        with self._lock:
            if image_id in self.images():
                raise RequestError(
                    f"image {image_id!r} exists already; choose another id", status=409
                )
            if _same_fs(upload, target):
                os.link(upload, target)
            else:
                shutil.copyfile(upload, target)
        return image_id

    # ------------------------------------------------------------------ labels

    def _label_dir(self, image_id: str, tag: str) -> Path:
        return self.labels_dir / check_id(tag, what="label tag") / check_id(image_id)

    def label_versions(self, image_id: str, tag: str) -> list[LabelVersion]:
        """Return the saved versions of a label, oldest first."""
        folder = self._label_dir(image_id, tag)
        if not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.glob("[0-9]*.nii.gz")):
            number = int(p.name.split(".")[0])
            info_file = folder / f"{number:06d}.json"
            info = json.loads(info_file.read_text("utf-8")) if info_file.is_file() else {}
            out.append(LabelVersion(image_id, tag, number, p, info))
        return out

    def label(self, image_id: str, tag: str) -> LabelVersion | None:
        """Return the newest version of a label, or ``None``."""
        versions = self.label_versions(image_id, tag)
        return versions[-1] if versions else None

    def save_label(
        self, image_id: str, tag: str, nifti: Path, info: Mapping[str, Any]
    ) -> LabelVersion:
        """Store a checked NIfTI label as the next version (never overwriting one).

        Parameters
        ----------
        image_id, tag
            Checked ids; the image must exist.
        nifti
            A complete ``.nii.gz`` file (the caller validated it against the image).
        info
            Kept beside the label (``params`` of the request).
        """
        self.image_path(image_id)
        folder = self._label_dir(image_id, tag)
        folder.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name.split(".")[0]) for p in folder.glob("[0-9]*.nii.gz")]
        number = max(existing, default=0) + 1
        while True:
            target = folder / f"{number:06d}.nii.gz"
            try:
                os.link(nifti, target)  # exclusive: fails if a concurrent save took it
                break
            except FileExistsError:
                number += 1
        full = {**dict(info), "ts": int(time.time()), "version": number}
        atomic_write_json(folder / f"{number:06d}.json", full)
        saved = LabelVersion(image_id, tag, number, target, full)
        if tag == "final":
            self.on_final_label(saved)
        return saved

    def on_final_label(self, label: LabelVersion) -> None:
        """Act on a new final label (DICOMweb datastores also store it as SEG)."""

    def delete_label(self, image_id: str, tag: str) -> int:
        """Move every version of a label to ``<state>/trash``; return how many there were.

        Raises
        ------
        RequestError
            404 if there is no such label.
        """
        folder = self._label_dir(image_id, tag)
        versions = self.label_versions(image_id, tag)
        if not versions:
            raise RequestError(f"no {tag!r} label for image {image_id!r}", status=404)
        trash = self.state_dir / "trash" / f"{tag}-{image_id}-{time.time_ns()}"
        folder.rename(trash)
        return len(versions)

    # ------------------------------------------------------------------ reports

    def labeled(self, tag: str = "final") -> list[str]:
        """Return the ids of images with a label of ``tag``."""
        return [i for i in self.list_images() if self.label(i, tag) is not None]

    def status(self) -> dict[str, Any]:
        """``{total, completed, label_tags}`` as MONAI Label's ``/datastore/?output=stats``."""
        tags: dict[str, int] = {}
        images = self.list_images()
        for tag_dir in sorted(p for p in self.labels_dir.iterdir() if p.is_dir()):
            count = sum(1 for i in images if self.label(i, tag_dir.name) is not None)
            if count:
                tags[tag_dir.name] = count
        return {"total": len(images), "completed": len(self.labeled()), "label_tags": tags}

    def json(self) -> dict[str, Any]:
        """Return the datastore in MONAI Label's ``LocalDatastoreModel`` shape (``all``)."""
        objects: dict[str, Any] = {}
        for image_id, path in sorted(self.images().items()):
            labels: dict[str, Any] = {}
            for tag_dir in sorted(p for p in self.labels_dir.iterdir() if p.is_dir()):
                latest = self.label(image_id, tag_dir.name)
                if latest is not None:
                    labels[tag_dir.name] = {"ext": ".nii.gz", "info": dict(latest.info)}
            ext = volume_suffix(path.name) or "" if path.is_file() else ""
            objects[image_id] = {
                "image": {"ext": ext, "info": {"name": path.name}},
                "labels": labels,
            }
        return {
            "name": self.name,
            "description": self.description,
            "images_dir": "",
            "labels_dir": "labels",
            "objects": objects,
        }

    def datalist(self) -> list[dict[str, str]]:
        """``[{image, label}]`` file pairs of every final label (``output=train``)."""
        pairs = []
        for image_id in self.labeled():
            latest = self.label(image_id, "final")
            assert latest is not None
            pairs.append({"image": str(self.image_file(image_id)), "label": str(latest.path)})
        return pairs

    @contextmanager
    def scratch_file(self, suffix: str) -> Iterator[Path]:
        """Yield a temporary file in the state folder (same file system as the labels)."""
        tmp = self.state_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        path = tmp / f"{time.time_ns()}-{threading.get_ident()}{suffix}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b.parent).st_dev
    except OSError:
        return False


class LocalDatastore(Datastore):
    """Images from a local folder: volume files and DICOM series folders at its top level.

    Parameters
    ----------
    studies
        The folder. Each ``*.nii.gz``/``*.nii``/``*.nrrd``/``*.mha`` file is an image (id =
        the name without suffix); each sub-folder holding DICOM files is one series (id =
        the folder name). Hidden entries are ignored. It is only read.
    state_dir
        Labels, uploads and caches (see the module docstring).
    image_cache
        Decoded images kept in memory.
    """

    name = "local"

    def __init__(self, studies: Path, state_dir: Path, *, image_cache: int = 4) -> None:
        self.studies = Path(studies)
        if not self.studies.is_dir():
            raise RequestError(f"studies folder {self.studies} not found", status=500)
        self.description = f"local folder {self.studies.name}"
        super().__init__(state_dir, image_cache=image_cache)

    def _discover(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        state = self.state_dir.resolve()
        for p in sorted(self.studies.iterdir()):
            if p.name.startswith(".") or p.resolve() == state:
                continue
            suffix = volume_suffix(p.name)
            if p.is_file() and suffix:
                key = p.name[: -len(suffix)]
            elif p.is_dir():
                key = p.name
            else:
                continue
            if ID_PATTERN.fullmatch(key) and ".." not in key:
                found[key] = p
        return found
