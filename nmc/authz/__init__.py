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
