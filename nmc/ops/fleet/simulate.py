"""The fleet simulator: N real nodes spread over a few worker processes, one broker, one CA.

`nmc dev up` runs every node in one event loop, which one core can carry for a
few hundred nodes. To see how nmc behaves with thousands, the simulator writes
the same dev fleet (one certificate, server.cfg and facts file per node), starts
the same secure broker, and spreads the nodes over P worker processes. Each
worker builds its nodes with `nmc.ops.daemon.serve.build_node` -- the code path of
`nmc serve node` -- so every simulated node has its own NATS connection, micro
service, subjects, certificate and facts; only the process is shared.

Layout: `SimSettings` and `node_slices` are pure; `write_simulation` writes
files; `Simulator` (parent) and `run_worker` (child) are the async edges.
Workers are `python -m nmc ops simulate-worker` children; their stdin is a
pipe the parent never writes to, so a parent that dies (even by SIGKILL)
closes it and the workers stop on EOF instead of outliving it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from nmc.errors import OpsError
from nmc.ops.broker.server import Broker, BrokerSettings, free_port
from nmc.ops.broker.authorization import TrustSources, secure_broker_settings
from nmc.ops.broker.jetstream import SetupError, setup_as
from nmc.ops.config.files import load_config
from nmc.ops.fleet.dev import POLICY_NAME, DevLayout, node_facts_for, write_fleet
from nmc.ops.daemon.serve import build_audit_service, build_node, build_policy_service
from nmc.services.loader import load_agents
from nmc.services.node import Node

__all__ = ["AUTHZ_MODES", "SimSettings", "SimStatus", "SimulateError", "Simulator", "WorkerReport", "default_sim_dir",
           "node_config_path", "node_overrides", "node_slices", "raise_nofile_limit", "run_worker", "status_lines",
           "worker_report_printer", "write_simulation"]

AUTHZ_MODES = ("none", "local", "service")
WORKER_COMMAND = ("ops", "simulate-worker")
log = structlog.get_logger("nmc.simulate")


class SimulateError(OpsError):
    """The simulation could not be written, started or kept running; the message is one line."""


def default_sim_dir() -> Path:
    """Where the simulator keeps its fleet: next to the dev fleet's directory, never inside it."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nmc" / "sim"


@dataclass(frozen=True)
class SimSettings:
    """What to simulate: how many nodes, over how many processes, with which authorization and audit."""

    nodes: int
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    authz: str = "local"
    audit: bool = True
    port: int = 0  # 0: a free port
    start_concurrency: int = 16  # nodes of one worker connecting at once (TLS handshakes are CPU-bound)
    start_timeout: float = 900.0
    log_level: str = "warning"  # the workers' (thousands of nodes logging at info is mostly noise)

    def __post_init__(self) -> None:
        """Refuse what cannot run: one line each, for click to show."""
        if self.nodes < 1:
            raise SimulateError(f"--nodes must be at least 1, got {self.nodes}")
        if self.processes < 1:
            raise SimulateError(f"--processes must be at least 1, got {self.processes}")
        if self.authz not in AUTHZ_MODES:
            raise SimulateError(f"--authz must be one of {', '.join(AUTHZ_MODES)}, got {self.authz!r}")
        if self.start_concurrency < 1:
            raise SimulateError(f"start concurrency must be at least 1, got {self.start_concurrency}")

    @property
    def workers(self) -> int:
        """Worker processes actually started: never more than there are nodes."""
        return min(self.processes, self.nodes)


def node_slices(nodes: int, processes: int) -> tuple[range, ...]:
    """Node numbers (1-based) per worker: contiguous, sizes differing by at most one, none empty."""
    if nodes < 1 or processes < 1:
        raise ValueError(f"nodes and processes must be at least 1, got {nodes} and {processes}")
    count = min(nodes, processes)
    size, extra = divmod(nodes, count)
    slices, first = [], 1
    for k in range(count):
        last = first + size + (1 if k < extra else 0)
        slices.append(range(first, last))
        first = last
    return tuple(slices)


def node_overrides(settings: SimSettings, layout: DevLayout) -> dict[str, str]:
    """server.cfg keys that differ from `nmc dev up`'s nodes ("" drops a key)."""
    values: dict[str, str] = {"authz.mode": settings.authz}
    if settings.authz == "local":
        # Each real node polls its own policy directory on its own machine; thousands of simulated
        # nodes polling every second on one machine would measure the polling, not the fleet.
        values |= {"authz.policydir": str(layout.policy_dir / "policies"), "authz.signers": "",
                   "authz.poll_interval": "30"}
    elif settings.authz == "none":
        values["authz.signers"] = ""
    else:
        values["authz.signers"] = POLICY_NAME
    if not settings.audit:
        values |= {"audit.enabled": "false", "audit.spool": ""}
    return values


def write_simulation(layout: DevLayout, settings: SimSettings, url: str) -> list[Path]:
    """CA, one certificate and server.cfg per node, client/policy/audit configs; the server.cfg paths."""
    return write_fleet(layout, settings.nodes, url, node_overrides=node_overrides(settings, layout))


def node_config_path(layout: DevLayout, number: int) -> Path:
    """The server.cfg of node number `number` (1-based), as write_fleet names it."""
    identity, _, _ = node_facts_for(number)
    return layout.node_dir(identity) / "server.cfg"


def raise_nofile_limit() -> int:
    """Raise the open-files soft limit to the hard limit (one socket per node); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


# --- worker side -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerReport:
    """One line a worker writes to the parent: ready (nodes up, seconds) or failed (error)."""

    event: str
    pid: int
    nodes: int = 0
    seconds: float = 0.0
    error: str = ""

    def to_line(self) -> str:
        """One JSON line."""
        return json.dumps({"event": self.event, "pid": self.pid, "nodes": self.nodes,
                           "seconds": round(self.seconds, 3), "error": self.error})

    @classmethod
    def from_line(cls, line: str) -> WorkerReport:
        """Parse what to_line wrote; SimulateError for anything else (a worker that printed garbage)."""
        try:
            data = json.loads(line)
            return cls(event=str(data["event"]), pid=int(data["pid"]), nodes=int(data.get("nodes", 0)),
                       seconds=float(data.get("seconds", 0.0)), error=str(data.get("error", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise SimulateError(f"unexpected line from a simulator worker: {line.strip()[:200]!r}") from exc


async def _start_nodes(paths: Sequence[Path], concurrency: int, nodes: list[Node], timeout: float = 60.0) -> None:
    """Build and start every node into `nodes`, at most `concurrency` connecting at once (SimulateError if any fails).

    Each node is appended as soon as it is built, so a caller that cancels this can stop
    the half-started ones too. A node whose start takes longer than `timeout` (a TLS
    handshake the broker timed out, on a machine too busy) is a failure, not a silent hang.
    """
    configs = [load_config(p, kind="server", env={}) for p in paths]
    # Every simulated node has the same plugin settings, so the agents are loaded once per worker
    # and handed to build_node; scanning entry points 2,500 times would only measure importlib.
    agents = [loaded.cls for loaded in load_agents(configs[0].get_paths("plugindir"))] if configs else []
    gate = asyncio.Semaphore(concurrency)

    async def one(config: Any) -> None:
        async with gate:
            node = await build_node(config, agents)
            nodes.append(node)
            try:
                await asyncio.wait_for(node.start(), timeout)
            except TimeoutError:
                raise SimulateError(f"{node.identity} not connected after {timeout:g} s") from None

    results = await asyncio.gather(*(one(c) for c in configs), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        exc = errors[0]
        raise SimulateError(f"{len(errors)} of {len(configs)} nodes failed to start: {str(exc) or type(exc).__name__}")


async def _stop_nodes(nodes: Sequence[Node], timeout: float = 30.0) -> None:
    """Stop every node (drain its connection); give up after `timeout` so a dead broker cannot hang the worker."""
    if not nodes:
        return
    await asyncio.wait([asyncio.ensure_future(n.stop()) for n in nodes], timeout=timeout)


async def run_worker(layout: DevLayout, numbers: range, *, concurrency: int,
                     report: Callable[[WorkerReport], None], watch_fd: int | None = 0) -> None:
    """Run nodes `numbers` until SIGINT/SIGTERM or EOF on `watch_fd` (the parent died), then stop them."""
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Handlers stay installed until the nodes are stopped: Ctrl-C reaches the parent and every worker,
    # and the parent's SIGTERM follows; a second signal must not kill a worker halfway through stopping.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if watch_fd is not None:
        def on_parent() -> None:
            try:
                data = os.read(watch_fd, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(watch_fd)
                stop.set()
        loop.add_reader(watch_fd, on_parent)
    began = time.monotonic()
    nodes: list[Node] = []
    try:
        starting = asyncio.ensure_future(
            _start_nodes([node_config_path(layout, i) for i in numbers], concurrency, nodes))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not starting.done():  # told to stop while starting: give up on the rest
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        elif starting.exception() is not None:
            exc = starting.exception()
            report(WorkerReport("failed", os.getpid(), error=str(exc) or type(exc).__name__))
            raise exc  # type: ignore[misc]
        if not stop.is_set():
            report(WorkerReport("ready", os.getpid(), nodes=len(nodes), seconds=time.monotonic() - began))
            await stop.wait()
    finally:
        await _stop_nodes(nodes)
        if watch_fd is not None:
            loop.remove_reader(watch_fd)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# --- parent side -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimStatus:
    """What a started simulation tells the user (and benchmarks): where it is and how long start-up took."""

    nodes: int
    processes: int
    worker_pids: tuple[int, ...]
    broker_pid: int | None
    broker_url: str
    client_cfg: Path
    write_seconds: float
    start_seconds: float
    authz: str
    audit: bool

    def to_dict(self) -> dict[str, Any]:
        """The `--json` ready line."""
        return {"event": "ready", "nodes": self.nodes, "processes": self.processes,
                "worker_pids": list(self.worker_pids), "broker_pid": self.broker_pid,
                "broker_url": self.broker_url, "client_cfg": str(self.client_cfg),
                "write_seconds": round(self.write_seconds, 2), "start_seconds": round(self.start_seconds, 2),
                "authz": self.authz, "audit": self.audit}


def _worker_env() -> dict[str, str]:
    """The parent's environment, with this very copy of nmc first on the path (workers run the same code)."""
    here = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here if not path else f"{here}{os.pathsep}{path}"}


@dataclass
class Simulator:
    """The parent: writes the fleet, owns the broker, the audit/policy services and the worker processes."""

    layout: DevLayout
    settings: SimSettings
    broker: Broker | None = None
    write_seconds: float = 0.0
    _workers: list[asyncio.subprocess.Process] = field(default_factory=list)

    def prepare(self) -> Broker:
        """Write certificates and configs, start the TLS broker (one user per certificate)."""
        raise_nofile_limit()  # inherited by nats-server, which holds one socket per node
        began = time.monotonic()
        port = self.settings.port or free_port()
        write_simulation(self.layout, self.settings, f"tls://127.0.0.1:{port}")
        broker_settings, _ = secure_broker_settings(
            BrokerSettings(port=port, store_dir=self.layout.broker_dir / "jetstream", server_name="nmc-sim"),
            TrustSources(ca_dir=self.layout.ca_dir))
        self.broker = Broker(broker_settings, self.layout.broker_dir)
        self.write_seconds = time.monotonic() - began
        # nats-server parses one authorization user per certificate: allow for thousands.
        self.broker.start(timeout=max(10.0, self.settings.nodes / 100))
        return self.broker

    async def run(self, announce: Callable[[SimStatus], None], stop: asyncio.Event) -> None:
        """Start services and workers, announce, serve until `stop` is set or a worker dies, then stop all."""
        assert self.broker is not None, "prepare() first"
        audit = build_audit_service(load_config(self.layout.audit_cfg, kind="server", env={})) \
            if self.settings.audit else None
        policy = build_policy_service(load_config(self.layout.policy_cfg, kind="server", env={})) \
            if self.settings.authz == "service" else None
        began = time.monotonic()
        try:
            try:
                # The operator's step: only its certificate may create the audit stream and the registry bucket.
                await setup_as(load_config(self.layout.operator_cfg, kind="client", env={}))
            except SetupError as exc:
                raise SimulateError(f"JetStream setup: {exc.reason}") from exc
            if audit is not None:
                await audit.start()  # before the nodes, so it writes their first records as they come
            if policy is not None:
                await policy.start()
            await self._start_workers(stop)
            if stop.is_set():
                return
            announce(SimStatus(nodes=self.settings.nodes, processes=len(self._workers),
                               worker_pids=tuple(w.pid for w in self._workers), broker_pid=self.broker.pid,
                               broker_url=self.broker.url, client_cfg=self.layout.client_cfg,
                               write_seconds=self.write_seconds, start_seconds=time.monotonic() - began,
                               authz=self.settings.authz, audit=self.settings.audit))
            died = [asyncio.ensure_future(w.wait()) for w in self._workers]
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({stopper, *died}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for task in died:
                task.cancel()
            if stopper not in done:
                dead = next(w for w in self._workers if w.returncode is not None)
                raise SimulateError(f"simulator worker {dead.pid} exited with code {dead.returncode}")
        finally:
            await self._stop_workers()
            if policy is not None:
                await policy.stop()
            if audit is not None:
                await audit.stop()

    async def _start_workers(self, stop: asyncio.Event) -> None:
        """Spawn one worker per slice and wait for every ready line (or the first failure, or `stop`)."""
        env = _worker_env()
        for numbers in node_slices(self.settings.nodes, self.settings.processes):
            self._workers.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nmc", *WORKER_COMMAND, "--dir", str(self.layout.root),
                "--first", str(numbers.start), "--last", str(numbers.stop - 1),
                "--concurrency", str(self.settings.start_concurrency), "--log-level", self.settings.log_level,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env))
        readies = [asyncio.ensure_future(self._ready(w)) for w in self._workers]
        stopper = asyncio.ensure_future(stop.wait())
        pending: set[asyncio.Future[Any]] = set(readies)
        deadline = time.monotonic() + self.settings.start_timeout
        try:
            while pending:
                done, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED,
                                                   timeout=max(0.0, deadline - time.monotonic()))
                if stopper in done:
                    return
                pending.discard(stopper)
                if not done:
                    raise SimulateError(f"simulated nodes not up after {self.settings.start_timeout:g} s")
                for task in done:
                    task.result()  # a failed worker raises SimulateError here
        finally:
            stopper.cancel()
            for task in readies:
                task.cancel()

    @staticmethod
    async def _ready(worker: asyncio.subprocess.Process) -> WorkerReport:
        assert worker.stdout is not None
        line = await worker.stdout.readline()
        if not line:
            code = await worker.wait()
            raise SimulateError(f"simulator worker {worker.pid} exited with code {code} before its nodes were up")
        report = WorkerReport.from_line(line.decode("utf-8", "replace"))
        if report.event != "ready":
            raise SimulateError(f"simulator worker {worker.pid}: {report.error or report.event}")
        log.info("simulator_worker_ready", pid=report.pid, nodes=report.nodes, seconds=report.seconds)
        return report

    async def _stop_workers(self, timeout: float = 60.0) -> None:
        """SIGTERM every worker, wait for them; SIGKILL any still running after `timeout`."""
        for w in self._workers:
            if w.returncode is None:
                w.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(w.wait()) for w in self._workers]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
        for w in self._workers:
            if w.returncode is None:
                log.warning("simulator_worker_killed", pid=w.pid)
                w.kill()
                await w.wait()
        for w in self._workers:
            if w.stdin is not None:
                w.stdin.close()

    def stop_broker(self) -> None:
        """Stop the broker (after the workers and services)."""
        if self.broker is not None:
            self.broker.stop()


def worker_report_printer(stream: Any = None) -> Callable[[WorkerReport], None]:
    """How a worker tells the parent: one flushed JSON line on stdout."""
    out = stream or sys.stdout

    def report(r: WorkerReport) -> None:
        out.write(r.to_line() + "\n")
        out.flush()
    return report


def status_lines(status: SimStatus) -> list[str]:
    """The human banner once the simulation is up."""
    cfg = status.client_cfg
    lines = [(f"nmc simulated fleet up: {status.nodes} nodes in {status.processes} processes "
              f"(pids {', '.join(map(str, status.worker_pids))}), started in {status.start_seconds:.1f} s "
              f"(certificates and configs written in {status.write_seconds:.1f} s)"),
             (f"broker: {status.broker_url} (pid {status.broker_pid}); authz {status.authz}, "
              f"audit {'on' if status.audit else 'off'}"),
             f"client config: {cfg}", "Try in another shell:"]
    for cmd in ("ping", "rpc rpcutil ping -F role=web", "facts role"):
        lines.append(f"  nmc -c {cfg} {cmd}")
    lines.append("Press Ctrl-C to stop the simulation.")
    return lines
