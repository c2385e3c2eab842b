"""A real Orthanc on loopback for the PACS tests, configured the way a careful site would.

:class:`OrthancServer` starts Debian's ``Orthanc`` binary (package ``orthanc``) with the
DICOMweb plugin (package ``orthanc-dicomweb``) on free loopback ports and a temporary
storage folder. Unlike Orthanc's defaults (any AE may store, no HTTP authentication):

* HTTP needs basic authentication (:data:`USER` / :data:`PASSWORD`), remote access is off;
* the DICOM server checks the called AE title and accepts C-STORE, C-FIND, C-GET, C-MOVE
  only from the modalities it knows (``DicomModalities``), each checked by AE title *and*
  host; unknown calling AE titles are rejected (``DicomAlwaysAllowStore`` etc. false);
* C-ECHO is open (a site's network checks use it).

Stop and start it again on the same folder to simulate a PACS going down mid-run
(:meth:`OrthancServer.stop`, :meth:`OrthancServer.start`): the ports and data are kept.

``load`` sends files with dcmtk's ``storescu`` from a known AE title, as a modality would.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "AET",
    "PASSWORD",
    "USER",
    "OrthancServer",
    "dicomweb_plugin",
    "free_port",
    "orthanc_binary",
    "storescu",
]

AET = "ORTHANC"
USER = "monai"
PASSWORD = "tumour-test-secret"
#: The modality the tests load data from (storescu), known to Orthanc.
MODALITY_AET = "SCANNER"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_binary() -> str | None:
    """Path of the Orthanc server binary, or None if it is not installed."""
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin installed by ``orthanc-dicomweb`` (asks dpkg, then the usual folder)."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False
        ).stdout.split()
    except OSError:
        listing = []
    for line in [*listing, "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]:
        path = Path(line)
        if path.name.startswith("libOrthancDicomWeb.so") and path.is_file():
            return path
    return None


@dataclass
class OrthancServer:
    """One Orthanc process with its folder, ports and the modalities it trusts.

    Parameters
    ----------
    root
        Folder for the configuration, the storage and the log (created).
    modalities
        AE title -> port of the DICOM peers on 127.0.0.1 Orthanc accepts (and sends
        C-MOVE results to). :data:`MODALITY_AET` is always added.
    """

    root: Path
    modalities: dict[str, int] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """HTTP root (REST API)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root (QIDO-RS, WADO-RS, STOW-RS)."""
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        """Basic-auth credentials."""
        return (USER, PASSWORD)

    def config(self) -> dict[str, Any]:
        """The Orthanc configuration written to ``orthanc.json``."""
        plugin = dicomweb_plugin()
        modalities = {MODALITY_AET: 0, **self.modalities}
        return {
            "Name": "monai-tumor-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "Plugins": [str(plugin)] if plugin else [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomServerEnabled": True,
            "DicomAet": AET,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "UnknownSopClassAccepted": False,
            "DicomModalities": {
                name.lower(): {
                    "AET": name,
                    "Host": "127.0.0.1",
                    "Port": port or 104,
                    "AllowEcho": True,
                    "AllowStore": True,
                    "AllowFind": True,
                    "AllowGet": True,
                    "AllowMove": True,
                }
                for name, port in modalities.items()
            },
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "StableAge": 1,
            "SaveJobs": False,
        }

    def start(self, *, timeout: float = 60.0) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until it answers."""
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError("Orthanc is not installed (Debian package 'orthanc')")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 (owned by the process)
        self.process = subprocess.Popen(
            [binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.process.returncode}; log:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/system", auth=self.auth, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop Orthanc (data and ports are kept for :meth:`start`)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of Orthanc's log (for failure messages)."""
        path = self.root / "orthanc.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ REST helpers

    def get(self, path: str) -> Any:
        """GET a REST resource and decode its JSON."""
        response = httpx.get(f"{self.url}{path}", auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.json()

    def get_bytes(self, path: str) -> bytes:
        """GET a REST resource as bytes (e.g. ``/instances/{id}/file``)."""
        response = httpx.get(f"{self.url}{path}", auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.content

    def find(self, level: str, query: Mapping[str, str]) -> list[str]:
        """Orthanc IDs of the resources matching a ``/tools/find`` query."""
        response = httpx.post(
            f"{self.url}/tools/find",
            auth=self.auth,
            json={"Level": level, "Query": dict(query)},
            timeout=30,
        )
        response.raise_for_status()
        return list(response.json())

    def series_of_modality(self, study_uid: str, modality: str) -> list[dict[str, Any]]:
        """The series of a study with this modality, as Orthanc describes them."""
        found = self.find("Series", {"StudyInstanceUID": study_uid, "Modality": modality})
        return [self.get(f"/series/{oid}") for oid in found]

    def load(self, files: Iterable[Path]) -> None:
        """Send files to this Orthanc with ``storescu`` from :data:`MODALITY_AET`."""
        storescu(list(files), host="127.0.0.1", port=self.dicom_port, called=AET)


def storescu(
    files: Sequence[Path],
    *,
    host: str,
    port: int,
    called: str,
    calling: str = MODALITY_AET,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Send files with dcmtk's ``storescu`` (one association), as a modality would."""
    command = [
        "storescu",
        "-aet",
        calling,
        "-aec",
        called,
        "--propose-lossless",
        "--scan-directories",
        host,
        str(port),
    ]
    # storescu accepts many files; a file list keeps the command line short.
    chunks = [list(files)[i : i + 200] for i in range(0, len(files), 200)]
    result: subprocess.CompletedProcess[str] | None = None
    for chunk in chunks:
        result = subprocess.run(
            [*command, *map(str, chunk)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DCMDICTPATH": os.environ.get("DCMDICTPATH", "")}
            if os.environ.get("DCMDICTPATH")
            else None,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"storescu failed ({result.returncode}): {result.stderr[-2000:]}")
    assert result is not None
    return result
