"""`nmc ops simulate`: thousands of real nodes on one machine, spread over a few processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click

from nmc.errors import NmcError
from nmc.ops.fleet.dev import DevLayout
from nmc.transport.logs import configure_logging
from nmc.ops.fleet.simulate import (
    AUTHZ_MODES,
    SimSettings,
    SimStatus,
    SimulateError,
    Simulator,
    default_sim_dir,
    run_worker,
    status_lines,
    worker_report_printer,
)

__all__ = ["simulate", "simulate_worker"]


@click.command()
@click.option("--nodes", "-n", type=int, required=True, help="How many nodes to simulate (1,000-5,000 fit on a small machine).")
@click.option("--processes", "-p", type=int, default=None,
              help="Worker processes the nodes are spread over (default: the number of CPUs).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State directory (default: ~/.local/state/nmc/sim); rewritten on every start.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Broker port on 127.0.0.1 (0: a free one).")
@click.option("--authz", type=click.Choice(AUTHZ_MODES), default="local", show_default=True,
              help="Node authorization: local policy files on every node, the nmc-policy service, or none.")
@click.option("--audit/--no-audit", default=True, show_default=True,
              help="Audit every request to JetStream (and the nmc-audit service's audit.jsonl).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line once every node is up.")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write that JSON line to this file once every node is up (for scripts).")
@click.option("--verbose", "-v", is_flag=True, help="Show the nodes' info logs (noisy with many nodes).")
def simulate(nodes: int, processes: int | None, directory: Path | None, port: int, authz: str, audit: bool,
             as_json: bool, ready_file: Path | None, verbose: bool) -> None:
    """Run N real nodes (own connection, certificate, facts) in a few processes, for scale tests.

    Each node is built by the same code as `nmc serve node`; the simulator also
    starts its own TLS broker, a throwaway CA and the audit (and, with --authz
    service, policy) service. Ctrl-C or SIGTERM stops every worker process.

    \b
    Example:
      nmc ops simulate --nodes 1000 --processes 2
      nmc -c ~/.local/state/nmc/sim/client.cfg ping     # in another shell
    """
    try:
        # `--processes 0` is a mistake to report, not "the default": only an absent option means every CPU.
        cpus = os.cpu_count() or 1
        settings = SimSettings(nodes=nodes, processes=cpus if processes is None else processes, authz=authz, audit=audit,
                               port=port, log_level="info" if verbose else "warning")
    except SimulateError as exc:
        raise click.UsageError(str(exc)) from exc
    layout = DevLayout(directory or default_sim_dir())
    configure_logging(json=False, level="info" if verbose else "warning")
    sim = Simulator(layout, settings)
    try:
        sim.prepare()
    except (NmcError, OSError) as exc:
        sim.stop_broker()
        raise click.ClickException(str(exc)) from exc

    def announce(status: SimStatus) -> None:
        line = json.dumps(status.to_dict())
        if ready_file is not None:
            tmp = ready_file.with_name(ready_file.name + ".tmp")
            tmp.write_text(line + "\n", encoding="utf-8")
            tmp.replace(ready_file)  # whole or absent: a reader never sees half a line
        click.echo(line if as_json else "\n".join(status_lines(status)))

    try:
        asyncio.run(_run(sim, announce))
    except (NmcError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        sim.stop_broker()
        click.echo("simulation stopped", err=True)


async def _run(sim: Simulator, announce) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Installed for the whole run, stopping included: a second Ctrl-C must not cut the clean stop short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sim.run(announce, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@click.command("simulate-worker", hidden=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--first", type=click.IntRange(1), required=True, help="First node number of this worker.")
@click.option("--last", type=click.IntRange(1), required=True, help="Last node number of this worker.")
@click.option("--concurrency", type=click.IntRange(1), default=16, show_default=True)
@click.option("--log-level", default="warning", show_default=True)
def simulate_worker(directory: Path, first: int, last: int, concurrency: int, log_level: str) -> None:
    """One worker of `nmc ops simulate` (started by it; stops when its stdin closes).

    \b
    Example:
      nmc ops simulate-worker --dir ~/.local/state/nmc/sim --first 1 --last 500 < some-pipe
    """
    if last < first:
        raise click.UsageError(f"--last ({last}) is before --first ({first})")
    configure_logging(json=False, level=log_level)
    try:
        asyncio.run(run_worker(DevLayout(directory), range(first, last + 1), concurrency=concurrency,
                               report=worker_report_printer()))
    except SimulateError as exc:
        raise click.ClickException(str(exc)) from exc
