from __future__ import annotations

from pathlib import Path

import pytest

from monai_tumor.config import DATA_ENV_VAR, DEFAULT_DATA_DIR, data_root


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert data_root() == tmp_path.resolve()


def test_default_is_shared_data_beside_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert data_root() == DEFAULT_DATA_DIR
    assert DEFAULT_DATA_DIR.parts[-2:] == ("shared", "data")


def test_data_fixture_finds_the_readme(data_dir: Path) -> None:
    assert (data_dir / "README.md").is_file()
