"""Options of the annotation server (one frozen dataclass, no global state)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TOKEN_ENV", "ServiceConfig"]

#: Environment variable read for the bearer token when ``--token`` is not given.
TOKEN_ENV = "MONAI_TUMOR_SERVE_TOKEN"


@dataclass(frozen=True)
class ServiceConfig:
    """Everything :func:`monai_tumor.service.create_app` needs.

    Attributes
    ----------
    studies
        A local folder of images (NIfTI/NRRD files, or one sub-folder of DICOM files per
        series) or the base URL of a DICOMweb server (``http://host:8042/dicom-web``).
    bundles
        Bundle folders served as models (name = folder name).
    state_dir
        Where labels, uploaded images, fine-tuned model versions and training logs go.
        Default: ``<studies>/.monai-tumor`` for a local folder; required for DICOMweb.
    token
        Bearer token every request must carry; ``None`` disables authentication.
    max_upload_bytes
        Largest accepted image or label upload; bigger ones get 413.
    max_pending_infers
        Inference requests allowed to wait for the model at once; more get 503.
    infer_workers
        Inferences run at the same time (each uses ``num_threads`` torch threads).
    num_threads
        torch intra-op threads per inference.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    image_cache
        Decoded images kept in memory (least recently used are dropped).
    val_fraction
        Share of the labelled images held out to validate a fine-tuning run (at least one,
        at most all but one; never also trained on). Training needs two labelled images.
    train_overrides
        Config ids passed to every fine-tuning run (e.g. smaller ``num_samples`` on a
        laptop); a request's params may override the whitelisted ones again.
    """

    studies: str
    bundles: tuple[Path, ...]
    state_dir: Path | None = None
    token: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    max_pending_infers: int = 8
    infer_workers: int = 1
    num_threads: int | None = None
    device: str = "auto"
    image_cache: int = 4
    val_fraction: float = 0.2
    train_overrides: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    @property
    def is_dicomweb(self) -> bool:
        """Whether ``studies`` is a DICOMweb URL rather than a folder."""
        return self.studies.startswith(("http://", "https://"))

    def resolved_state_dir(self) -> Path:
        """Return the state folder (created by the datastore), defaulted as documented."""
        if self.state_dir is not None:
            return Path(self.state_dir)
        if self.is_dicomweb:
            return Path.cwd() / ".monai-tumor"
        return Path(self.studies) / ".monai-tumor"

    @staticmethod
    def token_from_env() -> str | None:
        """Return the token in :data:`TOKEN_ENV`, or ``None`` if unset or empty."""
        value = os.environ.get(TOKEN_ENV, "").strip()
        return value or None
