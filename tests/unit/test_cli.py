"""The CLI shell: every command answers --help, errors map to exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from monai_tumor import __version__
from monai_tumor.cli.main import app

runner = CliRunner()


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        commands = getattr(cmd, "commands", None)  # groups (typer's vendored click)
        if isinstance(commands, dict):
            for name, sub in commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "root")
def test_help_fits_80_columns_and_cuts_nothing(path: list[str]) -> None:
    """Every option name and every command summary is printed whole on an 80-column terminal."""
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    body = [line for line in result.output.splitlines() if not line.startswith("Usage:")]
    assert "…" not in result.output and not any(line.endswith("...") for line in body)
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    flowing = " ".join(result.output.split())
    words = set(re.split(r"[\s,]+", result.output))
    for param in getattr(command, "params", []):
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("-"):
                assert opt in words, f"{opt} not whole in: {result.output}"
    for sub in getattr(command, "commands", {}).values():
        summary = sub.short_help or sub.help.strip().split("\n\n")[0]
        assert " ".join(summary.split()) in flowing


def test_expected_commands_exist() -> None:
    names = {" ".join(p) for p in _command_paths()}
    assert {"scan", "convert"} <= names


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_convert_missing_input_is_a_config_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", "1.2.3.4", str(tmp_path / "x.nii.gz")])
    assert result.exit_code == 50
    assert "--index" in result.output


def test_cli_start_up_does_not_import_torch_or_monai() -> None:
    """`monai-tumor --help`, scan and convert must not pay seconds for torch/MONAI."""
    import subprocess
    import sys

    code = (
        "import sys; import monai_tumor.cli.main; "
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _leaf_commands() -> list[tuple[str, object]]:
    root = typer.main.get_command(app)
    leaves: list[tuple[str, object]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        commands = getattr(cmd, "commands", None)
        if isinstance(commands, dict):
            for name, sub in commands.items():
                walk(sub, [*prefix, name])
        else:
            leaves.append((" ".join(prefix), cmd))

    walk(root, [])
    return leaves


def test_every_command_has_the_same_logging_options() -> None:
    """-v/--verbose and --log-file on every command, from the one shared definition."""
    seen: dict[str, set[tuple[tuple[str, ...], str]]] = {"--verbose": set(), "--log-file": set()}
    leaves = _leaf_commands()
    assert len(leaves) >= 11
    for name, cmd in leaves:
        options = {o: p for p in getattr(cmd, "params", []) for o in getattr(p, "opts", [])}
        for flag in seen:
            assert flag in options, f"{name} lacks {flag}"
            param = options[flag]
            seen[flag].add((tuple(param.opts), str(getattr(param, "help", ""))))
        assert "-v" in options["--verbose"].opts, name
    assert all(len(variants) == 1 for variants in seen.values()), seen


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["infer", "a", "--bundle", "b", "--out", "o"], "b"),
        (["infer", "--bundle=b2", "a"], "b2"),
        (["infer", "--bundle", "b", "--bundle", "c"], "c"),
        (["infer", "a", "--bundle"], None),
        (["infer", "a"], None),
    ],
)
def test_option_value_reads_both_spellings(args: list[str], expected: str | None) -> None:
    from monai_tumor.cli.main import _option_value

    assert _option_value(args, "--bundle") == expected


BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
GLIOMA = str(BUNDLES / "brats_glioma_mri")


@pytest.mark.parametrize(
    ("args", "started"),
    [
        (["infer", "x.nii.gz", "--bundle", GLIOMA], True),
        (["batch", "e", "--bundle", str(BUNDLES / "lung_nodule_ct"), "--out", "o"], True),
        (["infer", "x", "--bundle", GLIOMA, "--no-features"], False),
        (
            ["batch", "e", "--bundle", GLIOMA, "--cluster", "local"],
            False,
        ),
        (
            ["batch", "e", "--bundle", GLIOMA, "--scheduler=tcp://h"],
            False,
        ),
        (["infer", "x.nii.gz"], False),
        (["infer", "x", "--bundle", str(BUNDLES / "lung_nodule_malignancy")], False),
    ],
)
def test_feature_workers_start_only_for_local_runs_with_features(
    args: list[str], started: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monai_tumor.cli.main import _feature_pool
    from monai_tumor.radiomics import pool as pool_module

    monkeypatch.setattr(pool_module, "available_cpus", lambda: 2)
    pool = _feature_pool(args[0], args)
    try:
        assert (pool is not None) is started
    finally:
        if pool is not None:
            pool.close()
