from __future__ import annotations

from pathlib import Path

import pytest

from monai_tumor import errors
from monai_tumor.cli._common import exit_code_for


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.InvalidSeriesError, 11),
        (errors.IngestError, 10),
        (errors.UnsupportedInputError, 12),
        (errors.BundleError, 20),
        (errors.ExportError, 30),
        (errors.PacsError, 40),
        (errors.ConfigError, 50),
        (errors.MonaiTumorError, 1),
    ],
)
def test_exit_codes_are_stable(cls: type[errors.MonaiTumorError], code: int) -> None:
    assert exit_code_for(cls("x")) == code


def test_every_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.MonaiTumorError)


def test_message_names_the_file() -> None:
    exc = errors.IngestError("truncated pixel data", path=Path("/exp/a/b"))
    assert str(exc) == "/exp/a/b: truncated pixel data"
    assert exc.path == Path("/exp/a/b")
    assert exc.reason == "truncated pixel data"


def test_subclass_of_a_subclass_gets_the_specific_code() -> None:
    class Custom(errors.InvalidSeriesError):
        pass

    assert exit_code_for(Custom("x")) == 11
