"""``monai-tumor listen``, ``send`` and ``echo``: DICOM networking (DIMSE).

``listen`` runs :class:`monai_tumor.pacs.listener.Listener` until SIGINT/SIGTERM;
``send`` C-STOREs files (:func:`monai_tumor.pacs.dimse.send_files`); ``echo`` C-ECHOes a
node (:func:`monai_tumor.pacs.dimse.echo`). Exit code 40 (``PacsError``) when the peer
cannot be reached or refuses.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from monai_tumor.cli._common import (
    LogFileOption,
    VerboseFlag,
    command_logging,
    handle_errors,
    stdout_console,
)
from monai_tumor.cli._pacs import dimse_options, retry_policy, tls_config
from monai_tumor.errors import ConfigError
from monai_tumor.logs import RUN_LOG_NAME
from monai_tumor.pacs.config import parse_node

__all__ = ["echo", "listen", "register", "send"]

_TLS_CERT = typer.Option("--tls-cert", help="Our PEM certificate (DICOM TLS).")
_TLS_KEY = typer.Option("--tls-key", help="Its private key.")
_CA = typer.Option("--ca-bundle", help="PEM CA bundle: peers must present a certificate it signed.")


def listen(
    *,
    aet: Annotated[str, typer.Option("--aet", help="Our AE title.")] = "MONAITUMOR",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 11112,
    bundle: Annotated[Path, typer.Option("--bundle", help="MONAI bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")],
    forward: Annotated[
        str | None, typer.Option("--forward", help="Send each SEG to AET@HOST:PORT (C-STORE).")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="Calling AE title allowed to send (repeatable)."),
    ] = None,
    idle: Annotated[
        float, typer.Option("--idle", min=0, help="Seconds without an instance = study complete.")
    ] = 30.0,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "0.0.0.0",
    tls_cert: Annotated[Path | None, _TLS_CERT] = None,
    tls_key: Annotated[Path | None, _TLS_KEY] = None,
    ca_bundle: Annotated[Path | None, _CA] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries of a send.")] = 5,
    backoff: Annotated[
        float, typer.Option("--backoff", min=0, help="Seconds before the first retry.")
    ] = 2.0,
    resend: Annotated[
        float, typer.Option("--resend", min=1, help="Seconds between tries of unsent SEGs.")
    ] = 60.0,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """Receive studies by C-STORE, segment each once complete, forward the SEG."""
    from monai_tumor.pacs.listener import Listener, ListenerOptions
    from monai_tumor.pipeline.batch import BatchOptions

    with (
        handle_errors(),
        command_logging(verbose=verbose, log_file=log_file, default_log_file=out / RUN_LOG_NAME),
    ):
        tls = tls_config(tls_cert, tls_key, ca_bundle)
        if tls is not None and tls.certificate is None:
            raise ConfigError("a TLS listener needs --tls-cert and --tls-key")
        retry = retry_policy(retries, backoff)
        listener = Listener(
            out,
            bundle=bundle,
            options=ListenerOptions(
                ae_title=aet,
                port=port,
                host=host,
                allow=tuple(allow or ()),
                idle_seconds=idle,
                forward=parse_node(forward) if forward else None,
                tls=tls,
                resend_seconds=resend,
                dimse=dimse_options(aet, tls=None, timeout=120.0, retry=retry),
            ),
            batch_options=BatchOptions(device=device, progress=False),
        )

        def stop(_signum: int, _frame: FrameType | None) -> None:
            listener.stop_soon()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        listener.start()
        stdout_console().print(
            f"listening as {aet} on {host}:{listener.port}; outputs in {out}",
            highlight=False,
            markup=False,
        )
        listener.wait()


def send(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (recursive).")],
    *,
    to: Annotated[str, typer.Option("--to", help="Destination AET@HOST:PORT.")],
    aet: Annotated[str, typer.Option("--aet", help="Our AE title.")] = "MONAITUMOR",
    tls_cert: Annotated[Path | None, _TLS_CERT] = None,
    tls_key: Annotated[Path | None, _TLS_KEY] = None,
    ca_bundle: Annotated[Path | None, _CA] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries.")] = 5,
    backoff: Annotated[float, typer.Option("--backoff", min=0, help="First wait (s).")] = 2.0,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """C-STORE a SEG (or any DICOM files / folders) to a PACS."""
    from monai_tumor.pacs.dimse import send_files

    with handle_errors(), command_logging(verbose=verbose, log_file=log_file):
        files: list[Path] = []
        for path in paths:
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and p.name[0] != ".")
            elif path.is_file():
                files.append(path)
            else:
                raise ConfigError("no such file or folder", path=path)
        node = parse_node(to)
        sent = send_files(
            files,
            node,
            options=dimse_options(
                aet,
                tls=tls_config(tls_cert, tls_key, ca_bundle),
                timeout=120.0,
                retry=retry_policy(retries, backoff),
            ),
        )
    stdout_console().print(f"{len(sent)} instance(s) sent to {node}", highlight=False, markup=False)


def echo(
    node: Annotated[str, typer.Argument(help="AET@HOST:PORT")],
    *,
    aet: Annotated[str, typer.Option("--aet", help="Our AE title.")] = "MONAITUMOR",
    tls_cert: Annotated[Path | None, _TLS_CERT] = None,
    tls_key: Annotated[Path | None, _TLS_KEY] = None,
    ca_bundle: Annotated[Path | None, _CA] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries.")] = 0,
    verbose: VerboseFlag = False,
    log_file: LogFileOption = None,
) -> None:
    """C-ECHO a DICOM node (is it there, and does it accept our AE title?)."""
    from monai_tumor.pacs.dimse import echo as c_echo

    with handle_errors(), command_logging(verbose=verbose, log_file=log_file):
        peer = parse_node(node)
        c_echo(
            peer,
            options=dimse_options(
                aet,
                tls=tls_config(tls_cert, tls_key, ca_bundle),
                timeout=30.0,
                retry=retry_policy(retries, 1.0),
            ),
        )
    stdout_console().print(f"{peer} answered C-ECHO", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``listen``, ``send`` and ``echo`` to the app."""
    app.command("listen")(listen)
    app.command("send")(send)
    app.command("echo")(echo)
