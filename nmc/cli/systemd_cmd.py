"""`nmc ops systemd`: write unit files for the nmc daemons and an example /etc/nmc tree.

The texts come from nmc.ops.fleet.systemd (pure); this module only picks the
installed `nmc`, checks where the files go and writes them. It never writes
to /etc or /lib/systemd unless told to: --out, --etc-tree or --print is
required, and existing files are replaced only with --force.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path, PurePosixPath

import click

from nmc.ops.fleet.systemd import (
    SystemdOptions,
    etc_tree,
    home_directory_warning,
    installed_nmc,
    render_units,
)

__all__ = ["systemd"]


def _targets(out: Path | None, tree: Path | None, options: SystemdOptions) -> list[tuple[str, Path, str]]:
    """(kind, path, text) of every file to write."""
    files: list[tuple[str, Path, str]] = []
    if out is not None:
        files += [("unit", out / name, text) for name, text in render_units(options).items()]
    if tree is not None:
        files += [("etc", tree / rel, text) for rel, text in etc_tree(options).items()]
    return files


def _write(files: list[tuple[str, Path, str]], force: bool) -> None:
    """Write every file, or none when one exists and --force is not given."""
    existing = [path for _, path, _ in files if path.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise click.ClickException(f"{existing[0]} exists{more}; use --force to replace")
    try:
        for _, path, text in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {exc.filename}: {exc.strerror}") from None


@click.command("systemd")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write nmc-node.service, nmc-policy.service, nmc-audit.service and nmc-console.service into "
                   "this directory.")
@click.option("--etc-tree", "tree", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Also write an example /etc/nmc tree (configs, plugin.d, policies, ssl/README) into DIR.")
@click.option("--print", "to_stdout", is_flag=True, help="Print the files instead of writing them.")
@click.option("--etc", default="/etc/nmc", show_default=True,
              help="Where the configs live on the target machine (the paths in units and configs).")
@click.option("--user", default="nmc", show_default=True,
              help="System user of the policy and audit services and the console (the node runs as root).")
@click.option("--identity", default=None, help="The node's identity in the example server.cfg [default: this "
                                               "host's FQDN].")
@click.option("--servers", default="tls://nats.example.com:4222", show_default=True,
              help="Broker URLs for the example plugin.d/nats.cfg.")
@click.option("--exec", "exec_path", default=None, metavar="PATH",
              help="The nmc command the units run [default: the nmc installed with this Python].")
@click.option("--force", is_flag=True, help="Replace files that exist.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the files written.")
def systemd(out: Path | None, tree: Path | None, to_stdout: bool, etc: str, user: str, identity: str | None,
            servers: str, exec_path: str | None, force: bool, as_json: bool) -> None:
    """Write systemd units for `nmc serve node|policy|audit|console`, and an example /etc/nmc tree.

    The node unit runs as root without a sandbox (its agents install packages
    and restart services); the policy, audit and console units run as --user with
    NoNewPrivileges, ProtectSystem=strict and friends. ExecStart is the nmc
    installed with this Python. Nothing is written to /etc unless you say so.

    \b
    Example:
      nmc ops systemd --out units --etc-tree etc-nmc --identity web1.example.com
      sudo cp units/*.service /etc/systemd/system/ && sudo systemctl daemon-reload
      sudo systemctl enable --now nmc-node
      nmc ops systemd --print | less
    """
    if out is None and tree is None and not to_stdout:
        raise click.UsageError("say where the files go: --out DIR (units), --etc-tree DIR (example /etc/nmc) "
                               "or --print")
    command = (exec_path,) if exec_path else installed_nmc(sys.executable, shutil.which)
    try:
        options = SystemdOptions(exec_start=command, etc=PurePosixPath(etc), user=user,
                                 identity=identity or socket.getfqdn(), servers=servers)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    warning = home_directory_warning(options)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    if to_stdout:
        texts = {**render_units(options), **({f"{etc}/{k}": v for k, v in etc_tree(options).items()}
                                             if tree is not None else {})}
        if as_json:
            click.echo(json.dumps([{"name": name, "text": text} for name, text in texts.items()], indent=2))
        else:
            click.echo("\n".join(f"# ==> {name} <==\n{text}" for name, text in texts.items()), nl=False)
        return
    files = _targets(out, tree, options)
    _write(files, force)
    if as_json:
        click.echo(json.dumps([{"kind": kind, "path": str(path)} for kind, path, _ in files], indent=2))
        return
    for _, path, _ in files:
        click.echo(f"wrote {path}")
    if out is not None:
        click.echo(f"next: sudo cp {out}/nmc-*.service /etc/systemd/system/ && sudo systemctl daemon-reload")
