"""Install a package with ``pip --no-deps --target`` into the pytest cache, once per machine.

For packages the shared environment must not hold (another MONAI version, the MONAI Label
client whose server pins conflict with ours): tests put the folder first on a subprocess's
``PYTHONPATH`` (or on ``sys.path`` for pure-Python client code). The folder lives under
``.pytest_cache`` (git-ignored) and is reused while it holds a finished install.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["pip_target", "pip_wheel"]


def pip_target(config: pytest.Config, requirement: str) -> Path:
    """Return a folder holding ``requirement`` installed with ``--no-deps``.

    Parameters
    ----------
    config
        The pytest config (its cache gives the folder: ``.pytest_cache/d/pip-<name>``).
    requirement
        A pinned requirement, e.g. ``"monai==1.5.2"``.

    Returns
    -------
    Path
        The ``--target`` folder; a ``.done`` marker says the install finished.
    """
    name = "pip-" + requirement.replace("==", "-").replace("[", "-").replace("]", "")
    assert config.cache is not None, "the pytest cache provider is disabled (-p no:cacheprovider)"
    target = Path(config.cache.mkdir(name))
    done = target / ".done"
    with open(target.parent / f"{name}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several xdist workers may ask at once
        if not done.is_file():
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--upgrade",
                    "--target",
                    str(target),
                    requirement,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                pytest.fail(f"pip install --target {target} {requirement} failed:\n{proc.stderr}")
            done.write_text(requirement, encoding="utf-8")
    return target


def pip_wheel(config: pytest.Config, requirement: str) -> Path:
    """Return the wheel of ``requirement`` (``pip download --no-deps``), cached like above.

    For packages whose wheel carries data files that ``pip install --target`` lays over the
    package folder of the same name (``monailabel``): read the needed modules from the
    wheel (a zip file) instead.
    """
    name = "wheel-" + requirement.replace("==", "-")
    assert config.cache is not None, "the pytest cache provider is disabled (-p no:cacheprovider)"
    target = Path(config.cache.mkdir(name))
    with open(target.parent / f"{name}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wheels = sorted(target.glob("*.whl"))
        if not wheels:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "--dest",
                    str(target),
                    requirement,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            wheels = sorted(target.glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                pytest.fail(f"pip download {requirement} failed:\n{proc.stderr}")
    return wheels[0]
