"""What each certificate role may publish and subscribe to at the broker (pure: names in, subjects out).

nats-server's ``verify_and_map`` makes a client certificate's name its NATS user,
and ``nmc.ops.broker.authorization`` renders one user per certificate with the union of the
permissions of its roles (the subject's ``OU`` values). docs/security.md has the
same table for people, and a test checks it against these functions.

- ``user``: publishes requests and ``$SRV`` discovery; reads the registry, the
  audit stream and the events stream one stored message at a time (``STREAM.INFO``,
  ``STREAM.MSG.GET``); subscribes to ``_INBOX.<its name>.>`` and to the lifecycle
  events ``nmc.events.>`` (fleet state, signed, not secrets: docs/events.md).
- ``node``: hears requests for itself and its collective; asks the policy service;
  writes its own audit subject, its own registry key and its own lifecycle events
  (``nmc.events.<collective>.*.<its name>``); answers into inboxes.
- ``policy``: answers ``nmc.*.authz.check`` into inboxes, announces reloads, publishes
  its own lifecycle events (``nmc.events.*.*.<its name>``).
- ``audit``: reads ``NMC_AUDIT`` one stored message at a time, as users do, and hears
  ``nmc.audit.>`` as a wake-up hint; publishes its own lifecycle events.
- ``operator``: creates and changes the audit, jobs and events streams and the registry
  bucket (``nmc audit setup``, ``nmc ops setup``); nothing else.
- ``auditor``: reads every caller's jobs from ``NMC_JOBS`` (a user reads its own).
- ``console``: the read-only web console (``nmc serve console``): reads the registry,
  the audit and events streams one stored message at a time and every caller's jobs of
  its collective by direct get; publishes no request, no ``$SRV`` and no answer.
- ``leaf``: a site's leaf server: what the site's nodes and users may do, for any name.

Three rules hold for every role, because nats-server enforces nothing finer:

1. **Answers go to inboxes only.** ``allow_responses`` would let a daemon publish to
   the reply subject of anything it received, and nats-server lets such an answer win
   over every ``deny`` (server/client.go ``pubAllowedFullCheck``). The sender chooses
   the reply subject, so a user could aim a node's answer at another node's registry
   key. Roles that answer get ``publish _INBOX.>`` instead, where every nmc
   connection takes its replies.
2. **No role reads through consumers.**
   nats-server checks neither a push consumer's deliver subject nor the reply
   subject of a pull request or direct get against the asker's permissions, so any
   role that may create a consumer or fetch from one can have stored records
   delivered onto any subject. Readers use ``STREAM.MSG.GET``: its answer is the
   server's JSON (the record inside, base64), never a raw message. What remains:
   nats-server does not check the reply subject of any JetStream API request or
   stream publish either, so whoever may read or write a stream can have the
   server's JSON answer posted on any subject. Every nmc receiver refuses it
   (unsigned), and a node listens on its own registry key to put its record back.
3. **Stream configuration is the operator's.** No running daemon may create,
   change, purge or delete a stream, so no daemon key can make a stream capture
   requests or turn on rollups.

The permissions of a role depend on its name and the ``Scope`` only, never on which
other certificates exist: regenerating the configuration after a revocation leaves
every other user's permissions exactly as they were. The one addition is a policy's:
``jobs.policy`` may grant a user reads of named other callers' jobs
(``job_reader_permissions``, decided in nmc.authz.jobread when the configuration is
generated), and such a grant names the callers it covers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from nmc.protocol.jobs import JOBS_STREAM
from nmc.protocol.registry import DEFAULT_BUCKET, bucket_subjects, check_bucket, registry_key_subject
from nmc.protocol.subjects import (
    PREFIX,
    audit_subject,
    audit_subjects,
    authz_subject,
    collective_root,
    encode_token,
    event_query_subject,
    event_subjects,
    node_requests,
    reloaded_subject,
    route_requests,
)
from nmc.security.names import INBOX_ROOT, inbox_prefix

__all__ = [
    "AUDIT_STREAM",
    "EVENTS_STREAM",
    "AUDITOR_ROLE",
    "BROKER_ROLE",
    "CONSOLE_ROLE",
    "LEAF_ROLE",
    "OPERATOR_ROLE",
    "ROLE_PERMISSIONS",
    "USER_ROLE",
    "Permissions",
    "Scope",
    "audit_permissions",
    "auditor_permissions",
    "console_permissions",
    "job_reader_permissions",
    "leaf_permissions",
    "node_permissions",
    "operator_permissions",
    "policy_permissions",
    "subject_matches",
    "user_permissions",
]

AUDIT_STREAM = "NMC_AUDIT"
AUDITOR_ROLE = "auditor"
EVENTS_STREAM = "NMC_EVENTS"
BROKER_ROLE = "broker"
CONSOLE_ROLE = "console"
LEAF_ROLE = "leaf"
OPERATOR_ROLE = "operator"
USER_ROLE = "user"
_JS = "$JS.API"
_ANSWERS = f"{INBOX_ROOT}.>"  # where every nmc connection takes its replies (nmc.security.names)


@dataclass(frozen=True)
class Scope:
    """What the permissions are about: the collective, the registry bucket and the audit stream."""

    collective: str = "nmc"
    registry_bucket: str = DEFAULT_BUCKET
    audit_stream: str = AUDIT_STREAM
    events_stream: str = EVENTS_STREAM
    jetstream_domain: str = ""  # a hub's domain: its leaf servers send JetStream API requests as $JS.<domain>.API

    def __post_init__(self) -> None:
        """Refuse names that would not make valid subjects."""
        if not self.collective:
            raise ValueError("collective must not be empty")
        check_bucket(self.registry_bucket)
        for what, stream in (("audit", self.audit_stream), ("events", self.events_stream)):
            if not stream or any(c in stream for c in " .*>\t\r\n"):
                raise ValueError(f"{what} stream name {stream!r} must be one subject token")

    @property
    def base(self) -> str:
        """``nmc.<encoded collective>``: the root of every request subject."""
        return collective_root(self.collective)

    @property
    def registry_stream(self) -> str:
        """The stream behind the registry bucket."""
        return f"KV_{self.registry_bucket}"


@dataclass(frozen=True)
class Permissions:
    """What one NATS user may publish and subscribe to.

    ``allow_responses`` (answer any reply subject received) is never set by a role
    (rule 1 of the module doc); it stays so that a hand-made configuration can be rendered.
    """

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    allow_responses: bool = False
    publish_deny: tuple[str, ...] = ()  # exceptions carved out of `publish`

    def __or__(self, other: Permissions) -> Permissions:
        """The union: a certificate with two roles gets both.

        nats-server lets a deny win over any allow, so a subject one role denies
        stays denied only where the other role does not allow it.
        """
        deny = [d for d in self.publish_deny if not other._allows(d)]
        deny += [d for d in other.publish_deny if not self._allows(d)]
        return Permissions(publish=_merge(self.publish, other.publish), subscribe=_merge(self.subscribe, other.subscribe),
                           allow_responses=self.allow_responses or other.allow_responses,
                           publish_deny=_merge(deny, ()))

    def may_publish(self, subject: str) -> bool:
        """Whether nats-server lets this user publish to the concrete `subject` (not as an answer)."""
        return (any(subject_matches(p, subject) for p in self.publish)
                and not any(subject_matches(d, subject) for d in self.publish_deny))

    def may_subscribe(self, subject: str) -> bool:
        """Whether nats-server lets this user subscribe to `subject` (wildcards: only if the allows cover it all)."""
        return any(_covers(p, subject) for p in self.subscribe)

    def _allows(self, subject: str) -> bool:
        """Whether these permissions alone let `subject` (and all it stands for) be published."""
        return (any(_covers(p, subject) for p in self.publish)
                and not any(_covers(d, subject) for d in self.publish_deny))


def _merge(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching of a concrete `subject` against `pattern` (``*`` one token, ``>`` one or more)."""
    return _covers(pattern, subject)


def _covers(pattern: str, subject: str) -> bool:
    """Whether every subject `subject` stands for (wildcards in it included) matches `pattern`."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or have[i] == ">" or (token != "*" and token != have[i]) or (token == "*" and have[i] == ">"):
            return False
    return len(want) == len(have)


def _inbox(name: str) -> str:
    return f"{inbox_prefix(name)}.>"


def _jobs(collective: str, caller: str = "*") -> str:
    """``nmc.jobs.<collective>.<caller>``: the root of one caller's job subjects (nmc.protocol.jobs)."""
    return f"{PREFIX}.jobs.{encode_token(collective)}.{caller if caller == '*' else encode_token(caller)}"


def node_permissions(name: str, scope: Scope) -> Permissions:
    """A node named ``name``: its requests, its inbox, its audit records and registry key; answers into inboxes."""
    c = scope.collective
    own_key = registry_key_subject(scope.registry_bucket, c, name)
    return Permissions(
        subscribe=(node_requests(c, name), route_requests(c, "all"), route_requests(c, "fact"),
                   route_requests(c, "class"), reloaded_subject(c), "$SRV.>", _inbox(name),
                   own_key),  # to put its record back when the broker was made to write there (rule 2)
        publish=(authz_subject(c),
                 audit_subject(c, name),
                 own_key,
                 event_query_subject(c, None, name),  # its own lifecycle events, any kind (docs/events.md)
                 # Its own signed replies to jobs, under any caller's jobs (the request names the caller).
                 f"{_jobs(c)}.*.reply.{encode_token(name)}",
                 # The registry and audit publishers look their stream up; the operator made it (rule 3).
                 f"{_JS}.STREAM.INFO.{scope.registry_stream}", f"{_JS}.STREAM.INFO.{scope.audit_stream}",
                 _ANSWERS),
    )


def user_permissions(name: str, scope: Scope) -> Permissions:
    """A person or script: requests and discovery out, replies only into its own inbox, streams read by message.

    Jobs: it records its own (start and end records under its name) and reads back only
    subjects under its name, by direct get with the subject in the API subject, which is
    the one JetStream read nats-server can restrict by stored subject (nmc.protocol.jobs).
    """
    base, mine = scope.base, _jobs(scope.collective, name)
    reads = [f"{_JS}.STREAM.{verb}.{stream}"
             for stream in (scope.registry_stream, scope.audit_stream, scope.events_stream)
             for verb in ("INFO", "MSG.GET")]
    return Permissions(
        publish=(f"{base}.all.>", f"{base}.fact.>", f"{base}.class.>", f"{base}.node.>", "$SRV.>", *reads,
                 f"{mine}.*.start", f"{mine}.*.end", f"{_JS}.STREAM.INFO.{JOBS_STREAM}",
                 f"{_JS}.DIRECT.GET.{JOBS_STREAM}.{mine}.>"),
        # Lifecycle events are fleet state, not secrets: `nmc events watch` hears every collective's.
        subscribe=(_inbox(name), event_subjects()),
    )


def auditor_permissions(name: str, scope: Scope) -> Permissions:
    """Reads every caller's jobs (``nmc jobs list/show --caller``); given with ``user`` to a person who reviews."""
    return Permissions(
        publish=(f"{_JS}.STREAM.INFO.{JOBS_STREAM}", f"{_JS}.DIRECT.GET.{JOBS_STREAM}.{_jobs(scope.collective)}.>"),
        subscribe=(_inbox(name),),
    )


def job_reader_permissions(owners: Iterable[str] | None, scope: Scope) -> Permissions:
    """Reading other callers' jobs, as ``jobs.policy`` granted (nmc.authz.jobread): direct gets under their names.

    ``owners`` None is every caller's jobs (the auditor's reach); otherwise one subject
    pattern per owner, so the broker refuses every other caller's job subjects.
    """
    roots = [_jobs(scope.collective)] if owners is None else [_jobs(scope.collective, o) for o in owners]
    return Permissions(publish=(f"{_JS}.STREAM.INFO.{JOBS_STREAM}",
                                *(f"{_JS}.DIRECT.GET.{JOBS_STREAM}.{root}.>" for root in roots)))


def console_permissions(name: str, scope: Scope) -> Permissions:
    """The web console: reads the registry, audit, events and (every caller's) jobs streams, runs nothing.

    Only the JetStream reads rule 2 allows: ``STREAM.INFO`` and ``STREAM.MSG.GET`` of the
    registry, audit and events streams, and jobs by direct get with the subject in the API
    subject (as the auditor). No request subject, no ``$SRV``, no ``_INBOX.>``: its only
    subscription is its own inbox, where the server's answers come.
    """
    reads = [f"{_JS}.STREAM.{verb}.{stream}"
             for stream in (scope.registry_stream, scope.audit_stream, scope.events_stream)
             for verb in ("INFO", "MSG.GET")]
    return Permissions(
        publish=(*reads, f"{_JS}.STREAM.INFO.{JOBS_STREAM}",
                 f"{_JS}.DIRECT.GET.{JOBS_STREAM}.{_jobs(scope.collective)}.>"),
        subscribe=(_inbox(name),),
    )


def policy_permissions(name: str, scope: Scope) -> Permissions:
    """The action-policy service: answers authorization questions of every collective, announces reloads."""
    return Permissions(
        subscribe=(f"{PREFIX}.*.authz.check", "$SRV.>", _inbox(name)),
        publish=(f"{PREFIX}.*.authz.reloaded", event_query_subject(None, None, name), _ANSWERS),
    )


def audit_permissions(name: str, scope: Scope) -> Permissions:
    """The audit service: reads the audit stream one stored record at a time, answers $SRV.

    No consumers (rule 2): the service keeps its own position (``nmc.audit.service``) and
    reads with ``STREAM.MSG.GET``, as every other reader does. It hears the records as they
    are published (``nmc.audit.>``) only as a hint that there is more to read: what it
    writes comes from the stream. It hears lifecycle events (``nmc.events.>``) to forward
    them with the records, and publishes its own.
    """
    stream = scope.audit_stream
    return Permissions(
        subscribe=("$SRV.>", _inbox(name), audit_subjects(), event_subjects()),
        publish=(f"{_JS}.STREAM.INFO.{stream}", f"{_JS}.STREAM.MSG.GET.{stream}",
                 event_query_subject(None, None, name), _ANSWERS),
    )


def operator_permissions(name: str, scope: Scope) -> Permissions:
    """An operator's certificate: creates and configures the audit, jobs and events streams and the registry bucket."""
    streams = (scope.audit_stream, scope.registry_stream, JOBS_STREAM, scope.events_stream)
    return Permissions(
        subscribe=(_inbox(name),),
        publish=tuple(f"{_JS}.STREAM.{verb}.{stream}" for stream in streams for verb in ("INFO", "CREATE", "UPDATE")),
    )


def leaf_permissions(name: str, scope: Scope) -> Permissions:
    """A site's leaf server: what the site's nodes and users may do, for any of their names.

    The hub cannot see which certificate sent a message through a leaf connection: the
    site's leaf server checks its own clients (the same CA, verify_and_map, per-role
    users). The hub trusts it for the whole collective's requests, answers, audit
    records, registry keys and lifecycle events, and for nothing else (no $SYS, no stream changes, no
    consumers: the site's readers read by message, as users do).
    """
    base = scope.base
    node, user = node_permissions(name, scope), user_permissions(name, scope)
    # A site's leaf server maps $JS.API to the hub's domain: that is the subject the hub sees.
    api = f"$JS.{scope.jetstream_domain}.API" if scope.jetstream_domain else _JS
    # The site's users read their own jobs: the site's server checks whose; the hub allows every caller's.
    jobs_reads = (f"{_JS}.DIRECT.GET.{JOBS_STREAM}.{_jobs(scope.collective)}.>",)
    js = [api + s[len(_JS):] for s in (*node.publish, *user.publish, *jobs_reads) if s.startswith(_JS)]
    deny = tuple(api + s[len(_JS):] for s in user.publish_deny)
    return Permissions(
        publish=(f"{base}.all.>", f"{base}.fact.>", f"{base}.class.>", f"{base}.node.>", f"{base}.authz.>",
                 audit_subjects(scope.collective), bucket_subjects(scope.registry_bucket), f"{_jobs(scope.collective)}.>",
                 event_subjects(scope.collective), "$SRV.>", _ANSWERS, *_merge(js, ())),
        subscribe=(f"{base}.>", event_subjects(scope.collective), "$SRV.>", _ANSWERS,
                   bucket_subjects(scope.registry_bucket)),
        publish_deny=deny,
    )


ROLE_PERMISSIONS: Mapping[str, Callable[[str, Scope], Permissions]] = MappingProxyType({
    "audit": audit_permissions,
    AUDITOR_ROLE: auditor_permissions,
    CONSOLE_ROLE: console_permissions,
    LEAF_ROLE: leaf_permissions,
    "node": node_permissions,
    OPERATOR_ROLE: operator_permissions,
    "policy": policy_permissions,
    USER_ROLE: user_permissions,
})
