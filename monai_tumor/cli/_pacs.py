"""Option parsing shared by the PACS commands (``batch --dicomweb/--dimse``, ``listen``, ``send``).

Secrets never go on the command line (where ``ps`` shows them): the password and the
bearer token are read from environment variables named by ``--password-env`` /
``--token-env``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from monai_tumor.errors import ConfigError
from monai_tumor.pacs.config import DicomwebConfig, RetryPolicy, TlsConfig

if TYPE_CHECKING:
    from monai_tumor.pacs.dimse import DimseOptions

__all__ = ["dicomweb_config", "dimse_options", "retry_policy", "tls_config"]


def _secret(variable: str | None, what: str) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"the environment variable {variable} (the {what}) is not set")
    return value


def retry_policy(retries: int, backoff: float) -> RetryPolicy:
    """``--retries N`` (retries after the first try) and ``--backoff SECONDS``."""
    return RetryPolicy(attempts=retries + 1, backoff_seconds=backoff)


def dicomweb_config(
    url: str,
    *,
    user: str | None,
    password_env: str | None,
    token_env: str | None,
    ca_bundle: Path | None,
    timeout: float,
    retry: RetryPolicy,
) -> DicomwebConfig:
    """Build the connection settings of one DICOMweb server from CLI options."""
    password = _secret(password_env, "DICOMweb password")
    if user is not None and password is None:
        raise ConfigError("--user needs --password-env VARIABLE (the password is never an option)")
    return DicomwebConfig(
        url,
        username=user,
        password=password if user is not None else None,
        token=_secret(token_env, "DICOMweb bearer token"),
        ca_bundle=ca_bundle,
        read_timeout=timeout,
        retry=retry,
    )


def tls_config(
    certificate: Path | None, key: Path | None, ca_bundle: Path | None
) -> TlsConfig | None:
    """TLS settings, or ``None`` when no TLS option was given."""
    if certificate is None and key is None and ca_bundle is None:
        return None
    return TlsConfig(certificate=certificate, private_key=key, ca_bundle=ca_bundle)


def dimse_options(
    aet: str, *, tls: TlsConfig | None, timeout: float, retry: RetryPolicy
) -> DimseOptions:
    """Our AE title, TLS, timeouts and retries for DIMSE."""
    from monai_tumor.pacs.dimse import DimseOptions  # pynetdicom only when used

    return DimseOptions(
        ae_title=aet, tls=tls, dimse_timeout=timeout, network_timeout=timeout, retry=retry
    )
