"""Who may read whose jobs: the ``jobs.policy`` file of the policy directory, decided ahead of time (PURE).

A job's replies sit in ``NMC_JOBS`` under ``nmc.jobs.<collective>.<caller>.…``; nobody asks a
policy service before reading a stream, so the only place a read can be refused is the
broker. The decision is therefore taken when the broker's configuration is generated
(``nmc ops broker config --policy-dir``): for every pair of certificate users (reader,
job owner) the ordinary ActionPolicy evaluator answers "may ``cert=<reader>`` run
``jobs.read`` on a node whose fact ``caller`` is ``<owner>``", and every allowed pair
becomes a direct-get permission of the reader on the owner's job subjects.

``jobs.policy`` uses the ActionPolicy language unchanged (groups, regexes, ``policy
default``); only the ``read`` action means anything, and the one fact is ``caller``::

    policy default deny
    allow   cert=bob            read    caller=alice
    allow   oncall              read    *
    allow   /^cert=lead-/       read    caller=/^ops-/

Only ``jobs.policy`` governs this: ``default.policy`` is written for running actions on
nodes, and letting it grant reads of other people's results would widen what an
existing directory means. Without ``jobs.policy`` nothing is granted beyond the built-in
default (every caller reads its own jobs, the ``auditor`` role reads everyone's). A
``jobs.policy`` with any error grants nothing: the caller of :func:`job_read_grants` is
told, and the broker configuration is not written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nmc.authz.policyset import PolicySet
from nmc.errors import NmcError

__all__ = ["ALL_CALLERS", "JOBS_AGENT", "JOBS_POLICY", "JobPolicyError", "READ_ACTION", "job_read_grants"]

JOBS_AGENT = "jobs"
JOBS_POLICY = f"{JOBS_AGENT}.policy"
READ_ACTION = "read"
ALL_CALLERS: None = None  # a grant of every caller's jobs, those of users issued later included


class JobPolicyError(NmcError, ValueError):
    """``jobs.policy`` (or the directory holding it) cannot be used: one line saying where and why.

    `in_file`: the message starts with ``jobs.policy:<line>`` (relative to the directory);
    otherwise it is about the directory itself and names it.
    """

    def __init__(self, message: str, *, in_file: bool = True) -> None:
        super().__init__(message)
        self.in_file = in_file


def _allows(policies: PolicySet, reader: str, owner: str) -> bool:
    return policies.decide(caller=f"cert={reader}", agent=JOBS_AGENT, action=READ_ACTION,
                           facts={"caller": owner}, classes=()).allowed


def job_read_grants(policies: PolicySet, readers: Iterable[str],
                    owners: Iterable[str]) -> Mapping[str, tuple[str, ...] | None]:
    """Reader name -> the owners whose jobs it may read besides its own, or ALL_CALLERS.

    A reader allowed the empty owner name is allowed a rule that matches any caller
    (``*``, a regex like ``/.*/``): it gets every caller's jobs, those of certificates
    issued after this configuration included, as the policy says. Readers with no
    grant are left out.
    """
    if JOBS_POLICY not in policies.files:
        if policies.fatal:
            raise JobPolicyError(policies.fatal[0].message, in_file=False)
        return {}
    if policies.fatal:
        raise JobPolicyError(policies.fatal[0].message, in_file=False)
    errors = [i for i in policies.files[JOBS_POLICY].errors if i.severity == "error"]
    if errors:
        raise JobPolicyError(f"{errors[0]} (fix it; no job read is granted from a policy with errors)")
    owners = sorted(set(owners))
    grants: dict[str, tuple[str, ...] | None] = {}
    for reader in sorted(set(readers)):
        if _allows(policies, reader, ""):
            grants[reader] = ALL_CALLERS
            continue
        allowed = tuple(o for o in owners if o != reader and _allows(policies, reader, o))
        if allowed:
            grants[reader] = allowed
    return grants
