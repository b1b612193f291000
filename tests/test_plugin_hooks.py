"""pluggy calls achilles' hooks (issue 21 point 2): a third party's ``tryfirst``, ``trylast`` and
wrappers take effect, while a failing plugin is still rolled back alone and a failing trainer-event
listener still never stops training."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import achilles
from achilles import hookimpl
from achilles.contract.isolation import HookCall, hook_call
from achilles.contract.loader import get_state


def _plugin(name: str, **hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(__name__=name, **hooks)


def _task_factory():
    from achilles.plugins.tasks.inverse import InverseTask

    return InverseTask


def test_tryfirst_and_trylast_order_a_hook_call():
    order: list[str] = []

    @hookimpl(trylast=True)
    def last(register):
        order.append("last")

    @hookimpl(tryfirst=True)
    def first(register):
        order.append("first")

    @hookimpl
    def middle(register):
        order.append("middle")

    for name, fn in (("p-first", first), ("p-last", last), ("p-middle", middle)):
        achilles.register_plugin(_plugin(name, register_probes=fn), name)
    order.clear()
    with hook_call(HookCall(only={"p-first", "p-last", "p-middle"})):
        get_state().pm.hook.register_probes(register=lambda *a, **k: None)
    assert order == ["first", "middle", "last"]


def test_tryfirst_decides_which_third_party_gets_a_contested_name(capsys):
    """Two third parties register the same task name; the tryfirst one is called first and owns it."""
    factory = _task_factory()

    @hookimpl(tryfirst=True)
    def eager(register):
        register("contested-task", factory, description="eager's")

    @hookimpl
    def plain(register):
        register("contested-task", factory, description="plain's")

    # registered in one batch, plain last (pluggy would call it first without tryfirst)
    state = get_state()
    state.add_plugin(_plugin("eager", register_tasks=eager), "eager", components=False)
    state.add_plugin(_plugin("plain", register_tasks=plain), "plain", components=False)
    state.register_pending()
    assert state.registries["task"].get("contested-task").plugin == "eager"
    assert "cannot register task 'contested-task'" in capsys.readouterr().err


def test_a_third_party_never_takes_a_first_party_name_even_tryfirst(capsys):
    factory = _task_factory()

    @hookimpl(tryfirst=True)
    def hijack(register):
        register("inverse", factory, description="not achilles'")

    achilles.register_plugin(_plugin("hijacker", register_tasks=hijack), "hijacker")
    assert get_state().registries["task"].get("inverse").plugin == "tasks"
    assert "cannot register task 'inverse'" in capsys.readouterr().err


@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])
def test_a_third_party_wrapper_runs_around_the_registration_hook(style):
    seen: list[str] = []
    if style == "wrapper":
        @hookimpl(wrapper=True)
        def around(register):
            seen.append("before")
            result = yield
            seen.append("after")
            return result
    else:
        @hookimpl(hookwrapper=True)
        def around(register):
            seen.append("before")
            yield
            seen.append("after")

    @hookimpl
    def inner(register):
        seen.append("inner")

    state = get_state()
    state.add_plugin(_plugin("wrapping", register_tasks=around), "wrapping", components=False)
    state.add_plugin(_plugin("wrapped", register_tasks=inner), "wrapped", components=False)
    state.register_pending()
    assert seen == ["before", "inner", "after"]  # one plugin's wrapper around another's implementation
    assert {"wrapping", "wrapped"} <= set(state.plugins)


def test_a_failing_wrapper_is_its_plugins_failure_alone(capsys):
    @hookimpl(wrapper=True)
    def broken(register):
        raise RuntimeError("wrapper broke")
        yield  # noqa: unreachable: makes this a generator

    factory = _task_factory()

    @hookimpl
    def fine(register):
        register("fine-task", factory)

    achilles.register_plugin(_plugin("fine", register_tasks=fine), "fine")
    assert not achilles.register_plugin(_plugin("broken", register_tasks=broken), "broken")
    state = get_state()
    assert "broken" not in state.plugins and "fine-task" in state.registries["task"]
    assert "plugin 'broken' skipped (register_tasks failed: RuntimeError: wrapper broke)" in capsys.readouterr().err


def test_trainer_event_listeners_are_called_by_pluggy_in_tryfirst_order():
    from achilles.training.events import EventEmitter, RunStarted

    order: list[str] = []

    @hookimpl(trylast=True)
    def late(event):
        order.append("late")

    @hookimpl(tryfirst=True)
    def early(event):
        order.append("early")

    @hookimpl
    def broken(event):
        raise ValueError("listener broke")

    achilles.register_plugin(_plugin("late", on_trainer_event=late), "late")
    achilles.register_plugin(_plugin("early", on_trainer_event=early), "early")
    achilles.register_plugin(_plugin("broken-listener", on_trainer_event=broken), "broken-listener")
    emitter = EventEmitter()
    event = RunStarted(run=Path("."), arch="mamba2", task="inverse", epoch=0)
    emitter.emit(event)
    emitter.emit(event)
    assert order == ["early", "late", "early", "late"]  # the broken one neither stops them nor runs twice
    assert emitter._disabled == {"broken-listener"}
