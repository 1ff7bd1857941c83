"""A CA directory on disk: create the CA, issue certificates, describe them.

Layout::

    <dir>/ca.pem               CA certificate (give it to every node and client)
    <dir>/ca.key               CA private key, mode 0600 (keep it off the fleet)
    <dir>/certs/<name>.pem     issued certificates
    <dir>/private/<name>.key   their private keys, mode 0600 (directory 0700)
    <dir>/old/<name>.<serial>.pem  certificates replaced by `issue --force` or revoked
    <dir>/crl.pem              the certificate revocation list, signed by the CA

The cryptography lives in nmc.security; this module only reads and writes files.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from nmc.errors import OpsError
from nmc.security import (
    KEY_TYPES,
    KeyType,
    SecurityError,
    certificate_fingerprint,
    certificate_name,
    certificate_pem,
    certificate_roles,
    create_ca,
    issue_certificate,
    key_type_of,
    load_certificate_pem,
    load_private_key_pem,
    private_key_pem,
)
from nmc.security.crl import Revocation, RevocationList, build_crl, crl_pem, crl_revocations, load_crls_pem
from nmc.security.keys import PrivateKey

__all__ = [
    "CAPaths",
    "CertificateInfo",
    "IssuedPaths",
    "PKIError",
    "PKIExistsError",
    "Revoked",
    "ca_paths",
    "ca_problem",
    "crl_path",
    "describe",
    "describe_certificate",
    "init_ca",
    "issue",
    "issued_certificates",
    "issued_names",
    "issued_paths",
    "issued_problem",
    "load_ca",
    "load_revocations",
    "revoke",
    "revoked",
    "validate_name",
    "write_crl",
]

_NAME = re.compile(r"[A-Za-z0-9@._-]{1,64}")
_ROLE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PKIError(OpsError):
    """A CA directory operation failed; ``reason`` says why in one line, ``path`` is the file involved."""

    def __init__(self, reason: str, *, path: Path | None = None) -> None:
        super().__init__(reason)
        self.path = path


class PKIExistsError(PKIError):
    """The file to write already exists and overwriting was not asked for."""


@dataclass(frozen=True, slots=True)
class Revoked:
    """What `revoke` did: the certificate it revoked, where the CRL is and how many entries it has."""

    name: str
    serial: int
    reason: str | None
    crl: Path
    entries: int
    already: bool  # the serial was on the CRL before


@dataclass(frozen=True, slots=True)
class CAPaths:
    """Where a CA directory keeps the CA certificate and key."""

    directory: Path
    certificate: Path
    key: Path


@dataclass(frozen=True, slots=True)
class IssuedPaths:
    """Where an issued certificate and its key were written."""

    name: str
    certificate: Path
    key: Path


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What `nmc ops ca show` prints about one certificate."""

    name: str
    subject: str
    issuer: str
    roles: tuple[str, ...]
    key_type: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    is_ca: bool
    alt_names: tuple[str, ...]
    path: Path | None = None

    def status(self, now: dt.datetime | None = None) -> str:
        """``valid``, ``expired`` or ``not yet valid`` at ``now`` (default: the current time)."""
        moment = now or dt.datetime.now(dt.timezone.utc)
        if moment < self.not_before:
            return "not yet valid"
        if moment > self.not_after:
            return "expired"
        return "valid"

    def to_dict(self, now: dt.datetime | None = None) -> dict[str, object]:
        """A JSON-ready dict (times as ISO 8601 strings, plus ``status``)."""
        return {
            "name": self.name,
            "subject": self.subject,
            "issuer": self.issuer,
            "roles": list(self.roles),
            "key_type": self.key_type,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "status": self.status(now),
            "fingerprint_sha256": self.fingerprint,
            "is_ca": self.is_ca,
            "alt_names": list(self.alt_names),
            "path": None if self.path is None else str(self.path),
        }


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid certificate name, else raise PKIError."""
    if not _NAME.fullmatch(name) or name[0] in ".-":
        raise PKIError(
            f"invalid certificate name {name!r}: use 1-64 letters, digits and . - _ @"
            " (no slashes; not starting with . or -)"
        )
    return name


def ca_paths(directory: str | os.PathLike[str]) -> CAPaths:
    """The CA file paths of a CA directory (whether or not they exist)."""
    root = Path(directory)
    return CAPaths(directory=root, certificate=root / "ca.pem", key=root / "ca.key")


def issued_paths(directory: str | os.PathLike[str], name: str) -> IssuedPaths:
    """The certificate and key paths for ``name`` in a CA directory (name validated)."""
    root = Path(directory)
    validate_name(name)
    return IssuedPaths(name=name, certificate=root / "certs" / f"{name}.pem", key=root / "private" / f"{name}.key")


def init_ca(
    directory: str | os.PathLike[str],
    *,
    common_name: str = "nmc fleet CA",
    key_type: KeyType = "ed25519",
    days: int = 3650,
    force: bool = False,
) -> CAPaths:
    """Create a CA in ``directory``; PKIExistsError if one is there and ``force`` is false."""
    paths = ca_paths(directory)
    _check_key_type(key_type)
    if not force:
        for path in (paths.certificate, paths.key):
            if path.exists():
                raise PKIExistsError(
                    f"a CA already exists in {paths.directory} ({path.name}); refusing to overwrite it", path=path
                )
    try:
        key, cert = create_ca(common_name, key_type=key_type, days=days)
    except ValueError as exc:
        raise PKIError(str(exc)) from None
    _write(paths.key, private_key_pem(key), secret=True)
    _write(paths.certificate, certificate_pem(cert))
    # The old CA's revocation list and archived certificates mean nothing under the new CA.
    crl_path(directory).unlink(missing_ok=True)
    shutil.rmtree(Path(directory) / _OLD, ignore_errors=True)
    return paths


def load_ca(directory: str | os.PathLike[str]) -> tuple[PrivateKey, x509.Certificate]:
    """The CA key and certificate of a CA directory; PKIError if missing or unreadable."""
    paths = ca_paths(directory)
    cert_pem = _read(paths.certificate, "CA certificate", missing_hint=True)
    key_pem = _read(paths.key, "CA private key", missing_hint=True)
    try:
        cert = load_certificate_pem(cert_pem)
    except SecurityError as exc:
        raise PKIError(f"{paths.certificate}: {exc.reason}", path=paths.certificate) from None
    try:
        key = load_private_key_pem(key_pem)
    except SecurityError as exc:
        raise PKIError(f"{paths.key}: {exc.reason}", path=paths.key) from None
    return key, cert


def ca_problem(directory: str | os.PathLike[str], *, valid_for: dt.timedelta = dt.timedelta(days=1),
               now: dt.datetime | None = None) -> str | None:
    """Why the CA in ``directory`` cannot be used for ``valid_for`` from ``now``, or None when it can."""
    try:
        key, cert = load_ca(directory)
    except PKIError as exc:
        return exc.reason
    if _public(cert.public_key()) != _public(key.public_key()):
        return f"{ca_paths(directory).key} is not the key of {ca_paths(directory).certificate}"
    return _validity_problem("the CA certificate", cert, valid_for, now)


def issued_problem(directory: str | os.PathLike[str], name: str, *, roles: Iterable[str] | None = None,
                   valid_for: dt.timedelta = dt.timedelta(days=1), now: dt.datetime | None = None) -> str | None:
    """Why the certificate issued to ``name`` is unusable, or None.

    Unusable: missing or unreadable, not issued by this directory's CA (a CA made
    again since), its key not the certificate's, roles other than ``roles`` (when given), or not
    valid from ``now`` for ``valid_for``. Revocation is the CRL's business, not this.
    """
    paths = issued_paths(directory, name)
    try:
        cert = load_certificate_pem(_read(paths.certificate, f"certificate for {name!r}"))
        key = load_private_key_pem(_read(paths.key, f"key for {name!r}"))
        _, ca_cert = load_ca(directory)
    except PKIError as exc:
        return exc.reason
    except SecurityError as exc:
        return f"{name}: {exc.reason}"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return f"{paths.certificate} was not issued by the CA in {Path(directory)}"
    if _public(cert.public_key()) != _public(key.public_key()):
        return f"{paths.key} is not the key of {paths.certificate}"
    if roles is not None and set(certificate_roles(cert)) != set(roles := tuple(roles)):
        return f"{paths.certificate} has roles {', '.join(certificate_roles(cert)) or '(none)'}, not {', '.join(roles)}"
    return _validity_problem(str(paths.certificate), cert, valid_for, now)


def _public(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _validity_problem(what: str, cert: x509.Certificate, valid_for: dt.timedelta,
                      now: dt.datetime | None) -> str | None:
    moment = now or dt.datetime.now(dt.timezone.utc)
    if moment < cert.not_valid_before_utc:
        return f"{what} is not valid yet"
    if moment + valid_for > cert.not_valid_after_utc:
        return f"{what} expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    return None


def issue(
    directory: str | os.PathLike[str],
    name: str,
    *,
    key_type: KeyType = "ed25519",
    days: int = 365,
    roles: Iterable[str] = (),
    server: bool = False,
    force: bool = False,
) -> IssuedPaths:
    """Issue a certificate for ``name`` with the CA in ``directory`` and write it and its key."""
    paths = issued_paths(directory, name)
    roles = tuple(roles)
    for role in roles:
        if not _ROLE.fullmatch(role):
            raise PKIError(f"invalid role {role!r}: use 1-64 letters, digits and . - _")
    _check_key_type(key_type)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise PKIError(f"days must be a whole number of at least 1, not {days!r}")
    if not force and paths.certificate.exists():
        raise PKIExistsError(
            f"a certificate for {name!r} already exists at {paths.certificate}", path=paths.certificate
        )
    ca_key, ca_cert = load_ca(directory)
    try:
        key, cert = issue_certificate(ca_key, ca_cert, name, key_type=key_type, days=days, roles=roles, server=server)
    except SecurityError as exc:
        raise PKIError(f"CA in {Path(directory)}: {exc.reason}") from None
    except ValueError as exc:
        raise PKIError(str(exc)) from None
    if paths.certificate.exists():
        # Rotation: the replaced certificate stays valid until revoked, so keep it where
        # `revoke --serial` and the broker configuration (which still admits it) find it.
        _archive(directory, name, paths.certificate)
    _write(paths.key, private_key_pem(key), secret=True)
    _write(paths.certificate, certificate_pem(cert))
    return paths


def issued_names(directory: str | os.PathLike[str]) -> list[str]:
    """The names of the certificates issued in a CA directory, sorted."""
    certs = Path(directory) / "certs"
    if not certs.is_dir():
        return []
    return sorted(p.stem for p in certs.glob("*.pem") if _NAME.fullmatch(p.stem))


def describe(directory: str | os.PathLike[str], name: str | None = None) -> CertificateInfo:
    """Describe the CA certificate (no ``name``) or the certificate issued to ``name``."""
    if name is None:
        path = ca_paths(directory).certificate
        data = _read(path, "CA certificate", missing_hint=True)
    else:
        path = issued_paths(directory, name).certificate
        data = _read(path, f"certificate for {name!r}")
    try:
        return describe_certificate(load_certificate_pem(data), path=path)
    except SecurityError as exc:
        raise PKIError(f"{path}: {exc.reason}", path=path) from None


def describe_certificate(cert: x509.Certificate, *, path: Path | None = None) -> CertificateInfo:
    """The facts about ``cert`` that an operator checks."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt_names = tuple(f"{type(n).__name__}:{n.value}" for n in san)
    except x509.ExtensionNotFound:
        alt_names = ()
    return CertificateInfo(
        name=certificate_name(cert),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        roles=certificate_roles(cert),
        key_type=key_type_of(cert.public_key()),  # type: ignore[arg-type]
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=certificate_fingerprint(cert),
        is_ca=is_ca,
        alt_names=alt_names,
        path=path,
    )


_OLD = "old"


def _archive(directory: str | os.PathLike[str], name: str, certificate: Path) -> Path:
    try:
        serial = load_certificate_pem(certificate.read_bytes()).serial_number
    except (OSError, SecurityError):
        serial = None
    target = Path(directory) / _OLD / (f"{name}.{serial:x}.pem" if serial is not None else f"{name}.unreadable.pem")
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.replace(certificate, target)
    except OSError as exc:
        raise PKIError(f"cannot archive {certificate} to {target}: {exc.strerror or exc}", path=certificate) from None
    return target


def crl_path(directory: str | os.PathLike[str]) -> Path:
    """Where a CA directory keeps its certificate revocation list."""
    return Path(directory) / "crl.pem"


def issued_certificates(directory: str | os.PathLike[str], *, archived: bool = True) -> list[tuple[Path, x509.Certificate]]:
    """Every readable certificate in certs/ (and old/, unless ``archived`` is false), with its path."""
    root = Path(directory)
    files = sorted((root / "certs").glob("*.pem"))
    if archived:
        files += sorted((root / _OLD).glob("*.pem"))
    found = []
    for path in files:
        try:
            found.append((path, load_certificate_pem(path.read_bytes())))
        except (OSError, SecurityError):
            continue
    return found


def revoked(directory: str | os.PathLike[str]) -> list[Revocation]:
    """The entries of the CA directory's CRL (empty when there is none); PKIError if it is not the CA's."""
    path = crl_path(directory)
    if not path.exists():
        return []
    _, ca_cert = load_ca(directory)
    try:
        crls = load_crls_pem(_read(path, "CRL"))
        RevocationList(crls, [ca_cert])  # checks the signature
    except SecurityError as exc:
        raise PKIError(f"{path}: {exc.reason}", path=path) from None
    return [entry for crl in crls for entry in crl_revocations(crl)]


def load_revocations(directory: str | os.PathLike[str]) -> RevocationList | None:
    """The CA directory's CRL as a lookup table, or None when there is no CRL."""
    path = crl_path(directory)
    if not path.exists():
        return None
    _, ca_cert = load_ca(directory)
    try:
        return RevocationList.from_pem(_read(path, "CRL"), [ca_cert])
    except SecurityError as exc:
        raise PKIError(f"{path}: {exc.reason}", path=path) from None


def write_crl(
    directory: str | os.PathLike[str],
    *,
    add: Iterable[Revocation] = (),
    days: int = 30,
    now: dt.datetime | None = None,
) -> tuple[Path, int]:
    """(Re)sign the CA directory's CRL with the existing entries plus ``add``; returns its path and entry count."""
    path = crl_path(directory)
    ca_key, ca_cert = load_ca(directory)
    entries = {entry.serial: entry for entry in revoked(directory)}
    number = _crl_number(path) + 1
    for entry in add:
        entries.setdefault(entry.serial, entry)  # the first revocation's date and reason stand
    try:
        crl = build_crl(ca_key, ca_cert, entries.values(), number=number, days=days, now=now)
    except ValueError as exc:
        raise PKIError(str(exc)) from None
    _write(path, crl_pem(crl))
    return path, len(entries)


def _crl_number(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        crl = load_crls_pem(path.read_bytes())[0]
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (OSError, SecurityError, x509.ExtensionNotFound):
        return 0


def revoke(
    directory: str | os.PathLike[str],
    name: str,
    *,
    serial: int | None = None,
    reason: str | None = None,
    days: int = 30,
    now: dt.datetime | None = None,
) -> Revoked:
    """Revoke ``name``'s current certificate (or its archived one with ``serial``) and re-sign the CRL.

    A revoked current certificate moves to old/, so ``issue NAME`` works again without --force.
    """
    validate_name(name)
    _, ca_cert = load_ca(directory)
    current = issued_paths(directory, name).certificate
    candidates = [(p, c) for p, c in issued_certificates(directory)
                  if (p == current or (p.parent.name == _OLD and p.name.startswith(f"{name}.")))
                  and certificate_name(c) == name and c.issuer == ca_cert.subject]
    if serial is None:
        match = [(p, c) for p, c in candidates if p == current]
        if not match:
            raise PKIError(f"no current certificate for {name!r} at {current}"
                           " (pass --serial to revoke an archived one)", path=current)
    else:
        match = [(p, c) for p, c in candidates if c.serial_number == serial]
        if not match:
            known = ", ".join(f"{c.serial_number:x}" for _, c in candidates) or "none"
            raise PKIError(f"{name!r} has no certificate with serial {serial:x} in {Path(directory)} (known: {known})")
    found_path, cert = match[0]
    moment = now if now is not None else dt.datetime.now(dt.timezone.utc)
    before = {entry.serial for entry in revoked(directory)}
    try:
        entry = Revocation(cert.serial_number, moment.replace(microsecond=0), reason)
    except ValueError as exc:
        raise PKIError(str(exc)) from None
    path, count = write_crl(directory, add=[entry], days=days, now=now)
    if found_path == current:
        _archive(directory, name, current)
    return Revoked(name=name, serial=cert.serial_number, reason=reason, crl=path, entries=count,
                   already=cert.serial_number in before)


def _check_key_type(key_type: str) -> None:
    if key_type not in KEY_TYPES:
        raise PKIError(f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")


def _read(path: Path, what: str, *, missing_hint: bool = False) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        hint = f"; create a CA there first ('nmc ops ca init --dir {path.parent}')" if missing_hint else ""
        raise PKIError(f"no {what} at {path}{hint}", path=path) from None
    except OSError as exc:
        raise PKIError(f"cannot read {what} at {path}: {exc.strerror or exc}", path=path) from None


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    # Write to a temporary file and rename so a crash never leaves half a key,
    # and create key files 0600 from the start rather than chmod-ing later.
    # A directory first created for a key is 0700: the CA directory holds ca.key.
    try:
        path.parent.mkdir(mode=0o700 if secret else 0o755, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)  # O_EXCL below: the mode we ask for is the mode we get
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PKIError(f"cannot write {path}: {exc.strerror or exc}", path=path) from None
