"""The system Chromium driven headless by Playwright, for the report and viewer tests.

Playwright never downloads a browser here: it drives Debian's ``chromium``
(``scripts/setup.sh`` installs it; ``$MONAI_TUMOR_CHROMIUM`` may name another binary).
A missing browser is a test failure with the command that installs it, never a skip.
WebGL2 runs on SwiftShader (Chromium's software renderer) with ``--disable-gpu``.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

__all__ = ["CHROMIUM_ARGS", "ConsoleLog", "chromium_path", "open_chromium", "png_pixels"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Path of the Chromium binary; fails the test (no skip) when there is none."""
    wanted = os.environ.get("MONAI_TUMOR_CHROMIUM") or "/usr/bin/chromium"
    found = wanted if Path(wanted).is_file() else shutil.which("chromium")
    if not found:
        pytest.fail(
            f"no Chromium at {wanted}: run scripts/setup.sh (apt-get install chromium) or set "
            "MONAI_TUMOR_CHROMIUM to a Chromium binary"
        )
    return found


@contextmanager
def open_chromium(profile_dir: Path, *, width: int = 1200, height: int = 760) -> Iterator[Any]:
    """A headless Chromium context with a fresh profile in ``profile_dir``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=chromium_path(),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class ConsoleLog:
    """Console errors and uncaught exceptions of a page (warnings are kept apart)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> ConsoleLog:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed", lambda req: self.errors.append(f"request failed: {req.url}"))
        return self

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)
        elif message.type == "warning":
            self.warnings.append(message.text)


def png_pixels(png: bytes) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pixels of a PNG screenshot."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
