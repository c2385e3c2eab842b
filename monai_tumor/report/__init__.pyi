"""Public names of ``monai_tumor.report`` (lazy_loader stub)."""

from .assets import (
    ASSETS_DIRNAME,
    NIIVUE_VERSION,
    install_viewer_assets,
)
from .viewer import (
    DISPLAY_NAME,
    VIEWER_NAME,
    ViewerFiles,
    ViewerOptions,
    WindowPreset,
    make_display_copy,
    read_display,
    write_viewer,
)

__all__ = [
    "ASSETS_DIRNAME",
    "DISPLAY_NAME",
    "NIIVUE_VERSION",
    "VIEWER_NAME",
    "ViewerFiles",
    "ViewerOptions",
    "WindowPreset",
    "install_viewer_assets",
    "make_display_copy",
    "read_display",
    "write_viewer",
]
