"""The viewer's browser files: NiiVue (pinned) and the page's own script and style.

NiiVue (``@niivue/niivue`` on the npm registry, BSD-2-Clause) is a WebGL2 viewer for
NIfTI volumes. Its UMD build (``dist/niivue.umd.js``, one classic script that defines the
global ``niivue``) ships inside this package as ``static/niivue.umd.js``: a classic
script loads from ``file://`` (ES modules do not: browsers refuse module scripts from
``file://`` origins), so a report opens offline, without a CDN, wherever the output
folder is copied. ``scripts/fetch_niivue.py`` fetches the pinned version from the npm
registry, checks the tarball's integrity hash and the file's SHA-256 below, and writes
the file; ``scripts/setup.sh`` runs it when the file is missing or differs.

A run copies these files once into ``OUT/viewer-assets/`` (:func:`install_viewer_assets`);
every series page refers to them by a relative link.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from monai_tumor.errors import ExportError
from monai_tumor.export.atomic import atomic_write_bytes

__all__ = [
    "ASSETS_DIRNAME",
    "NIIVUE_FILE",
    "NIIVUE_INTEGRITY",
    "NIIVUE_SHA256",
    "NIIVUE_VERSION",
    "VIEWER_ASSETS",
    "asset_bytes",
    "install_viewer_assets",
]

#: Pinned NiiVue release (npm ``@niivue/niivue``).
NIIVUE_VERSION = "0.69.0"
#: Subresource integrity of the npm tarball of :data:`NIIVUE_VERSION` (``dist.integrity``).
NIIVUE_INTEGRITY = (
    "sha512-"
    "YMjQvJgD1W2b7DuoxkwlC4VxbrgIePRJ5qyQzXKxi2v2MBVg285P/CIQyg46oDDGDIcaNlbd+MhtO/edMbXJkA=="
)
#: SHA-256 of ``dist/niivue.umd.js`` inside that tarball.
NIIVUE_SHA256 = "47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af"
#: File name of the NiiVue build in ``static/`` and in the run's assets folder.
NIIVUE_FILE = "niivue.umd.js"
#: The run-level folder (under the output folder) holding the files below.
ASSETS_DIRNAME = "viewer-assets"
#: Files copied into every run's assets folder (``report.js`` is inlined in ``index.html``).
VIEWER_ASSETS: tuple[str, ...] = (NIIVUE_FILE, "viewer.js", "viewer.css")


def asset_bytes(name: str) -> bytes:
    """Return the content of one of :data:`VIEWER_ASSETS` as shipped in the package.

    Raises
    ------
    ExportError
        The file is missing from the installation, or NiiVue's differs from the pinned
        build (a partial download, a hand edit).
    """
    source = resources.files("monai_tumor.report").joinpath("static", name)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ExportError(
            f"viewer file {name} is missing from the monai_tumor installation ({exc}); "
            "run scripts/setup.sh (or python scripts/fetch_niivue.py) to fetch NiiVue "
            f"{NIIVUE_VERSION}, or pass --no-viewer"
        ) from exc
    if name == NIIVUE_FILE and hashlib.sha256(data).hexdigest() != NIIVUE_SHA256:
        raise ExportError(
            f"the shipped {NIIVUE_FILE} is not NiiVue {NIIVUE_VERSION} as pinned (SHA-256 "
            f"{hashlib.sha256(data).hexdigest()}, expected {NIIVUE_SHA256}); run "
            "python scripts/fetch_niivue.py to fetch it again"
        )
    return data


def install_viewer_assets(out_dir: str | os.PathLike[str]) -> Path:
    """Copy the viewer's browser files into ``OUT/viewer-assets/`` (once per content).

    Files already there with the same content are left alone, so calling this after
    every series costs a comparison; each copy is written atomically.

    Parameters
    ----------
    out_dir
        The run's output folder.

    Returns
    -------
    Path
        The assets folder.

    Raises
    ------
    ExportError
        A file is missing from the installation or cannot be written.
    """
    folder = Path(out_dir) / ASSETS_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    for name in VIEWER_ASSETS:
        data = asset_bytes(name)
        target = folder / name
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                continue
        except OSError:
            pass
        try:
            atomic_write_bytes(target, data)
        except OSError as exc:
            raise ExportError(f"cannot write the viewer file {target}: {exc}") from exc
    return folder
