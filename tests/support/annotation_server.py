"""The annotation server as a subprocess, and MONAI Label 0.8.5's client, for the e2e tests.

``ml`` is ``monailabel.client.client`` from the ``monailabel==0.8.5`` wheel, downloaded with
``--no-deps`` into the pytest cache (its server pins conflict with ours; ``pip install
--target`` would lay the wheel's data folder over the package) and loaded as a single module
file (it needs only ``requests`` and the standard library). :class:`Server` runs
``monai-tumor serve`` on a free loopback port.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest

from tests.support.pip_target import pip_wheel

__all__ = ["GLIOMA", "LUNG", "Server", "free_port", "ml", "read_nifti"]

ROOT = Path(__file__).resolve().parents[2]
LUNG = ROOT / "bundles" / "lung_nodule_ct"
GLIOMA = ROOT / "bundles" / "brats_glioma_mri"


@pytest.fixture(scope="module")
def ml(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``monailabel.client.client`` from the 0.8.5 wheel (requests + stdlib only)."""
    wheel = pip_wheel(request.config, "monailabel==0.8.5")
    folder = tmp_path_factory.mktemp("monailabel-client")
    with zipfile.ZipFile(wheel) as zf:
        source = folder / "client.py"
        source.write_bytes(zf.read("monailabel/client/client.py"))
    spec = importlib.util.spec_from_file_location("monailabel_client_085", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``monai-tumor serve`` subprocess on a free loopback port."""

    def __init__(self, studies: Path | str, state: Path, log: Path, **options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state
        self.log = log  #: the process's stdout and stderr
        args = [
            sys.executable,
            "-m",
            "monai_tumor.cli.main",
            "serve",
            "--studies",
            str(studies),
            "--bundle",
            str(LUNG),
            "--bundle",
            str(GLIOMA),
            "--state",
            str(state),
            "--port",
            str(self.port),
            "--threads",
            "1",
            "--device",
            "cpu",
        ]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", value]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/auth/", timeout=5).read()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")

    def rss_kb(self) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS")))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine of a NIfTI file."""
    img = nib.nifti1.load(path)
    return np.asarray(img.dataobj), img.affine
