"""`nmc ops ca`: create the fleet CA, issue certificates, show them, revoke them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from nmc.ops import pki
from nmc.security import KEY_TYPES, KeyType
from nmc.security.crl import REASONS, ca_fingerprint

__all__ = ["ca"]

F = TypeVar("F", bound=Callable[..., Any])

_DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default="nmc-ca",
    show_default=True,
    envvar="NMC_CA_DIR",
    show_envvar=True,
    help="CA directory (ca.pem, ca.key, certs/, private/).",
)
_KEY_TYPE_OPTION = click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    default="ed25519",
    show_default=True,
    help="Key algorithm (rsa is 2048-bit, signed PKCS#1 v1.5 + SHA-256).",
)


def _json_option(shape: str) -> Callable[[F], F]:
    """--json on a command that writes files: what it wrote, as one JSON object (`shape` says which keys)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print one JSON object {shape} instead of text.")


@click.group()
def ca() -> None:
    """Manage the fleet certificate authority and the certificates it issues.

    \b
    Example:
      nmc ops ca init --dir ./nmc-ca
      nmc ops ca issue alice --role user --role ops
      nmc ops ca show alice
      nmc ops ca revoke alice --reason keyCompromise
    """


@ca.command()
@_DIR_OPTION
@_KEY_TYPE_OPTION
@click.option("--common-name", default="nmc fleet CA", show_default=True, help="The CA's subject common name.")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True, help="Validity in days.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every certificate it issued stops working).")
@_json_option('{"name", "key_type", "directory", "certificate", "key"}')
def init(directory: Path, key_type: str, common_name: str, days: int, force: bool, as_json: bool) -> None:
    """Create a new CA: writes DIR/ca.pem and DIR/ca.key (mode 0600).

    \b
    Example:
      nmc ops ca init --dir /etc/nmc/ca --key-type ed25519
      nmc ops ca init --dir ./nmc-ca --json | jq -r .certificate
    """
    try:
        paths = pki.init_ca(
            directory, common_name=common_name, key_type=cast(KeyType, key_type), days=days, force=force
        )
    except pki.PKIExistsError as exc:
        raise click.ClickException(f"{exc.reason} (use --force to replace it)") from None
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
    if as_json:
        click.echo(json.dumps({"name": common_name, "key_type": key_type, "directory": str(paths.directory),
                               "certificate": str(paths.certificate), "key": str(paths.key)}, indent=2))
        return
    click.echo(f"Created CA {common_name!r} ({key_type}) in {paths.directory}")
    click.echo(f"  certificate: {paths.certificate}  (give this to every node and client)")
    click.echo(f"  private key: {paths.key}  (keep it secret, off the fleet)")


@ca.command()
@click.argument("name")
@_DIR_OPTION
@_KEY_TYPE_OPTION
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True, help="Validity in days.")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help="Add a role (subject OU); repeatable.")
@click.option("--server", is_flag=True, help="Also valid for TLS on 127.0.0.1/localhost (a broker's certificate).")
@click.option("--force", is_flag=True, help="Replace an existing certificate of that name.")
@_json_option("like `show --json`, plus \"key\" (the private key file) and \"replaced_serial\" (null unless --force "
              "replaced one)")
def issue(
    name: str, directory: Path, key_type: str, days: int, roles: tuple[str, ...], server: bool, force: bool,
    as_json: bool,
) -> None:
    """Issue a certificate for NAME: writes DIR/certs/NAME.pem and DIR/private/NAME.key.

    NAME is the identity requests are signed as (caller cert=NAME). The
    broker's permissions follow the roles node, user, policy and audit;
    other roles are for the policy service. --force replaces a certificate
    (rotation): the old one moves to DIR/old/ and stays valid until revoked.

    \b
    Example:
      nmc ops ca issue alice --role user --role web-admins
      nmc ops ca issue web1.example.com --role node --days 730
      nmc ops ca issue policy1 --role policy
      nmc ops ca issue broker --role broker --server
      nmc ops ca issue bob --role user --json | jq -r .serial
    """
    previous = None
    if force:
        try:
            previous = pki.describe(directory, name)
        except pki.PKIError:
            previous = None
    try:
        paths = pki.issue(
            directory, name, key_type=cast(KeyType, key_type), days=days, roles=roles, server=server, force=force
        )
        info = pki.describe(directory, name)
    except pki.PKIExistsError as exc:
        raise click.ClickException(f"{exc.reason} (use --force to replace it)") from None
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
    if as_json:
        click.echo(json.dumps({**info.to_dict(), "key": str(paths.key),
                               "replaced_serial": None if previous is None else previous.serial}, indent=2))
        return
    role_text = f", roles {', '.join(info.roles)}" if info.roles else ""
    click.echo(f"Issued certificate for {name!r} ({key_type}{role_text}), valid until {info.not_after.isoformat()}")
    click.echo(f"  certificate: {paths.certificate}")
    click.echo(f"  private key: {paths.key}")
    if previous is not None:
        click.echo(f"  replaced serial {previous.serial} (kept in {directory / 'old'}; still valid until you run "
                   f"`nmc ops ca revoke {name} --serial {previous.serial}`)")


@ca.command()
@click.argument("name", required=False)
@_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show(name: str | None, directory: Path, as_json: bool) -> None:
    """Show the CA certificate, or the certificate issued to NAME.

    \b
    Example:
      nmc ops ca show
      nmc ops ca show alice --json
    """
    try:
        info = pki.describe(directory, name)
        issued = pki.issued_names(directory) if name is None else None
        revocation = _revocation(directory, info.serial) if name is not None else None
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
    if as_json:
        document = info.to_dict()
        if revocation is not None:
            document["status"] = "revoked"
            document["revoked"] = revocation
        if issued is not None:
            document["issued"] = issued
        click.echo(json.dumps(document, indent=2))
        return
    rows = [
        ("name", info.name),
        ("subject", info.subject),
        ("issuer", info.issuer),
        ("roles", ", ".join(info.roles) or "-"),
        ("key type", info.key_type),
        ("valid from", info.not_before.isoformat()),
        ("valid until", info.not_after.isoformat()),
        ("status", f"revoked: {revocation}" if revocation else info.status()),
        ("serial", info.serial),
        ("fingerprint", f"SHA256 {info.fingerprint}"),
        ("alt names", ", ".join(info.alt_names) or "-"),
        ("file", str(info.path)),
    ]
    if issued is not None:
        rows.append(("issued", ", ".join(issued) or "-"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label + ':':<{width + 1}} {value}")


def _revocation(directory: Path, serial: str) -> str | None:
    """How the CRL describes the certificate with this (hex) serial, or None when it is not revoked."""
    table = pki.load_revocations(directory)
    if table is None:
        return None
    _, ca_cert = pki.load_ca(directory)
    entry = table.lookup(ca_fingerprint(ca_cert), int(serial, 16))
    return None if entry is None else entry.describe()


def _serial(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.replace(":", ""), 16)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a hexadecimal serial", param_hint="--serial") from None


@ca.command()
@click.argument("name")
@_DIR_OPTION
@click.option("--serial", default=None, metavar="HEX",
              help="Revoke NAME's archived certificate with this serial (after a rotation) instead of the current one.")
@click.option("--reason", type=click.Choice(sorted(r for r in REASONS if r != "removeFromCRL"), case_sensitive=False), default=None,
              help="RFC 5280 reason recorded in the CRL.")
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Days until the CRL's next update.")
@_json_option('{"name", "serial" (hex), "reason", "already_revoked", "crl", "entries"}')
def revoke(name: str, directory: Path, serial: str | None, reason: str | None, days: int, as_json: bool) -> None:
    """Revoke NAME's certificate: adds it to DIR/crl.pem, signed by the CA.

    Nodes and services with plugin.security.crl_file pointing at a copy of
    crl.pem refuse it within seconds, without a restart. Regenerate the broker
    configuration (or SIGHUP `nmc ops broker --tls`) so the broker refuses its
    key too.

    \b
    Example:
      nmc ops ca revoke alice --reason keyCompromise
      nmc ops ca revoke web1.example.com --serial 3f2a... --reason superseded
      nmc ops ca revoke alice --json
    """
    canonical = None if reason is None else next(r for r in REASONS if r.lower() == reason.lower())
    try:
        result = pki.revoke(directory, name, serial=_serial(serial), reason=canonical, days=days)
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
    if as_json:
        click.echo(json.dumps({"name": name, "serial": f"{result.serial:x}", "reason": result.reason,
                               "already_revoked": result.already, "crl": str(result.crl),
                               "entries": result.entries}, indent=2))
        return
    state = "was already revoked" if result.already else "revoked"
    why = f" ({result.reason})" if result.reason else ""
    click.echo(f"Certificate for {name!r} (serial {result.serial:x}) {state}{why}")
    click.echo(f"  CRL: {result.crl} ({result.entries} revoked) - copy it to the nodes' plugin.security.crl_file")
    click.echo("  broker: regenerate its configuration (`nmc ops broker config`) and reload it")


@ca.command()
@_DIR_OPTION
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Days until the CRL's next update.")
@_json_option('{"crl", "entries", "next_update_days"}')
def crl(directory: Path, days: int, as_json: bool) -> None:
    """Write (or re-sign) DIR/crl.pem: the current revocations with a fresh date.

    \b
    Example:
      nmc ops ca crl --dir /etc/nmc/ca
      nmc ops ca crl --json
    """
    try:
        path, count = pki.write_crl(directory, days=days)
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
    if as_json:
        click.echo(json.dumps({"crl": str(path), "entries": count, "next_update_days": days}, indent=2))
        return
    click.echo(f"Wrote {path}: {count} revoked certificate(s), next update in {days} days")
