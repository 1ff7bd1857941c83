"""Puppet's own state files, read and written exactly as `puppet agent` does. Blocking: call via to_thread.

nmc keeps no Puppet state of its own, so what nmc reports and what
`puppet agent` does cannot disagree:

- ``<statedir>/agent_catalog_run.lock`` holds the PID of the run in progress
  (Puppet::Util::Pidlock). A PID that is gone, a zombie, or (as Puppet
  itself checks) a live process that is not Puppet means a stale lock.
- ``<statedir>/agent_disabled.lock`` is ``{"disabled_message":"..."}`` while
  Puppet is disabled (Puppet::Util::JsonLockfile: compact JSON, created
  exclusively, mode 0666 less umask, no newline); its presence alone means disabled.
- ``last_run_summary.yaml`` is what Puppet wrote at the end of its last run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmc.errors import NodeError

__all__ = ["AIO_LAYOUT", "DEBIAN_LAYOUT", "DEFAULT_COMMAND", "DEFAULT_SPLAYLIMIT", "PuppetSettings",
           "PuppetSettingsError", "PuppetState", "PuppetStateError", "clear_run_lock", "disable", "enable",
           "pid_alive", "read_state", "read_summary", "write_run_lock"]

DEFAULT_COMMAND = "puppet agent --onetime --no-daemonize --verbose"
DEFAULT_SPLAYLIMIT = 30
RUN_LOCK = "agent_catalog_run.lock"
DISABLED_LOCK = "agent_disabled.lock"
DISABLED_KEY = "disabled_message"  # Puppet::Agent::Disabler::DISABLED_MESSAGE_JSON_KEY

# (statedir, summary, daemon pidfile) of Puppet's all-in-one packages and of Debian's `puppet` package
# (`puppet config print statedir lastrunfile pidfile --section agent` on each).
AIO_LAYOUT = ("/opt/puppetlabs/puppet/cache/state", "/opt/puppetlabs/puppet/public/last_run_summary.yaml",
              "/var/run/puppetlabs/agent.pid")
DEBIAN_LAYOUT = ("/var/cache/puppet/state", "/var/cache/puppet/public/last_run_summary.yaml",
                 "/run/puppet/agent.pid")


class PuppetSettingsError(NodeError, ValueError):
    """A `plugin.puppet.*` value that cannot be used; names the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason, where=f"plugin.puppet.{key}")
        self.key = key


class PuppetStateError(NodeError):
    """A Puppet state file that cannot be read or written; `path` is the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason, where=path)
        self.path = path


def _layout() -> tuple[str, str, str]:
    """AIO paths when the AIO package is there, Debian's when only Debian's puppet is, else AIO's."""
    if Path("/opt/puppetlabs/puppet").is_dir():
        return AIO_LAYOUT
    if Path("/var/cache/puppet").is_dir() or Path("/usr/lib/ruby/vendor_ruby/puppet").is_dir():
        return DEBIAN_LAYOUT
    return AIO_LAYOUT


@dataclass(frozen=True)
class PuppetSettings:
    """How this node runs Puppet and where Puppet keeps its state (`plugin.puppet.*`)."""

    command: tuple[str, ...]
    statedir: Path
    summary: Path
    pidfile: Path
    splaylimit: int = DEFAULT_SPLAYLIMIT

    @property
    def run_lock(self) -> Path:
        """Puppet's agent_catalog_run.lock."""
        return self.statedir / RUN_LOCK

    @property
    def disabled_lock(self) -> Path:
        """Puppet's agent_disabled.lock."""
        return self.statedir / DISABLED_LOCK

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> PuppetSettings:
        """Parse `plugin.puppet.*` (keys without the prefix); empty or missing values mean the default."""
        statedir, summary, pidfile = _layout()
        text = (values.get("command") or "").strip() or DEFAULT_COMMAND
        try:
            command = tuple(shlex.split(text))
        except ValueError as exc:
            raise PuppetSettingsError("command", f"{exc} in {text!r}") from None
        if not command:
            raise PuppetSettingsError("command", "is empty")
        raw_limit = (values.get("splaylimit") or "").strip() or str(DEFAULT_SPLAYLIMIT)
        try:
            splaylimit = int(raw_limit)
        except ValueError:
            raise PuppetSettingsError("splaylimit", f"expected whole seconds, got {raw_limit!r}") from None
        if splaylimit < 0:
            raise PuppetSettingsError("splaylimit", f"must be 0 or more, got {splaylimit}")
        return cls(command=command,
                   statedir=Path((values.get("statedir") or "").strip() or statedir).expanduser(),
                   summary=Path((values.get("summary") or "").strip() or summary).expanduser(),
                   pidfile=Path((values.get("pidfile") or "").strip() or pidfile).expanduser(),
                   splaylimit=splaylimit)


@dataclass(frozen=True)
class PuppetState:
    """One look at Puppet's state files."""

    run_pid: int | None  # PID of the run in progress; None when idle (no lock or a stale one)
    disabled: bool
    disable_message: str
    daemon_pid: int | None  # PID of a running `puppet agent` daemon
    summary: Mapping[str, Any] | None  # last_run_summary.yaml, None when Puppet never ran
    summary_error: str = ""  # why the summary could not be read, when it exists but is broken

    @property
    def applying(self) -> bool:
        """True while a catalog run is in progress."""
        return self.run_pid is not None

    @property
    def lastrun(self) -> int:
        """Epoch seconds of the last completed run (summary time.last_run); 0 when never."""
        value = ((self.summary or {}).get("time") or {}).get("last_run")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PuppetStateError(path, exc.strerror or str(exc)) from None


def _is_puppet(pid: int) -> bool:
    """Puppet's own stale-lock test: a `puppet` process, or ruby running puppet (True when /proc cannot say)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True
    return b"puppet" in args


def pid_alive(pid: int) -> bool:
    """True when `pid` is a running (not zombie) process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2:].startswith(("Z", "X")):
            return False
    return True


def _pid_in(path: Path) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def run_lock_pid(settings: PuppetSettings, own_pid: int | None = None) -> int | None:
    """The PID of the run in progress, or None when there is no lock or only a stale one.

    `own_pid` is the run nmc started itself: it counts whatever the command is
    called; any other PID must be a Puppet process, as Puppet itself checks.
    """
    pid = _pid_in(settings.run_lock)
    if pid is None or not pid_alive(pid):
        return None
    if pid != own_pid and not _is_puppet(pid):
        return None
    return pid


def read_summary(path: Path) -> Mapping[str, Any] | None:
    """last_run_summary.yaml as a mapping; None when it does not exist; PuppetStateError when it is broken."""
    text = _read_text(path)
    if text is None:
        return None
    import yaml  # not at import: a node loads this agent at start-up, and PyYAML is ~0.9 MiB resident

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise PuppetStateError(path, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise PuppetStateError(path, "is not a YAML mapping")
    return data


def _disable_message(path: Path) -> tuple[bool, str]:
    text = _read_text(path)
    if text is None:
        return False, ""
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None  # Puppet warns and still counts the agent as disabled
    message = data.get(DISABLED_KEY) if isinstance(data, dict) else None
    return True, message if isinstance(message, str) else ""


def read_state(settings: PuppetSettings, own_pid: int | None = None) -> PuppetState:
    """Lock files, daemon pidfile and summary in one go."""
    disabled, message = _disable_message(settings.disabled_lock)
    daemon = _pid_in(settings.pidfile)
    summary: Mapping[str, Any] | None = None
    error = ""
    try:
        summary = read_summary(settings.summary)
    except PuppetStateError as exc:
        error = str(exc)
    return PuppetState(run_pid=run_lock_pid(settings, own_pid), disabled=disabled, disable_message=message,
                       daemon_pid=daemon if daemon is not None and pid_alive(daemon) else None,
                       summary=summary, summary_error=error)


def write_run_lock(settings: PuppetSettings, pid: int) -> None:
    """Record `pid` as the run in progress (atomically: a reader never sees an empty lock)."""
    try:
        settings.statedir.mkdir(parents=True, exist_ok=True)
        tmp = settings.statedir / f".{RUN_LOCK}.{pid}"
        tmp.write_text(str(pid), encoding="ascii")
        os.replace(tmp, settings.run_lock)
    except OSError as exc:
        raise PuppetStateError(settings.run_lock, exc.strerror or str(exc)) from None


def clear_run_lock(settings: PuppetSettings, pid: int) -> bool:
    """Remove the run lock if it still names `pid` (Puppet may have removed it, or another run taken it)."""
    if _pid_in(settings.run_lock) != pid:
        return False
    with contextlib.suppress(FileNotFoundError):
        settings.run_lock.unlink()
    return True


def disable(settings: PuppetSettings, message: str) -> bool:
    """Write agent_disabled.lock as `puppet agent --disable MESSAGE` does; False when already disabled."""
    body = json.dumps({DISABLED_KEY: message}, separators=(",", ":"), ensure_ascii=False)
    try:
        settings.statedir.mkdir(parents=True, exist_ok=True)
        fd = os.open(settings.disabled_lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # Ruby File.open default, less umask
    except FileExistsError:
        return False
    except OSError as exc:
        raise PuppetStateError(settings.disabled_lock, exc.strerror or str(exc)) from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(body)
    return True


def enable(settings: PuppetSettings) -> bool:
    """Remove agent_disabled.lock as `puppet agent --enable` does; False when it was not there."""
    try:
        settings.disabled_lock.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise PuppetStateError(settings.disabled_lock, exc.strerror or str(exc)) from None
    return True
