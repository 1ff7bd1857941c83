"""How a node authorizes requests (`authz.*` settings), and the Authorizer that follows from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nmc.authz.hooks import AllowAll, Authorizer
from nmc.authz.remote import ServiceAuthorizer
from nmc.security import Signer, Verifier

__all__ = ["AUTHZ_MODES", "AuthzSettings", "node_authorizer"]

AUTHZ_MODES = ("none", "local", "service")


@dataclass(frozen=True)
class AuthzSettings:
    """`authz.mode` and what that mode needs; validates itself."""

    mode: str = "none"
    policydir: Path | None = None
    signers: tuple[str, ...] = ()
    timeout: float = 2.0
    cache_ttl: float = 60.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in AUTHZ_MODES:
            raise ValueError(f"authz.mode must be one of {', '.join(AUTHZ_MODES)}, got {self.mode!r}")
        if self.mode == "local" and self.policydir is None:
            raise ValueError("authz.mode = local needs authz.policydir")
        if self.mode == "service" and not self.signers:
            raise ValueError("authz.mode = service needs authz.signers (the policy services' certificate names)")
        if not self.timeout > 0:
            raise ValueError(f"authz.timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.cache_ttl < 0:
            raise ValueError(f"authz.cache_ttl must be 0 (no cache) or more seconds, got {self.cache_ttl!r}")
        if not self.poll_interval > 0:
            raise ValueError(f"authz.poll_interval must be a positive number of seconds, got {self.poll_interval!r}")


def node_authorizer(settings: AuthzSettings, *, signer: Signer, verifier: Verifier, collective: str) -> Authorizer:
    """The node's Authorizer; local and service ones are also Companions (start them with the node)."""
    if settings.mode == "local":
        assert settings.policydir is not None
        from nmc.authz.local import LocalAuthorizer  # the policy language and its files only in this mode

        return LocalAuthorizer.from_directory(settings.policydir, poll_interval=settings.poll_interval)
    if settings.mode == "service":
        return ServiceAuthorizer(None, signer, verifier, collective, settings.signers, timeout=settings.timeout,
                                 cache_ttl=settings.cache_ttl)
    return AllowAll()
