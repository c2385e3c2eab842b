"""Radiomics settings: what a bundle's ``configs/radiomics.json`` holds, and MIRP's view of it.

The settings are the IBSI image-processing parameters that change feature values
(resampling, re-segmentation range, discretisation, 2D/3D aggregation). They are written
beside every feature table so a reader knows how the numbers were made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monai_tumor.errors import ConfigError

__all__ = ["RADIOMICS_CONFIG", "RadiomicsSettings", "load_radiomics_settings"]

#: Where a bundle keeps its radiomics settings (read by monai-tumor only, never by MONAI).
RADIOMICS_CONFIG = Path("configs") / "radiomics.json"

_FAMILIES = (
    "morph",
    "li",
    "stat",
    "ih",
    "ivh",
    "glcm",
    "glrlm",
    "glszm",
    "gldzm",
    "ngtdm",
    "ngldm",
)
_DISCRETISATION = ("fixed_bin_size", "fixed_bin_number", "none")
_TEXTURE_3D = {
    "glcm_spatial_method": "3d_volume_merge",
    "glrlm_spatial_method": "3d_volume_merge",
    "glszm_spatial_method": "3d",
    "gldzm_spatial_method": "3d",
    "ngtdm_spatial_method": "3d",
    "ngldm_spatial_method": "3d",
}
_TEXTURE_2D = {
    "glcm_spatial_method": "2d_average",
    "glrlm_spatial_method": "2d_average",
    "glszm_spatial_method": "2d",
    "gldzm_spatial_method": "2d",
    "ngtdm_spatial_method": "2d",
    "ngldm_spatial_method": "2d",
}


@dataclass(frozen=True)
class RadiomicsSettings:
    """IBSI image processing and feature settings for one bundle.

    Parameters
    ----------
    modality
        ``"CT"`` (intensities are HU; MIRP rounds them after interpolation) or ``"MR"``.
    new_spacing_mm
        Isotropic voxel size to resample to (mm), or ``None`` to keep the native grid.
        In ``by_slice`` mode only the in-plane spacing is changed.
    by_slice
        2D (per-slice) feature computation instead of 3D.
    interpolation_order
        Spline order of the image interpolation (1 = (tri)linear, 3 = cubic).
    mask_inclusion_threshold
        Partial-volume threshold of the interpolated mask (IBSI default 0.5).
    resegmentation_range
        ``(low, high)`` intensity range kept in the intensity mask, or ``None``.
    discretisation
        ``"fixed_bin_size"``, ``"fixed_bin_number"`` or ``"none"``.
    bin_width
        Bin width for ``fixed_bin_size`` (intensity units, e.g. 25 HU).
    n_bins
        Number of bins for ``fixed_bin_number``.
    families
        MIRP feature families (IBSI: ``morph``, ``li``, ``stat``, ``ih``, ``ivh``, ``glcm``,
        ``glrlm``, ``glszm``, ``gldzm``, ``ngtdm``, ``ngldm``).
    """

    modality: str = "CT"
    new_spacing_mm: float | None = 1.0
    by_slice: bool = False
    interpolation_order: int = 1
    mask_inclusion_threshold: float = 0.5
    resegmentation_range: tuple[float, float] | None = (-1000.0, 400.0)
    discretisation: str = "fixed_bin_size"
    bin_width: float | None = 25.0
    n_bins: int | None = None
    families: tuple[str, ...] = field(default=_FAMILIES)

    def __post_init__(self) -> None:
        if self.modality not in {"CT", "MR", "PT"}:
            raise ConfigError(f"radiomics modality {self.modality!r}: expected CT, MR or PT")
        if self.discretisation not in _DISCRETISATION:
            raise ConfigError(
                f"radiomics discretisation {self.discretisation!r}: expected one of "
                f"{', '.join(_DISCRETISATION)}"
            )
        if self.discretisation == "fixed_bin_size" and not (self.bin_width or 0) > 0:
            raise ConfigError("radiomics fixed_bin_size needs bin_width > 0")
        if self.discretisation == "fixed_bin_number" and not (self.n_bins or 0) > 1:
            raise ConfigError("radiomics fixed_bin_number needs n_bins > 1")
        unknown = set(self.families) - set(_FAMILIES)
        if unknown or not self.families:
            raise ConfigError(
                f"radiomics families {sorted(unknown) or '[]'}: expected some of "
                f"{', '.join(_FAMILIES)}"
            )
        if self.resegmentation_range is not None:
            low, high = self.resegmentation_range
            if not low < high:
                raise ConfigError(
                    f"radiomics resegmentation_range {self.resegmentation_range}: low >= high"
                )

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "radiomics settings"
    ) -> RadiomicsSettings:
        """Build from the layout of ``configs/radiomics.json`` (keys starting ``_`` ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if not k.startswith("_")}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"{source}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}"
            )
        if values.get("resegmentation_range") is not None:
            values["resegmentation_range"] = tuple(float(v) for v in values["resegmentation_range"])
        if "families" in values:
            values["families"] = tuple(values["families"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (written beside the features)."""
        out = asdict(self)
        out["families"] = list(self.families)
        if self.resegmentation_range is not None:
            out["resegmentation_range"] = list(self.resegmentation_range)
        out["library"] = _mirp_version()
        # the code that hands MIRP the lesion also shapes the values (e.g. the seeds of its
        # Monte Carlo estimates), so its version joins the settings and with them the cache key
        out["monai_tumor"] = _own_version()
        return out

    def mirp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`mirp.extract_features` for these settings."""
        kwargs: dict[str, Any] = {
            "image_modality": self.modality,
            "by_slice": self.by_slice,
            "base_feature_families": list(self.families),
            "base_discretisation_method": self.discretisation,
            "ivh_discretisation_method": "none" if self.modality == "CT" else "fixed_bin_number",
            "roi_interpolation_mask_inclusion_threshold": self.mask_inclusion_threshold,
            **(_TEXTURE_2D if self.by_slice else _TEXTURE_3D),
        }
        if self.new_spacing_mm is not None:
            kwargs["new_spacing"] = float(self.new_spacing_mm)
            kwargs["spline_order"] = self.interpolation_order
            kwargs["anti_aliasing"] = False
        if self.resegmentation_range is not None:
            kwargs["resegmentation_intensity_range"] = list(self.resegmentation_range)
        if self.discretisation == "fixed_bin_size":
            kwargs["base_discretisation_bin_width"] = float(self.bin_width or 0)
        elif self.discretisation == "fixed_bin_number":
            kwargs["base_discretisation_n_bins"] = int(self.n_bins or 0)
        return kwargs


def _mirp_version() -> str:
    from importlib.metadata import version

    return f"mirp {version('mirp')}"


def _own_version() -> str:
    from monai_tumor import __version__

    return __version__


def load_radiomics_settings(bundle_dir: str | Path) -> RadiomicsSettings | None:
    """Read the bundle's ``configs/radiomics.json`` as settings, or ``None`` when it has none."""
    path = Path(bundle_dir) / RADIOMICS_CONFIG
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path}: not readable as JSON ({exc}); expected the radiomics settings object"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of radiomics settings")
    return RadiomicsSettings.from_dict(data, source=str(path))
