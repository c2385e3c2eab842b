"""Helpers shared by every CLI command: options, consoles, logging, exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from monai_tumor.errors import EXIT_CODES, MonaiTumorError
from monai_tumor.export.atomic import atomic_write_json
from monai_tumor.logs import routed_logging

if TYPE_CHECKING:
    from monai_tumor.radiomics.pool import FeaturePool
    from monai_tumor.report.viewer import ViewerOptions

__all__ = [
    "APP_SETTINGS",
    "ClassifierOption",
    "CommandResources",
    "DeviceOption",
    "FeaturesFlag",
    "LogFileOption",
    "OutputFields",
    "SeedRoiOption",
    "SeedsOption",
    "VerboseFlag",
    "ViewerFlag",
    "WrappingGroup",
    "command_logging",
    "command_resources",
    "exit_code_for",
    "handle_errors",
    "output_fields",
    "stderr_console",
    "stdout_console",
    "write_json_report",
]


@dataclass(frozen=True)
class CommandResources:
    """What the console script started for a command before parsing it (``ctx.obj``).

    Attributes
    ----------
    feature_pool
        Radiomics worker processes for ``infer`` (:func:`monai_tumor.cli.main.main`).
    """

    feature_pool: FeaturePool | None = None


def command_resources(ctx: typer.Context) -> CommandResources:
    """Return the command's :class:`CommandResources` (empty when ``app`` is called directly)."""
    obj = ctx.obj
    return obj if isinstance(obj, CommandResources) else CommandResources()


# The options of the commands that segment and write series outputs (batch, infer), defined
# once: `device: DeviceOption = "auto"` in a command's signature. Their defaults stay in the
# signatures (Typer reads them there).

#: ``--device``: where the model runs.
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]

#: ``--seeds CSV``: seed points for VOI bundles.
SeedsOption = Annotated[
    Path | None,
    typer.Option("--seeds", help="CSV of seed points x,y,z (DICOM LPS mm) for VOI bundles."),
]

#: ``--seed-roi REGEX``: which RTSTRUCT ROIs give seeds (default ``(?i)gtv``).
SeedRoiOption = Annotated[
    str,
    typer.Option("--seed-roi", help="Regex of RTSTRUCT ROI names used as seeds ('' = all)."),
]

#: ``--viewer/--no-viewer`` of the commands that write series outputs (batch, infer).
ViewerFlag = Annotated[
    bool,
    typer.Option(
        "--viewer/--no-viewer",
        help="Write each series' 3D viewer page and display copy (viewer.html, display.js).",
    ),
]

#: ``--features/--no-features``: IBSI radiomics per lesion (batch, infer).
FeaturesFlag = Annotated[
    bool,
    typer.Option(
        "--features/--no-features",
        help="IBSI radiomics features per lesion (when the bundle has configs/radiomics.json).",
    ),
]

#: ``--classifier BUNDLE``: a lesion classification bundle (batch, infer).
ClassifierOption = Annotated[
    Path | None,
    typer.Option(
        "--classifier",
        help="Classification bundle run on every lesion (default: the one the bundle names).",
    ),
]


#: ``-v/--verbose`` of every command: the log on the terminal too.
VerboseFlag = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also show the log (INFO records and library warnings) on the terminal.",
    ),
]

#: ``--log-file FILE`` of every command: where the log is appended.
LogFileOption = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        dir_okay=False,
        help="Append the log (INFO records and library warnings) to this file "
        "(batch, infer and listen: default OUT/monai-tumor.log).",
    ),
]


class OutputFields(TypedDict):
    """The fields ``--viewer``, ``--features`` and ``--classifier`` set (infer, batch options)."""

    viewer: ViewerOptions | None
    features: bool
    classifier: Path | None


def output_fields(*, viewer: bool, features: bool, classifier: Path | None) -> OutputFields:
    """Map the shared output flags to the pipeline's option fields (``--viewer``: defaults)."""
    # Imported here: the viewer pulls in the report stack, which `--help` must not pay for.
    from monai_tumor.report.viewer import ViewerOptions

    return OutputFields(
        viewer=ViewerOptions() if viewer else None, features=features, classifier=classifier
    )


class WrappingGroup(TyperGroup):
    """A command group whose command list wraps each command's summary instead of cutting it.

    click fits a summary on one line beside the command names and cuts the rest ("..."); on
    an 80-column terminal that cuts most of ours mid-sentence. Neither click nor typer has a
    setting for it, hence this override of :meth:`click.Group.format_commands`.
    """

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Write the ``Commands:`` section: each visible command with its whole summary.

        ``ctx`` and ``formatter`` are click's ``Context`` and ``HelpFormatter``: the click
        that typer ships (``typer._click`` in recent releases) or the ``click`` package.
        """
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            summary = command.short_help or (command.help or "").strip().split("\n\n")[0]
            rows.append((name, " ".join(summary.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


#: Settings of every ``typer.Typer`` of the CLI. Help is click's plain text: it wraps at the
#: terminal's width and never cuts an option's name or a path in its help, which typer's
#: rich panels do on an 80-column terminal (``--seeds-from-r…``).
APP_SETTINGS: dict[str, Any] = {
    "cls": WrappingGroup,
    "no_args_is_help": True,
    "rich_markup_mode": None,
}


def stdout_console() -> Console:
    """Make a console on stdout, sized for the terminal (or ``COLUMNS``) at call time.

    Made per use rather than once at import, so a caller (or a test) that changes the
    environment or captures stdout gets what it asked for.
    """
    return Console()


def stderr_console() -> Console:
    """Make a console on stderr (errors, progress), per use like :func:`stdout_console`."""
    return Console(stderr=True)


def exit_code_for(error: MonaiTumorError) -> int:
    """Stable exit code for an error: that of its most specific known class."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn a :class:`MonaiTumorError` into a one-line message and its exit code."""
    try:
        yield
    except MonaiTumorError as exc:
        # the message names files and header values: shown as they are, never read as markup
        stderr_console().print(
            f"[bold red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(code=exit_code_for(exc)) from exc


def write_json_report(path: Path | None, payload: dict[str, Any]) -> None:
    """Write a JSON run report atomically if ``path`` is given."""
    if path is not None:
        atomic_write_json(path, payload)


@contextmanager
def command_logging(
    *, verbose: bool, log_file: Path | None, default_log_file: Path | None = None
) -> Iterator[Path | None]:
    """Route logging while one command runs, from its ``-v`` and ``--log-file`` options.

    Parameters
    ----------
    verbose
        The command's ``-v/--verbose``: the log on the terminal as well. Without
        it the terminal shows only the package's own errors (and what the
        command prints).
    log_file
        The command's ``--log-file`` (appended; its folder is created).
    default_log_file
        Log file used when ``--log-file`` is not given (``OUT/monai-tumor.log``
        for the commands that write a run folder); ``None``: no file.

    Yields
    ------
    pathlib.Path or None
        The log file written, if any.

    See Also
    --------
    monai_tumor.logs.routed_logging : what goes where.
    """
    with routed_logging(
        verbose=verbose, log_file=log_file if log_file is not None else default_log_file
    ) as path:
        yield path
