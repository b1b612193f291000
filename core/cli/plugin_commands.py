"""Plugin commands on the ``achilles`` CLI: pluggy calls every plugin's ``register_commands`` with
one group that files each command under the plugin adding it, so no plugin can replace or remove
a built-in command or another plugin's (a taken name is skipped with a warning naming both)."""

from __future__ import annotations

import sys
from typing import Any

from achilles.contract.isolation import HookCall, current_plugin, hook_call
from achilles.contract.loader import NameConflict, get_state


_attached: dict[str, str] = {}  # command name -> plugin, of the commands attached to the CLI
_attached_for: list = [None]  # the plugin state they came from (attached once per state)


def attach_plugin_commands(cli: Any, builtin: frozenset[str]) -> None:
    """Add the plugins' commands to ``cli``. Each plugin registers into a group of its own, so it
    can neither replace nor remove a built-in command or another plugin's: a taken name is
    skipped with a warning naming both owners."""
    import click

    state = get_state(components=False)  # commands need the plugins, not their components
    if _attached_for[0] is state:
        return
    _attached_for[0] = state
    for name in list(_attached):  # those of an earlier plugin state (after reload_plugins)
        cli.commands.pop(name, None)
    _attached.clear()
    staging: dict[str, click.Group] = {}

    class FiledByPlugin(click.Group):
        """The group pluggy hands every plugin: a command lands in its plugin's own staging group."""

        def add_command(self, cmd: click.Command, name: str | None = None) -> None:
            plugin = current_plugin() or "?"
            staging.setdefault(plugin, click.Group(name=cli.name)).add_command(cmd, name)

    call = HookCall()
    with hook_call(call):
        state.pm.hook.register_commands(cli=FiledByPlugin(name=cli.name))
    for plugin, exc in call.failures:
        state.report_failure(plugin, "register_commands", exc)
    for plugin in sorted(staging, key=lambda p: list(state.plugins).index(p) if p in state.plugins else len(state.plugins)):
        if call.failed(plugin):
            continue
        info = state.plugins.get(plugin)
        for name, command in staging[plugin].commands.items():
            if name in builtin or name in cli.commands:
                owner = "achilles (built-in)" if name in builtin else _attached.get(name, "another plugin")
                state.conflicts.append(NameConflict("command", name, owner, plugin))
                whose = "a built-in command of achilles" if name in builtin else f"added by plugin {owner!r}"
                print(f"achilles: warning: plugin {state._describe(plugin)} cannot add command {name!r}: it is "
                      f"{whose}; {plugin}'s {name!r} is skipped, the rest of it loads", file=sys.stderr)
                continue
            cli.add_command(command, name)
            _attached[name] = plugin
            if info is not None and name not in info.registered.get("command", []):
                info.registered.setdefault("command", []).append(name)
