"""nmc.authz: who may run which action where.

Only the pure names are re-exported here: the ActionPolicy language
(`policy`, `policyset`: strings in, decisions out), reading a policy
directory (`files`) and the Authorizer interface (`hooks`). The edges are
imported from their modules: evaluating policies in the node
(`nmc.authz.local.LocalAuthorizer`), asking the action-policy service
(`nmc.authz.remote.ServiceAuthorizer`), the service itself
(`nmc.authz.service.PolicyService`) and the node's `authz.*` settings
(`nmc.authz.settings`). That keeps `import nmc.authz.policy` (the CLI's
`nmc policy check`, the tests) from loading nats-py. The messages the node
and the service exchange are wire contract: nmc.protocol.authz.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nmc.authz.files import load_policy_dir, read_policy_dir
    from nmc.authz.hooks import AllowAll, Authorizer, Decision
    from nmc.authz.policy import (
        Groups,
        PolicyFile,
        PolicyIssue,
        Rule,
        parse_groups,
        parse_policy,
        split_columns,
    )
    from nmc.authz.policyset import PolicySet

# Each name is imported from its module on first use (PEP 562): a node that asks the policy
# service (`authz.mode = service`) imports nmc.authz.remote, which loads this package, and
# need not load the policy language and its files (issue 16: an idle node's memory).
_WHERE = {
    "load_policy_dir": "files", "read_policy_dir": "files",
    "AllowAll": "hooks", "Authorizer": "hooks", "Decision": "hooks",
    "Groups": "policy", "PolicyFile": "policy", "PolicyIssue": "policy", "Rule": "policy",
    "parse_groups": "policy", "parse_policy": "policy", "split_columns": "policy",
    "PolicySet": "policyset",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "AllowAll",
    "Authorizer",
    "Decision",
    "Groups",
    "PolicyFile",
    "PolicyIssue",
    "PolicySet",
    "Rule",
    "load_policy_dir",
    "parse_groups",
    "parse_policy",
    "read_policy_dir",
    "split_columns",
]
