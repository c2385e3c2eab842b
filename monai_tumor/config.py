"""Process-wide settings read from the environment (no global mutable state).

Two settings exist today: where the shared real data lives
(``$MONAI_TUMOR_DATA``), and the secret key that makes patient hashes
pseudonymous (``$MONAI_TUMOR_PATIENT_KEY``, else a key file created once per
user; see :func:`patient_key`).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from monai_tumor.errors import ConfigError

__all__ = [
    "DATA_ENV_VAR",
    "DEFAULT_DATA_DIR",
    "MIN_PATIENT_KEY_LENGTH",
    "PATIENT_KEY_ENV_VAR",
    "data_root",
    "patient_key",
    "patient_key_file",
    "patient_key_id",
]

#: Environment variable naming the folder with the shared real imaging data.
DATA_ENV_VAR = "MONAI_TUMOR_DATA"
#: Default location of the shared data, relative to the project root.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
#: Environment variable holding the secret key of the patient hashes.
PATIENT_KEY_ENV_VAR = "MONAI_TUMOR_PATIENT_KEY"
#: Shortest accepted key (characters): a short key could be guessed.
MIN_PATIENT_KEY_LENGTH = 16


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


def patient_key_file() -> Path:
    """Where the per-user patient key is kept when ``$MONAI_TUMOR_PATIENT_KEY`` is unset.

    Returns
    -------
    Path
        ``$XDG_CONFIG_HOME/monai-tumor/patient.key`` (``~/.config`` when
        ``XDG_CONFIG_HOME`` is unset).
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "monai-tumor" / "patient.key"


def patient_key() -> bytes:
    """Return the secret key of the patient hashes (HMAC-SHA-256 of PatientID).

    A plain SHA-256 of a PatientID is not pseudonymous: hospital IDs are short,
    so every possible ID can be hashed and the hash looked up. Keyed with a
    secret, the hash cannot be reversed without the key, yet stays stable for
    everyone sharing it (set the same ``$MONAI_TUMOR_PATIENT_KEY`` on every
    machine whose outputs must agree on patient identity).

    Returns
    -------
    bytes
        ``$MONAI_TUMOR_PATIENT_KEY`` (UTF-8) if set; else the contents of
        :func:`patient_key_file`, which is created on first use with 256
        random bits, readable by its owner only.

    Raises
    ------
    ConfigError
        The variable is set but shorter than :data:`MIN_PATIENT_KEY_LENGTH`,
        or the key file cannot be read or created, is too short, or can be read
        or written by others than its owner (POSIX mode bits, as ssh checks a key).
    """
    value = os.environ.get(PATIENT_KEY_ENV_VAR)
    if value is not None:
        if len(value) < MIN_PATIENT_KEY_LENGTH:
            raise ConfigError(
                f"${PATIENT_KEY_ENV_VAR} is {len(value)} characters long; use at least "
                f"{MIN_PATIENT_KEY_LENGTH} (e.g. the output of `openssl rand -hex 32`)"
            )
        return value.encode("utf-8")
    path = patient_key_file()
    try:
        if not path.exists():
            _create_key_file(path)
        mode = path.stat().st_mode
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read or create the patient key file ({exc.strerror}); set "
            f"${PATIENT_KEY_ENV_VAR} instead",
            path=path,
        ) from exc
    if os.name == "posix" and mode & 0o077:
        # like ssh with a private key: a key others can read no longer protects the hashes
        raise ConfigError(
            f"the patient key file is readable or writable by others (mode {mode & 0o777:o}); "
            f"run `chmod 600 {path}`",
            path=path,
        )
    if len(key) < MIN_PATIENT_KEY_LENGTH:
        raise ConfigError(
            f"the patient key file holds {len(key)} bytes, expected at least "
            f"{MIN_PATIENT_KEY_LENGTH}; delete it to have a new key made (patient hashes "
            "then change) or set $" + PATIENT_KEY_ENV_VAR,
            path=path,
        )
    return key


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` atomically, unless another process just did.

    The key is written to a temporary file and hard-linked into place, so no process ever
    reads a half-written key and a concurrent creator's key is never replaced. On a file
    system without hard links (some network shares), the file is created exclusively
    (``O_EXCL``) and written in place instead: still never replaced, but a crash while
    writing leaves a short key, which :func:`patient_key` then reports.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_synced(fd, key)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process created it meanwhile
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
        else:
            return
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    _write_synced(fd, key)


#: errno values of ``link`` where the file system has no hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def _write_synced(fd: int, text: str) -> None:
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def patient_key_id(key: bytes) -> str:
    """Return a public fingerprint of a patient key (it does not reveal the key).

    Stored with results whose patient hashes were made with ``key`` (the scan
    index), so hashes made with different keys are never mixed.

    Parameters
    ----------
    key
        A key from :func:`patient_key`.

    Returns
    -------
    str
        16 hex digits.
    """
    return hmac.new(key, b"monai-tumor patient key id", hashlib.sha256).hexdigest()[:16]
