"""Plugin code runs isolated: whatever it raises (``SystemExit`` and ``KeyboardInterrupt`` included)
is the plugin's failure, never the program's, while a real Ctrl-C still interrupts (``_plugin_code``).
pluggy calls the hooks, so a third party's ``tryfirst``, ``trylast`` and wrappers work; each
implementation is wrapped (``guard``) so that a call made under ``hook_call`` runs only the plugins
taking part and records each failure for the caller to roll that plugin back."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


class _UserInterrupt(KeyboardInterrupt):
    """A real Ctrl-C arriving while plugin code runs (raised into it so that a blocking plugin stops)."""


class _plugin_code:
    """``with _plugin_code(): CALL`` runs plugin code whose every exception the caller catches
    (``except BaseException``: a plugin's ``SystemExit`` or ``KeyboardInterrupt`` must neither end
    the program nor fake its success), while a real Ctrl-C still interrupts. Inside the block (in
    the main thread) SIGINT is noted before it is raised into the plugin's code, so a
    ``KeyboardInterrupt`` without that note is the plugin's own; a Ctrl-C pressed meanwhile is
    delivered when the block ends, whatever the plugin raised or swallowed, as ``_UserInterrupt``
    (a ``KeyboardInterrupt``, which callers re-raise before catching the plugin's exceptions). A
    SIGINT handler of someone else's (not Python's default) is called at once, as if no plugin
    code ran, and what it raises is raised again at the end. SIG_IGN and SIG_DFL are left alone.
    Outside the main thread no signal arrives, so any ``KeyboardInterrupt`` there is the plugin's."""

    def __enter__(self) -> "_plugin_code":
        self.pressed, self.previous, self.forwarded = False, None, None
        if threading.current_thread() is threading.main_thread():
            import signal

            try:
                self.previous = signal.getsignal(signal.SIGINT)
                if callable(self.previous):  # SIG_IGN, SIG_DFL, or installed outside Python: left alone
                    signal.signal(signal.SIGINT, self._on_sigint)
                else:
                    self.previous = None
            except (ValueError, TypeError, OSError):
                self.previous = None
        return self

    def _on_sigint(self, signum: int, frame: Any) -> None:
        import signal

        self.pressed = True
        if self.previous is signal.default_int_handler:
            raise _UserInterrupt()  # stops a plugin that blocks; delivered as a real Ctrl-C on exit, even if swallowed
        try:  # someone else handles Ctrl-C here: theirs, as if no plugin code ran; what it raises is raised again
            self.previous(signum, frame)
        except BaseException as exc:  # noqa: B036
            self.forwarded = exc
            raise

    def __exit__(self, *exc: Any) -> None:
        if self.previous is None:
            return
        import signal

        signal.signal(signal.SIGINT, self.previous)
        if not self.pressed:
            return
        if self.previous is signal.default_int_handler:
            raise _UserInterrupt()  # callers re-raise it (``except _UserInterrupt: raise``)
        if isinstance(self.forwarded, KeyboardInterrupt):  # the earlier handler interrupted: not the plugin's
            raise _UserInterrupt() from self.forwarded
        if self.forwarded is not None:
            raise self.forwarded


# -- pluggy calls the hooks; each plugin's implementations run isolated ---------------------------
@dataclass
class HookCall:
    """One call of a hook by achilles: whose implementations take part (``only``; None: all but
    ``skip``), and the failures of those that raised, per plugin (the caller rolls them back)."""

    only: set[str] | None = None
    skip: set[str] = field(default_factory=set)
    failures: list[tuple[str, BaseException]] = field(default_factory=list)

    def takes_part(self, plugin: str) -> bool:
        return plugin not in self.skip and (self.only is None or plugin in self.only)

    def failed(self, plugin: str) -> bool:
        return any(name == plugin for name, _ in self.failures)


#: the hook call in progress, and the plugin whose implementation runs now
_CALL: ContextVar[HookCall | None] = ContextVar("achilles_hook_call", default=None)
_CURRENT: ContextVar[str | None] = ContextVar("achilles_hook_plugin", default=None)


def current_plugin() -> str | None:
    """The plugin whose hook implementation is running (a ``register`` callback knows its caller)."""
    return _CURRENT.get()


@contextmanager
def hook_call(call: HookCall) -> Iterator[HookCall]:
    """``with hook_call(HookCall(...)): pm.hook.NAME(...)``: pluggy orders and calls the
    implementations (``tryfirst``, ``trylast`` and wrappers work), each one isolated by ``guard``."""
    token = _CALL.set(call)
    try:
        yield call
    finally:
        _CALL.reset(token)


def _run(plugin: str, call: HookCall, step: Callable[[], Any]) -> tuple[bool, Any]:
    token = _CURRENT.set(plugin)
    try:
        with _plugin_code():
            return True, step()
    except _UserInterrupt:
        raise
    except BaseException as exc:  # noqa: B036 (see _plugin_code): plugin code never takes the tool down
        call.failures.append((plugin, exc))
        return False, None
    finally:
        _CURRENT.reset(token)


def guard(plugin: str, impl: Any) -> None:
    """Wrap a registered hook implementation of ``plugin`` so that, in a call made under
    ``hook_call``, it runs only if the plugin takes part, and whatever it raises is recorded as the
    plugin's failure instead of ending the call. Outside ``hook_call`` it runs as pluggy's own."""
    function = impl.function
    if getattr(function, "_achilles_guarded", False):
        return
    if impl.hookwrapper or getattr(impl, "wrapper", False):
        def guarded(*args: Any) -> Any:
            call = _CALL.get()
            if call is None:
                return (yield from function(*args))
            if not call.takes_part(plugin) or call.failed(plugin):
                return (yield)
            generator = function(*args)
            ok, _ = _run(plugin, call, lambda: next(generator))  # the wrapper's code before its yield
            outcome = yield
            if not ok:
                return outcome
            token = _CURRENT.set(plugin)
            try:
                with _plugin_code():
                    generator.send(outcome)  # the wrapper's code after its yield: it must stop here
            except StopIteration as stop:
                return None if impl.hookwrapper else stop.value
            except _UserInterrupt:
                raise
            except BaseException as exc:  # noqa: B036 (see _plugin_code)
                call.failures.append((plugin, exc))
                return outcome
            finally:
                _CURRENT.reset(token)
            call.failures.append((plugin, RuntimeError("its hook wrapper yielded twice")))
            return outcome
    else:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            call = _CALL.get()
            if call is None:
                return function(*args, **kwargs)
            if not call.takes_part(plugin) or call.failed(plugin):
                return None
            return _run(plugin, call, lambda: function(*args))[1]
    guarded._achilles_guarded = True  # type: ignore[attr-defined]
    impl.function = guarded
