"""Shell completion: `nmc completion bash|zsh|fish` and the callbacks that complete agents and actions.

Completion is click's own (`_NMC_COMPLETE=bash_source nmc`); this module adds
what click cannot know: the agent names, each agent's actions and each
action's inputs, read from the same DDLs `nmc plugin list` shows (built-ins,
`nmc.agents` entry points, the client config's `plugindir`).

Completion runs on every <TAB>, so a callback must never fail loudly: any
problem (a broken config, a plugin that does not import) means no
suggestions, never a traceback in the user's prompt. Loading happens with
stdout captured, because click prints the completions on stdout and a
plugin's print or a log line would corrupt them.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nmc.ops.agents import agent_ddls
from nmc.ops.config.files import find_client_config, load_config
from nmc.protocol.ddl import AgentSpec

if TYPE_CHECKING:  # click.shell_completion is imported on a <TAB> or by `nmc completion`, not by every command
    # that offers completion callbacks (`nmc ping` and `nmc rpc` import this module): issue 16, start-up
    from click.shell_completion import CompletionItem

__all__ = ["SHELLS", "complete_action", "complete_agent", "complete_input", "completion"]

SHELLS = ("bash", "zsh", "fish")
_COMPLETE_VAR = "_NMC_COMPLETE"


def _agent_specs(ctx: click.Context) -> dict[str, AgentSpec]:
    """The DDLs the client knows, by agent name; {} on any problem.

    During completion click only parses (the root callback does not run), so
    --config is read from the root context's params, not from ctx.obj.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            explicit = ctx.find_root().params.get("config_path")
            path = Path(explicit) if explicit else find_client_config(os.environ, Path.home())
            config = load_config(path, kind="client")
            return {name: a.spec for name, a in agent_ddls(config.get_paths("plugindir")).items()}
    except Exception:  # noqa: BLE001 - a <TAB> must never print a traceback
        return {}


def _items(names: list[tuple[str, str]], incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(name, help=help_text or None) for name, help_text in sorted(names)
            if name.startswith(incomplete)]


def _never_fails(func: Callable[[click.Context, click.Parameter, str], list[CompletionItem]]
                 ) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """Wrap a callback so any exception means no completions."""
    def wrapper(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return func(ctx, param, incomplete)
        except Exception:  # noqa: BLE001 - see the module docstring
            return []
    wrapper.__doc__ = func.__doc__
    return wrapper


@_never_fails
def complete_agent(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Agent names from the installed DDLs."""
    return _items([(name, spec.description) for name, spec in _agent_specs(ctx).items()], incomplete)


@_never_fails
def complete_action(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The actions of the agent already on the command line."""
    spec = _agent_specs(ctx).get(ctx.params.get("agent") or "")
    if spec is None:
        return []
    return _items([(name, action.description) for name, action in spec.actions.items()], incomplete)


@_never_fails
def complete_input(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`name=` for each input of the chosen action that is not on the command line yet."""
    if "=" in incomplete:
        return []  # a value: the DDL does not list values to offer
    spec = _agent_specs(ctx).get(ctx.params.get("agent") or "")
    action = spec.actions.get(ctx.params.get("action") or "") if spec is not None else None
    if action is None:
        return []
    given: Any = ctx.params.get(param.name or "") or ()
    taken = {str(item).partition("=")[0] for item in given}
    return _items([(f"{i.name}=", i.description) for i in action.inputs if i.name not in taken], incomplete)


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, agents, actions, inputs).

    \b
    Example:
      eval "$(nmc completion bash)"                                  # this bash session
      nmc completion bash > ~/.local/share/bash-completion/completions/nmc
      nmc completion zsh > "${fpath[1]}/_nmc"                        # then: compinit
      nmc completion fish > ~/.config/fish/completions/nmc.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root()
    cls = get_completion_class(shell)
    if cls is None:  # click knows all three; a future click might drop one
        raise click.ClickException(f"this click has no {shell} completion")
    click.echo(cls(root.command, {}, root.info_name or "nmc", _COMPLETE_VAR).source())
