"""`nmc ops ca`: create the fleet CA, issue certificates, show them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import click

from nmc.ops import pki
from nmc.security import KEY_TYPES, KeyType

__all__ = ["ca"]

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


@click.group()
def ca() -> None:
    """Manage the fleet certificate authority and the certificates it issues.

    \b
    Example:
      nmc ops ca init --dir ./nmc-ca
      nmc ops ca issue alice --role ops
      nmc ops ca show alice
    """


@ca.command()
@_DIR_OPTION
@_KEY_TYPE_OPTION
@click.option("--common-name", default="nmc fleet CA", show_default=True, help="The CA's subject common name.")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True, help="Validity in days.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every certificate it issued stops working).")
def init(directory: Path, key_type: str, common_name: str, days: int, force: bool) -> None:
    """Create a new CA: writes DIR/ca.pem and DIR/ca.key (mode 0600).

    \b
    Example:
      nmc ops ca init --dir /etc/nmc/ca --key-type ed25519
    """
    try:
        paths = pki.init_ca(
            directory, common_name=common_name, key_type=cast(KeyType, key_type), days=days, force=force
        )
    except pki.PKIExistsError as exc:
        raise click.ClickException(f"{exc.reason} (use --force to replace it)") from None
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
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
def issue(
    name: str, directory: Path, key_type: str, days: int, roles: tuple[str, ...], server: bool, force: bool
) -> None:
    """Issue a certificate for NAME: writes DIR/certs/NAME.pem and DIR/private/NAME.key.

    NAME is the identity requests are signed as (caller cert=NAME).

    \b
    Example:
      nmc ops ca issue alice --role ops --role web-admins
      nmc ops ca issue web1.example.com --days 730
      nmc ops ca issue broker --server
    """
    try:
        paths = pki.issue(
            directory, name, key_type=cast(KeyType, key_type), days=days, roles=roles, server=server, force=force
        )
        info = pki.describe(directory, name)
    except pki.PKIExistsError as exc:
        raise click.ClickException(f"{exc.reason} (use --force to replace it)") from None
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
    role_text = f", roles {', '.join(info.roles)}" if info.roles else ""
    click.echo(f"Issued certificate for {name!r} ({key_type}{role_text}), valid until {info.not_after.isoformat()}")
    click.echo(f"  certificate: {paths.certificate}")
    click.echo(f"  private key: {paths.key}")


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
    except pki.PKIError as exc:
        raise click.ClickException(exc.reason) from None
    if as_json:
        document = info.to_dict()
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
        ("status", info.status()),
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
