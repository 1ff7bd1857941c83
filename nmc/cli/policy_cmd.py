"""`nmc policy ...`: check what a policy directory decides, and lint it, without any broker."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click
import yaml

from nmc.authz import PolicySet, load_policy_dir
from nmc.ops.config.files import ConfigError, find_server_config, load_config

__all__ = ["policy"]

EXIT_DENIED = 1
EXIT_ERROR = 2


class _PolicyCommandError(click.ClickException):
    """Something kept the command from deciding (exit 2; exit 1 means denied)."""

    exit_code = EXIT_ERROR


@click.group()
def policy() -> None:
    """Action policies: what they decide, and whether they parse.

    \b
    Example:
      nmc policy check alice puppet runonce --dir /etc/nmc/policies --fact environment=production
      nmc policy lint /etc/nmc/policies
    """


def _default_policydir() -> Path:
    """authz.policydir from the server config, else from the policy service's config."""
    candidates = [find_server_config(os.environ, Path.home())]
    if os.environ.get("NMC_POLICY_CONFIG"):
        candidates.append(Path(os.environ["NMC_POLICY_CONFIG"]).expanduser())
    elif Path("/etc/nmc/policy.cfg").is_file():
        candidates.append(Path("/etc/nmc/policy.cfg"))
    for path in candidates:
        if path is None:
            continue
        try:
            found = load_config(path, kind="server").get_path("authz.policydir")
        except ConfigError as exc:
            raise _PolicyCommandError(str(exc)) from exc
        if found is not None:
            return found
    raise _PolicyCommandError("no policy directory: pass --dir, or set authz.policydir in the server config")


def _load_facts(path: str | None, pairs: tuple[str, ...]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise _PolicyCommandError(f"--facts {path}: cannot read it: {exc.strerror or exc}") from exc
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise _PolicyCommandError(f"--facts {path}: {exc}".splitlines()[0]) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise _PolicyCommandError(f"--facts {path}: expected a mapping of fact names to values")
        facts.update(loaded or {})
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.UsageError(f"--fact {pair!r}: expected NAME=VALUE")
        facts[name] = value
    return facts


def _shown(line: str) -> str:
    return re.sub(r"\t+", "  ", line)


@policy.command("check")
@click.argument("caller")
@click.argument("agent")
@click.argument("action")
@click.option("--dir", "-d", "directory", type=click.Path(path_type=Path),
              help="Policy directory (default: authz.policydir of the server config).")
@click.option("--facts", "facts_file", type=click.Path(dir_okay=False),
              help="YAML or JSON file of the target node's facts.")
@click.option("--fact", "fact_pairs", multiple=True, metavar="NAME=VALUE", help="One fact (repeatable).")
@click.option("--classes", "class_args", multiple=True, metavar="CLASS[,CLASS...]",
              help="The target node's classes (repeatable, or comma-separated).")
@click.option("--identity", default="", help="The target node's identity (for identity() terms).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def check(caller: str, agent: str, action: str, directory: Path | None, facts_file: str | None,
          fact_pairs: tuple[str, ...], class_args: tuple[str, ...], identity: str, as_json: bool) -> None:
    """Show what the policies decide for CALLER running AGENT ACTION on a node with these facts.

    CALLER is a certificate name (`alice`) or caller id (`cert=alice`). Exit
    status: 0 allowed, 1 denied, 2 could not decide.

    \b
    Example:
      nmc policy check alice puppet runonce --fact environment=production --classes role::web
    """
    if "=" not in caller:
        caller = f"cert={caller}"
    policydir = directory or _default_policydir()
    facts = _load_facts(facts_file, fact_pairs)
    classes = [c.strip() for arg in class_args for c in arg.split(",") if c.strip()]
    policies: PolicySet = load_policy_dir(policydir)
    decision = policies.decide(caller=caller, agent=agent, action=action, facts=facts, classes=classes,
                               identity=identity)
    line = policies.line(decision.rule) if decision.rule else ""
    if as_json:
        click.echo(json.dumps({"caller": caller, "agent": agent, "action": action, "allowed": decision.allowed,
                               "rule": decision.rule, "line": line, "reason": decision.reason}, indent=2))
    else:
        verdict = "ALLOWED" if decision.allowed else "DENIED"
        click.echo(f"{verdict}: {caller} {agent}.{action}")
        click.echo(f"  rule:   {decision.rule or '-'}" + (f"   {_shown(line)}" if line else ""))
        click.echo(f"  reason: {decision.reason}")
        if policies.errors:
            click.echo(f"  ({len(policies.errors)} error(s) in {policydir}: see `nmc policy lint {policydir}`)",
                       err=True)
    if not decision.allowed:
        raise click.exceptions.Exit(EXIT_DENIED)


@policy.command("lint")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help='Print {"directory", "files_checked", "errors", "warnings", "issues": [{"file", "line", '
                   '"severity", "message"}]} instead of text (line 0: the file as a whole).')
def lint(directory: Path, as_json: bool) -> None:
    """Report every error and warning in a policy directory, as file:line.

    Exit status 1 when there is any error (a file with errors denies every
    request it governs), 0 when there are only warnings or nothing at all.

    \b
    Example:
      nmc policy lint /etc/nmc/policies
      nmc policy lint /etc/nmc/policies --json | jq '.issues[] | select(.severity == "error")'
    """
    policies = load_policy_dir(directory)
    issues = policies.issues
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = len(issues) - errors
    checked = len(policies.files) + (1 if policies.groups.present else 0)
    if as_json:
        click.echo(json.dumps({"directory": str(directory), "files_checked": checked, "errors": errors,
                               "warnings": warnings,
                               "issues": [{"file": i.source, "line": i.line, "severity": i.severity,
                                           "message": i.message} for i in issues]}, indent=2))
    else:
        for issue in issues:
            click.echo(str(issue))
        click.echo(f"{directory}: {checked} file(s) checked, {errors} error(s), {warnings} warning(s)")
    if errors:
        raise click.exceptions.Exit(1)
