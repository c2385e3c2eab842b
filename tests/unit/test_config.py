from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monai_tumor.config import (
    CACHE_ENV_VAR,
    DATA_ENV_VAR,
    DEFAULT_DATA_DIR,
    MIN_PATIENT_KEY_LENGTH,
    PATIENT_KEY_ENV_VAR,
    cache_root,
    data_root,
    default_index_path,
    patient_key,
    patient_key_file,
    patient_key_id,
)
from monai_tumor.errors import ConfigError


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert data_root() == tmp_path.resolve()


def test_default_is_shared_data_beside_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert data_root() == DEFAULT_DATA_DIR
    assert DEFAULT_DATA_DIR.parts[-2:] == ("shared", "data")


def test_data_fixture_finds_the_readme(data_dir: Path) -> None:
    assert (data_dir / "README.md").is_file()


@pytest.mark.parametrize("source", ["cache_env", "xdg", "home"])
def test_cache_root_precedence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "mine"))
    expected = tmp_path / "mine"
    if source != "cache_env":
        monkeypatch.delenv(CACHE_ENV_VAR)
        expected = tmp_path / "xdg" / "monai-tumor"
    if source == "home":
        monkeypatch.delenv("XDG_CACHE_HOME")
        expected = tmp_path / "home" / ".cache" / "monai-tumor"
    assert cache_root() == expected.resolve()
    assert default_index_path(tmp_path / "export").parent == expected.resolve() / "index"


def test_index_path_follows_the_resolved_export(tmp_path: Path) -> None:
    export = tmp_path / "exports" / "Lung 1 (2019)"
    export.mkdir(parents=True)
    (tmp_path / "link").symlink_to(export)
    path = default_index_path(export)
    assert path.name.startswith("Lung_1_2019-") and path.suffix == ".sqlite"
    # every spelling of the same folder names the same index
    assert default_index_path(tmp_path / "link") == path
    assert default_index_path(export / ".." / export.name) == path
    assert default_index_path(str(export) + "/") == path
    # a folder of the same name elsewhere gets its own
    other = tmp_path / "elsewhere" / "Lung 1 (2019)"
    assert default_index_path(other) != path
    assert default_index_path(other).name.startswith("Lung_1_2019-")


_FOLDER_NAMES = st.text(min_size=1, max_size=200).filter(
    lambda n: "/" not in n and "\x00" not in n and n not in {".", ".."}
)


@given(name=_FOLDER_NAMES)
def test_index_file_name_is_always_a_plain_file_name(name: str) -> None:
    path = default_index_path(Path("/exports") / name)
    stem, _, digest = path.stem.rpartition("-")
    assert path.parent == cache_root() / "index"
    assert 1 <= len(stem) <= 40 and set(stem) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
    )
    assert len(digest) == 16 and int(digest, 16) >= 0


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No key in the environment; the key file goes to a temporary config home."""
    monkeypatch.delenv(PATIENT_KEY_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "monai-tumor" / "patient.key"


def test_patient_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PATIENT_KEY_ENV_VAR, "x" * MIN_PATIENT_KEY_LENGTH)
    assert patient_key() == b"x" * MIN_PATIENT_KEY_LENGTH


def test_short_patient_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PATIENT_KEY_ENV_VAR, "short")
    with pytest.raises(ConfigError, match=f"{PATIENT_KEY_ENV_VAR} is 5 characters long"):
        patient_key()


def test_patient_key_file_is_made_once_private_and_reused(no_key_env: Path) -> None:
    assert patient_key_file() == no_key_env and not no_key_env.exists()
    key = patient_key()
    assert no_key_env.is_file() and stat.S_IMODE(no_key_env.stat().st_mode) == 0o600
    assert len(key) == 64 and int(key, 16) >= 0  # 256 random bits, hex
    assert patient_key() == key  # reused, not remade
    assert not list(no_key_env.parent.glob(".*tmp"))  # no temporary file left behind


def test_patient_keys_differ_between_installations(
    no_key_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = patient_key()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "elsewhere"))
    assert patient_key() != first


def test_truncated_patient_key_file_is_an_error(no_key_env: Path) -> None:
    no_key_env.parent.mkdir(parents=True)
    no_key_env.write_text("abc\n")
    no_key_env.chmod(0o600)
    with pytest.raises(ConfigError, match="holds 3 bytes") as info:
        patient_key()
    assert info.value.path == no_key_env


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize(
    ("mode", "refused"), [(0o644, True), (0o620, True), (0o604, True), (0o400, False)]
)
def test_patient_key_file_readable_by_others_is_refused(
    no_key_env: Path, mode: int, refused: bool
) -> None:
    key = patient_key()
    no_key_env.chmod(mode)
    if not refused:
        assert patient_key() == key
        return
    with pytest.raises(ConfigError, match=f"mode {mode:o}.*chmod 600") as info:
        patient_key()
    assert info.value.path == no_key_env


@pytest.mark.parametrize(
    ("error", "falls_back"),
    [
        (errno.EPERM, True),
        (errno.EOPNOTSUPP, True),
        (errno.ENOSYS, True),
        (errno.EACCES, False),
        (errno.EROFS, False),
    ],
)
def test_patient_key_file_when_hard_links_fail(
    no_key_env: Path, monkeypatch: pytest.MonkeyPatch, error: int, falls_back: bool
) -> None:
    """No hard links on the file system: the key file is created exclusively instead.

    Any other failure of ``link`` is a ConfigError, and no key file is left behind.
    """

    def failing_link(src: object, dst: object) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "link", failing_link)
    if falls_back:
        key = patient_key()
        assert len(key) == 64 and stat.S_IMODE(no_key_env.stat().st_mode) == 0o600
        assert patient_key() == key
    else:
        with pytest.raises(ConfigError, match="cannot read or create the patient key file"):
            patient_key()
        assert not no_key_env.exists()
    assert not list(no_key_env.parent.glob(".*tmp"))


def test_patient_key_file_made_meanwhile_is_kept(
    no_key_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's key, created between our check and our link, is the one used."""
    real_link = os.link

    def racing_link(src: str, dst: str) -> None:
        Path(dst).write_text("b" * 64 + "\n")
        Path(dst).chmod(0o600)
        real_link(src, dst)  # raises FileExistsError, as it would in the race

    monkeypatch.setattr(os, "link", racing_link)
    assert patient_key() == b"b" * 64
    assert not list(no_key_env.parent.glob(".*tmp"))


def test_patient_key_file_that_cannot_be_made(no_key_env: Path) -> None:
    no_key_env.parent.parent.mkdir(parents=True)
    no_key_env.parent.write_text("a file where the folder should be")
    with pytest.raises(ConfigError, match=f"set \\${PATIENT_KEY_ENV_VAR} instead"):
        patient_key()


def test_patient_key_id_is_stable_and_does_not_contain_the_key() -> None:
    key = b"k" * 32
    assert patient_key_id(key) == patient_key_id(key) != patient_key_id(b"m" * 32)
    assert len(patient_key_id(key)) == 16 and int(patient_key_id(key), 16) >= 0
