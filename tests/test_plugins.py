"""Plugin loading: entry points, allow-list, failure isolation, duplicate names."""

import types

import pytest

import achilles
from achilles import hookimpl
from achilles.contract.loader import get_state

import toy_plugin


def test_first_party_plugins_load_from_the_installed_package():
    state = get_state()
    assert {"tasks", "archs", "probes"} <= set(state.plugins)
    assert all(state.plugins[n].distribution == "achilles" for n in ("tasks", "archs", "probes"))
    assert state.failures == []


def test_allow_list_excludes_unlisted_plugins(monkeypatch, capsys):
    # it filters third-party plugins only: achilles' own always load, whatever it says (issue 19)
    first_party = {"tasks", "archs", "probes", "recipes"}
    monkeypatch.setenv("ACHILLES_PLUGINS", "achilles:tasks")
    assert set(achilles.reload_plugins().plugins) == first_party
    monkeypatch.setenv("ACHILLES_PLUGINS", "")
    assert set(achilles.reload_plugins().plugins) == first_party
    # a bare entry-point name is no distribution: the warning says so
    monkeypatch.setenv("ACHILLES_PLUGINS", "tasks")
    assert set(achilles.reload_plugins().plugins) == first_party
    assert "achilles' own plugins always load" in capsys.readouterr().err


def test_in_process_plugin_registers_task_and_architecture():
    assert achilles.register_plugin(toy_plugin, "toy")
    assert "toy-count" in achilles.list_tasks()
    assert achilles.list_architectures("toy-*") == ["toy-mixer"]
    model = achilles.create_model("toy-mixer", d_model=4)
    assert model.config["d_model"] == 4 and model.arch_name == "toy-mixer"


def test_plugin_failing_in_registration_is_reported_and_rolled_back(capsys):
    broken = types.SimpleNamespace()

    @hookimpl
    def register_tasks(register):
        register("half-registered", toy_plugin.CountTask)
        raise RuntimeError("boom")

    broken.register_tasks = register_tasks
    assert not achilles.register_plugin(broken, "broken")
    assert "half-registered" not in achilles.list_tasks()
    failure = get_state().failures[-1]
    assert failure.name == "broken" and "RuntimeError: boom" in failure.error
    assert "plugin 'broken' skipped" in capsys.readouterr().err
    # the rest keeps working
    assert achilles.register_plugin(toy_plugin, "toy")


def test_a_taken_name_is_skipped_alone_naming_both_owners(capsys):
    assert achilles.register_plugin(toy_plugin, "toy")
    again = types.SimpleNamespace(register_tasks=toy_plugin.register_tasks,
                                  register_architectures=lambda register: register("copycat-arch", toy_plugin.TwoLayerToy))
    again.register_architectures = hookimpl(again.register_architectures)
    assert achilles.register_plugin(again, "copycat")
    conflict = get_state().conflicts[-1]
    assert (conflict.kind, conflict.name, conflict.owner, conflict.loser) == ("task", "toy-count", "toy", "copycat")
    err = capsys.readouterr().err
    assert "'copycat'" in err and "'toy'" in err and "toy-count" in err
    assert get_state().registries["task"].get("toy-count").plugin == "toy"  # the first owner keeps it
    assert "copycat-arch" in achilles.list_architectures()  # the rest of the loser loads


def test_unknown_names_list_close_matches():
    achilles.register_plugin(toy_plugin, "toy")
    with pytest.raises(achilles.UnknownNameError, match=r"did you mean: toy-mixer"):
        achilles.create_model("toy-mixr")
    with pytest.raises(achilles.UnknownNameError, match="toy-count"):
        achilles.get_task("toy-cnt")


def test_unknown_setting_is_a_config_error_naming_it():
    achilles.register_plugin(toy_plugin, "toy")
    with pytest.raises(achilles.ConfigError, match="d_modle"):
        achilles.create_model("toy-mixer", d_modle=3)


def test_wildcard_listing():
    achilles.register_plugin(toy_plugin, "toy")
    assert achilles.list_architectures("toy-*") == ["toy-mixer"]
    assert "toy-mixer" not in achilles.list_architectures(exclude="toy-*")
    assert achilles.list_tasks(["toy-c*", "nothing*"]) == ["toy-count"]
