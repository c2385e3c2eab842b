"""A throw-away certificate authority and a server certificate for 127.0.0.1 (TLS tests).

Made with the ``openssl`` command line (Debian's ``openssl`` package), valid for two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "have_openssl", "make_pki"]


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA's certificate, the server's certificate and key, and both in one."""

    ca: Path
    certificate: Path
    key: Path
    combined: Path


def have_openssl() -> bool:
    """Whether the ``openssl`` command is installed."""
    return shutil.which("openssl") is not None


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(folder: Path) -> Pki:
    """Write a CA and a server certificate for IP 127.0.0.1 signed by it into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
         "ca.pem", "-days", "2", "-subj", "/CN=monai-tumor test CA", cwd=folder)  # fmt: skip
    _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
         "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder)  # fmt: skip
    (folder / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        encoding="ascii",
    )
    _run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
         cwd=folder)  # fmt: skip
    combined = folder / "server-with-key.pem"
    combined.write_bytes(
        (folder / "server.pem").read_bytes() + (folder / "server.key").read_bytes()
    )
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", combined)
