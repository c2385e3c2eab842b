"""Process-wide settings read from the environment (no global mutable state).

Three settings exist today: where the shared real data lives
(``$MONAI_TUMOR_DATA``), the secret key that makes patient hashes
pseudonymous (``$MONAI_TUMOR_PATIENT_KEY``, else a key file created once per
user; see :func:`patient_key`), and the per-user cache folder that holds the
scan index of each export (``$MONAI_TUMOR_CACHE``; see :func:`cache_root` and
:func:`default_index_path`): an export is only ever read, so nothing of ours is
kept inside it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from monai_tumor.errors import ConfigError

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_ENV_VAR",
    "DEFAULT_DATA_DIR",
    "MIN_PATIENT_KEY_LENGTH",
    "PATIENT_KEY_ENV_VAR",
    "cache_root",
    "data_root",
    "default_index_path",
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
#: Environment variable naming the per-user cache folder (scan indexes go to its ``index/``).
CACHE_ENV_VAR = "MONAI_TUMOR_CACHE"
#: Longest readable part of an index file name (the export folder's name, cleaned).
_INDEX_NAME_CHARS = 40


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


def cache_root() -> Path:
    """Return the per-user cache folder of monai-tumor (it may not exist yet).

    Returns
    -------
    Path
        ``$MONAI_TUMOR_CACHE`` if set; else ``$XDG_CACHE_HOME/monai-tumor``;
        else ``~/.cache/monai-tumor``. Everything in it can be rebuilt: deleting
        it only costs a full rescan the next time.
    """
    value = os.environ.get(CACHE_ENV_VAR)
    if value:
        return Path(value).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "monai-tumor"


def default_index_path(export_dir: str | os.PathLike[str]) -> Path:
    """Where ``monai-tumor scan`` keeps the SQLite index of an export by default.

    The index lives in the user's cache (:func:`cache_root`), never inside the
    export: exports are PACS dumps and shared collections that are only read.
    The file name is derived from the export's resolved absolute path, so a
    rescan of the same export (by any spelling of its path, symlinks included)
    reuses its index and two exports never share one.

    Parameters
    ----------
    export_dir
        The export folder (need not exist; it is resolved, not read).

    Returns
    -------
    Path
        ``cache_root() / "index" / "<name>-<hash>.sqlite"``: ``<name>`` is the
        export folder's name reduced to ``[A-Za-z0-9._-]`` (at most 40
        characters, for people looking into the folder), ``<hash>`` the first
        16 hex digits of the SHA-256 of the resolved path (what keeps exports
        apart).

    Examples
    --------
    >>> path = default_index_path("/data/exports/LUNG 1")
    >>> path.parent == cache_root() / "index"
    True
    >>> path.name
    'LUNG_1-5b990829b760044c.sqlite'
    """
    root = Path(export_dir).expanduser().resolve()
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name).strip("._-")[:_INDEX_NAME_CHARS]
    return cache_root() / "index" / f"{name or 'export'}-{digest}.sqlite"


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
