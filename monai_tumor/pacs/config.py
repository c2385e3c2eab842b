"""Connection settings for PACS peers: DICOMweb endpoints, DICOM nodes, retry policy.

All option groups are frozen dataclasses; nothing here opens a connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from monai_tumor.errors import ConfigError

__all__ = [
    "DicomNode",
    "DicomwebConfig",
    "RetryPolicy",
    "TlsConfig",
    "check_ae_title",
    "parse_node",
]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed PACS operation is retried.

    The wait before retry ``n`` (1-based) is ``min(backoff_seconds * 2 ** (n - 1),
    max_backoff_seconds)``: with the defaults 2, 4, 8, 16, 32 s, about a minute in all,
    enough for a PACS restart.

    Attributes
    ----------
    attempts
        Tries in all (1 = no retry).
    backoff_seconds
        Wait before the first retry.
    max_backoff_seconds
        Longest single wait.
    """

    attempts: int = 6
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.backoff_seconds < 0 or self.max_backoff_seconds < 0:
            raise ConfigError("retry backoff must not be negative")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(self.backoff_seconds * 2 ** (retry - 1), self.max_backoff_seconds))


@dataclass(frozen=True)
class DicomwebConfig:
    """A DICOMweb server (QIDO-RS, WADO-RS, STOW-RS) and how to talk to it.

    Attributes
    ----------
    url
        Service root, e.g. ``https://pacs.example.org/dicom-web``.
    username, password
        HTTP basic authentication (both or neither).
    token
        Bearer token (``Authorization: Bearer ...``); exclusive with basic auth.
    ca_bundle
        PEM file of the certificate authorities to trust for ``https`` (default: the
        system's).
    connect_timeout, read_timeout
        Seconds to wait for a connection and between bytes of an answer. The read
        timeout bounds a silence, not a whole transfer; dicomweb-client's default of
        20 s in all is too short for large series on a busy PACS.
    retry
        Retries of connection errors, cut transfers and 408/429/500/502/503/504 answers.
    """

    url: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    ca_bundle: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if not re.match(r"(?i)^https?://", self.url):
            raise ConfigError(
                f"DICOMweb URL {self.url!r} must start with http:// or https://, e.g. "
                "https://pacs.example.org/dicom-web"
            )
        if (self.username is None) != (self.password is None):
            raise ConfigError("basic authentication needs both a user name and a password")
        if self.token is not None and self.username is not None:
            raise ConfigError("give either basic authentication or a bearer token, not both")
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ConfigError(
                "the CA bundle does not exist; give a PEM file of trusted certificate authorities",
                path=self.ca_bundle,
            )

    @property
    def safe_url(self) -> str:
        """The URL without any user:password part (for messages and logs)."""
        return re.sub(r"//[^/@]*@", "//", self.url)


@dataclass(frozen=True)
class TlsConfig:
    """TLS for DICOM associations (DICOM PS3.15 Annex B, "secure transport").

    Attributes
    ----------
    certificate, private_key
        Our PEM certificate and key (required for a listener; for a client only when the
        peer asks for client certificates).
    ca_bundle
        PEM file of the certificate authorities whose peers are trusted; with it, the peer
        must present a certificate signed by one of them.
    """

    certificate: Path | None = None
    private_key: Path | None = None
    ca_bundle: Path | None = None

    def __post_init__(self) -> None:
        for name in ("certificate", "private_key", "ca_bundle"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"TLS {name.replace('_', ' ')} not found", path=value)
        if (self.certificate is None) != (self.private_key is None):
            raise ConfigError("TLS needs both a certificate and its private key")


@dataclass(frozen=True)
class DicomNode:
    """A DICOM application entity on the network.

    Attributes
    ----------
    ae_title
        Its AE title (1-16 characters, no backslash).
    host
        Host name or IP address.
    port
        TCP port.
    """

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title)
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} of {self.ae_title} is not in 1..65535")

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(title: str) -> str:
    """Return ``title`` if it is a valid AE title, else raise :class:`ConfigError`."""
    if not 0 < len(title.strip()) <= 16 or "\\" in title or not title.isascii():
        raise ConfigError(
            f"AE title {title!r} is not valid: 1 to 16 ASCII characters without backslash"
        )
    return title.strip()


def parse_node(text: str) -> DicomNode:
    """Parse ``AET@HOST:PORT`` (e.g. ``ORTHANC@pacs.example.org:4242``).

    Raises
    ------
    ConfigError
        The text is not of that form.
    """
    match = re.fullmatch(r"\s*([^@]{1,16})@(\[[0-9A-Fa-f:.]+\]|[^:@\s]+):(\d{1,5})\s*", text)
    if match is None:
        raise ConfigError(
            f"DICOM node {text!r} is not of the form AET@HOST:PORT, e.g. ORTHANC@10.0.0.5:4242"
        )
    return DicomNode(match.group(1), match.group(2).strip("[]"), int(match.group(3)))
