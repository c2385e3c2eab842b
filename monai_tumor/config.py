"""Process-wide settings read from the environment (no global mutable state).

Only one setting exists today: where the shared real data lives.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "DEFAULT_DATA_DIR", "data_root"]

#: Environment variable naming the folder with the shared real imaging data.
DATA_ENV_VAR = "MONAI_TUMOR_DATA"
#: Default location of the shared data, relative to the project root.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def data_root() -> Path:
    """Return the folder holding the shared real data.

    Returns
    -------
    Path
        ``$MONAI_TUMOR_DATA`` if set, else ``../shared/data`` relative to the
        project root. The folder is read in place and never written to; it may
        not exist (callers decide whether that is an error).
    """
    value = os.environ.get(DATA_ENV_VAR)
    return Path(value).expanduser().resolve() if value else DEFAULT_DATA_DIR
