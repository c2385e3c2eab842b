"""The ``monai-tumor`` console script: a thin typer app over the library.

Each subcommand lives in its own module and only parses options, calls the
package, prints, and maps :class:`~monai_tumor.errors.MonaiTumorError` to a
stable exit code (see :data:`monai_tumor.errors.EXIT_CODES`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from monai_tumor import __version__
from monai_tumor.cli import (
    batch_cmd,
    bundle_cmd,
    convert_cmd,
    evaluate_cmd,
    infer_cmd,
    pacs_cmd,
    report_cmd,
    scan_cmd,
    serve_cmd,
)
from monai_tumor.cli._common import APP_SETTINGS, CommandResources

if TYPE_CHECKING:
    from monai_tumor.radiomics.pool import FeaturePool

app = typer.Typer(
    name="monai-tumor",
    help="DICOM-native tumour segmentation on MONAI: scan exports, read series with "
    "exact geometry, convert, segment and export.",
    add_completion=False,
    pretty_exceptions_enable=False,
    **APP_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"monai-tumor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """DICOM-native tumour segmentation on MONAI."""


scan_cmd.register(app)
convert_cmd.register(app)
bundle_cmd.register(app)
evaluate_cmd.register(app)
batch_cmd.register(app)
infer_cmd.register(app)
report_cmd.register(app)
pacs_cmd.register(app)
serve_cmd.register(app)

#: Commands that only run inference: their process starts as
#: :func:`monai_tumor.startup.prepare_inference_process` says.
INFERENCE_COMMANDS = frozenset({"infer", "batch"})


def _option_value(args: list[str], name: str) -> str | None:
    """Return the value of ``--name VALUE`` or ``--name=VALUE`` in ``args`` (last wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


#: ``batch`` options that send the work to Dask workers (which compute their own features).
_CLUSTER_OPTIONS = ("--scheduler", "--cluster")


def _feature_pool(command: str, args: list[str]) -> FeaturePool | None:
    """Radiomics workers for ``infer``/``batch``, started before the imports (docs/cli.md)."""
    from monai_tumor.radiomics.pool import FeaturePool

    bundle = _option_value(args, "--bundle")
    rest = args[args.index(command) :]
    if bundle is None or any(_option_value(rest, o) is not None for o in _CLUSTER_OPTIONS):
        return None  # typer reports a missing option; Dask runs need no local workers
    return FeaturePool.for_bundle(bundle, features="--no-features" not in rest)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the start-up choices of the process, then :data:`app`.

    For ``infer`` and ``batch`` on a bundle with radiomics settings, the feature worker processes
    (:class:`~monai_tumor.radiomics.pool.FeaturePool`) start first, so they load MIRP
    while this process imports torch and MONAI; the command finds them in its click
    context (``ctx.obj``). Called as ``app`` (tests, other programs), commands run
    without them and compute features in the process.

    Parameters
    ----------
    argv
        The arguments (default ``sys.argv[1:]``); the first one not starting with ``-``
        names the command.
    """
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    pool = None
    # `batch --help` only prints: it need not pay 3 s for torch, MONAI and the workers
    if command in INFERENCE_COMMANDS and "--help" not in args:
        from monai_tumor.startup import prepare_inference_process

        pool = _feature_pool(command, args)
        # batch: OpenMP threads that sleep while waiting (same throughput on an idle
        # machine, far better beside other jobs; docs/cli.md); infer keeps them spinning
        prepare_inference_process(openmp_wait_policy="PASSIVE" if command == "batch" else None)
    try:
        app(args=args, prog_name="monai-tumor", obj=CommandResources(feature_pool=pool))
    finally:
        if pool is not None:
            pool.close()


if __name__ == "__main__":  # pragma: no cover
    main()
