"""nmc.authz: who may run which action where.

The ActionPolicy language (`policy`, `policyset`: pure, strings in,
decisions out), the wire messages (`wire`), and the edges: reading a policy
directory (`files`, `watch`), evaluating it in the node (`LocalAuthorizer`),
asking the action-policy service (`ServiceAuthorizer`) and the service
itself (`PolicyService`).
"""

from __future__ import annotations

from nmc.authz.files import load_policy_dir, read_policy_dir
from nmc.authz.hooks import AllowAll, Authorizer, Decision
from nmc.authz.local import LocalAuthorizer
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
from nmc.authz.remote import ServiceAuthorizer
from nmc.authz.service import PolicyService, PolicyServiceSettings
from nmc.authz.settings import AUTHZ_MODES, AuthzSettings, node_authorizer
from nmc.authz.wire import AuthzAnswer, AuthzQuestion, ReloadNotice, reloaded_subject

__all__ = [
    "AUTHZ_MODES",
    "AllowAll",
    "Authorizer",
    "AuthzAnswer",
    "AuthzQuestion",
    "AuthzSettings",
    "Decision",
    "Groups",
    "LocalAuthorizer",
    "PolicyFile",
    "PolicyIssue",
    "PolicyService",
    "PolicyServiceSettings",
    "PolicySet",
    "ReloadNotice",
    "Rule",
    "ServiceAuthorizer",
    "load_policy_dir",
    "node_authorizer",
    "parse_groups",
    "parse_policy",
    "read_policy_dir",
    "reloaded_subject",
    "split_columns",
]
