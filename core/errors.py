"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

import difflib


class AchillesError(Exception):
    """An error whose message is meant for the user, not a traceback."""

    exit_code = 2


class UnknownNameError(AchillesError, KeyError):
    """A task, architecture, probe or zoo id that nobody registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        close = difflib.get_close_matches(name, self.known, n=5, cutoff=0.5)
        # Prefix matches catch 'mamba' -> 'mamba2', which difflib ranks poorly.
        close += [k for k in self.known if k.startswith(name) and k not in close][: 5 - len(close)]
        if close:
            hint = "did you mean: " + ", ".join(close) + "?"
        elif self.known:
            hint = "known: " + ", ".join(self.known[:20]) + (" ..." if len(self.known) > 20 else "")
        else:
            hint = "none are registered (is the plugin installed?)"
        super().__init__(f"unknown {kind} {name!r}; {hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateNameError(AchillesError):
    """Two plugins registered the same name."""


class ConfigError(AchillesError):
    """An impossible setting: the message names the setting and says why."""

    def __init__(self, setting: str, why: str):
        self.setting = setting
        super().__init__(f"invalid setting {setting}: {why}")


class CheckpointError(AchillesError):
    """A run folder or checkpoint that is missing, corrupt or tampered with."""


class TrainingFailed(AchillesError):
    """A run ended failed: its weights or evaluation became non-finite (the last finite
    checkpoint is kept)."""

    exit_code = 1


class PluginError(AchillesError):
    """A plugin broke the contract of docs/plugins.md; the message says what its author must fix."""
