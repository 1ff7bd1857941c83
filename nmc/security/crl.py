"""Certificate revocation lists: build and sign one, read one back, and answer "is this serial revoked?".

A CRL counts only when a trusted CA signed it, and it revokes only
certificates that CA issued: entries are keyed by the CA certificate's
SHA-256 fingerprint and the serial. ``CrlFile`` re-reads its file when the
file changes (checked at most every ``check_interval`` seconds), so a node
honours a new revocation without a restart; a file that has become
unreadable or invalid leaves the last good list in force. With
``missing_ok`` the file may not exist yet: it then revokes nothing until the
file appears (the CA directory's default ``crl.pem``, written by the first
``nmc ops ca revoke``), and is picked up as soon as it does.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from nmc.security.ca import authority_key_id
from nmc.security.errors import CertificateError
from nmc.security.keys import PrivateKey

__all__ = [
    "REASONS",
    "CrlFile",
    "Revocation",
    "RevocationList",
    "Revocations",
    "build_crl",
    "ca_fingerprint",
    "crl_pem",
    "crl_revocations",
    "load_crls_pem",
]

log = structlog.get_logger("nmc.security.crl")

# The RFC 5280 reason codes by their names, as `--reason` takes them.
REASONS: Mapping[str, x509.ReasonFlags] = MappingProxyType({flag.value: flag for flag in x509.ReasonFlags})
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked certificate: its serial, when it was revoked and why (an RFC 5280 reason name or None)."""

    serial: int
    revoked_at: dt.datetime
    reason: str | None = None

    def __post_init__(self) -> None:
        """Refuse unknown reasons and naive times here, not when the CRL is signed."""
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"unknown revocation reason {self.reason!r}: use one of {', '.join(REASONS)}")
        if self.revoked_at.tzinfo is None:
            raise ValueError("revoked_at must be an aware datetime")

    def describe(self) -> str:
        """``revoked 2025-01-02T03:04:05+00:00 (keyCompromise)``: for messages."""
        reason = f" ({self.reason})" if self.reason else ""
        return f"revoked {self.revoked_at.isoformat()}{reason}"


class Revocations(Protocol):
    """What a Verifier asks: is the certificate with this serial, issued by this CA, revoked?"""

    def lookup(self, ca_fingerprint: bytes, serial: int) -> Revocation | None:
        """The revocation, or None when the certificate is not revoked."""


def ca_fingerprint(ca_cert: x509.Certificate) -> bytes:
    """The SHA-256 of the CA certificate's DER: the key revocations are filed under."""
    return ca_cert.fingerprint(hashes.SHA256())


def build_crl(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revocations: Iterable[Revocation],
    *,
    number: int = 1,
    days: int = 30,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by the CA listing ``revocations``; valid (``next_update``) for ``days``."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a whole number of at least 1, not {days!r}")
    moment = now if now is not None else dt.datetime.now(dt.timezone.utc)
    if moment.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(moment)
        .next_update(moment + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority_key_id(ca_cert), critical=False)
    )
    for entry in sorted(revocations, key=lambda r: r.serial):
        revoked = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        if entry.reason is not None:
            revoked = revoked.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(ca_key, algorithm)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    """The CRL as PEM."""
    return crl.public_bytes(serialization.Encoding.PEM)


def load_crls_pem(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL in a PEM file (Puppet's crl.pem holds one per CA in the chain); CertificateError if none."""
    blocks = _PEM_CRL.findall(data)
    if not blocks:
        raise CertificateError("no PEM CRL found (expected a '-----BEGIN X509 CRL-----' block)")
    try:
        return [x509.load_pem_x509_crl(block) for block in blocks]
    except ValueError as exc:
        raise CertificateError(f"malformed PEM CRL: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None


def crl_revocations(crl: x509.CertificateRevocationList) -> list[Revocation]:
    """The entries of a CRL, in serial order."""
    entries = []
    for revoked in crl:
        try:
            reason: str | None = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except x509.ExtensionNotFound:
            reason = None
        entries.append(Revocation(revoked.serial_number, revoked.revocation_date_utc, reason))
    return sorted(entries, key=lambda r: r.serial)


class RevocationList:
    """The revocations of CRLs whose signatures verified against trusted CAs."""

    def __init__(self, crls: Iterable[x509.CertificateRevocationList], ca_certificates: Iterable[x509.Certificate]):
        """Check each CRL's signature; CertificateError for a CRL no trusted CA signed."""
        cas = list(ca_certificates)
        table: dict[bytes, dict[int, Revocation]] = {}
        for crl in crls:
            signer = _signing_ca(crl, cas)
            entries = table.setdefault(ca_fingerprint(signer), {})
            for entry in crl_revocations(crl):
                entries[entry.serial] = entry
        self._table = table

    @classmethod
    def from_pem(cls, data: bytes, ca_certificates: Iterable[x509.Certificate]) -> RevocationList:
        """From a PEM file's bytes."""
        return cls(load_crls_pem(data), ca_certificates)

    def __len__(self) -> int:
        """How many certificates are revoked, over all CAs."""
        return sum(len(entries) for entries in self._table.values())

    def lookup(self, ca_fingerprint: bytes, serial: int) -> Revocation | None:
        """The revocation of certificate ``serial`` issued by the CA with that fingerprint, or None."""
        entries = self._table.get(ca_fingerprint)
        return None if entries is None else entries.get(serial)


def _signing_ca(crl: x509.CertificateRevocationList, cas: list[x509.Certificate]) -> x509.Certificate:
    issuer = crl.issuer.rfc4514_string()
    for ca in cas:
        if ca.subject != crl.issuer:
            continue
        try:
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return ca
        except (InvalidSignature, TypeError, ValueError):
            continue
    raise CertificateError(f"CRL issued by '{issuer}' is not signed by a trusted CA")


class CrlFile:
    """A CRL file that is re-read when it changes; implements ``Revocations``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        ca_certificates: Iterable[x509.Certificate],
        *,
        check_interval: float = 2.0,
        missing_ok: bool = False,
    ) -> None:
        """Load ``path`` now (CertificateError if it is invalid, or missing unless ``missing_ok``).

        The file is re-checked every ``check_interval`` s. With ``missing_ok`` a file that
        does not exist yet revokes nothing until it appears; an invalid one is still refused.
        """
        if not check_interval >= 0:
            raise ValueError(f"check_interval must be 0 or more seconds, not {check_interval!r}")
        self.path = Path(path)
        self._cas = list(ca_certificates)
        self._interval = check_interval
        self._monotonic = time.monotonic
        self.last_error: str | None = None
        stamp = self._stamp()
        if stamp is None and not missing_ok:
            raise CertificateError(f"CRL file {self.path} not found")
        # A file that is not there yet is "no revocations", remembered as such (stamp None) until it appears.
        self._list = self._load() if stamp is not None else RevocationList([], self._cas)
        self._loaded_stamp = stamp
        self._next_check = self._monotonic() + self._interval

    def _stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        # Inode too: pki writes by rename, and two writes within one mtime tick still differ.
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def _load(self) -> RevocationList:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read CRL file {self.path}: {exc.strerror or exc}") from None
        try:
            return RevocationList.from_pem(data, self._cas)
        except CertificateError as exc:
            raise CertificateError(f"CRL file {self.path}: {exc.reason}") from None

    @property
    def revocations(self) -> RevocationList:
        """The list in force (after a re-check if one is due)."""
        self._refresh()
        return self._list

    def _refresh(self) -> None:
        now = self._monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._interval
        stamp = self._stamp()
        if stamp == self._loaded_stamp:
            return
        if stamp is None:
            self._failed(f"CRL file {self.path} not found")
            return
        try:
            self._list = self._load()
        except CertificateError as exc:
            self._failed(exc.reason)
            # Remember the bad version so it is not re-parsed until the file changes again.
            self._loaded_stamp = stamp
            return
        self._loaded_stamp = stamp
        self.last_error = None
        log.info("crl_reloaded", path=str(self.path), revoked=len(self._list))

    def _failed(self, reason: str) -> None:
        if reason != self.last_error:
            log.warning("crl_reload_failed", path=str(self.path), error=reason, keeping=len(self._list))
        self.last_error = reason

    def lookup(self, ca_fingerprint: bytes, serial: int) -> Revocation | None:
        """Like ``RevocationList.lookup``, on the current contents of the file."""
        return self.revocations.lookup(ca_fingerprint, serial)
