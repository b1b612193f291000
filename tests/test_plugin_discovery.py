"""One way to register (issue 21): in every first-party plugin package, a task, a probe, an
architecture or a recipe is added by writing one module that declares it (``TASKS``, ``PROBES``,
``ARCHITECTURES``, ``RECIPES``); no list is edited. The packages find those modules with
``achilles.plugins.discovery``."""

import importlib
import json
import subprocess
import sys
import textwrap
import pytest

import achilles
import achilles.plugins.archs
import achilles.plugins.probes
import achilles.plugins.recipes
import achilles.plugins.tasks
from achilles.plugins import discovery
from achilles.plugins.discovery import declarations

#: a package like achilles' own plugin packages: its __init__ registers what its modules declare
TEMP_INIT = '''\
from achilles import hookimpl
from achilles.plugins.discovery import register_declared


@hookimpl
def register_tasks(register):
    register_declared(__name__, "TASKS", register)
'''

#: a task module: one class, declared in TASKS
TASK_MODULE = '''\
from toy_plugin import CountTask


class {cls}(CountTask):
    pass


TASKS = {{"{name}": ({cls}, "{description}")}}
'''


def _forget(prefix):
    """Drop ``prefix`` and its submodules from sys.modules (and the submodules from their parent)."""
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        module = sys.modules.pop(name)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and getattr(sys.modules[parent], child, None) is module:
            delattr(sys.modules[parent], child)


@pytest.fixture
def temp_package(tmp_path, monkeypatch):
    """An importable package ``discovery_temp_pkg`` in tmp_path whose __init__ uses the helper."""
    name = "discovery_temp_pkg"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text(TEMP_INIT)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, package
    _forget(name)


def _write_module(folder, module, text):
    (folder / f"{module}.py").write_text(textwrap.dedent(text))
    importlib.invalidate_caches()


def _recorded(hook):
    """[(name, description)] that a registration hook registers, in order."""
    seen = []
    hook(lambda name, component, description=None, **extra: seen.append((name, description)))
    return seen


def test_a_new_module_in_a_package_is_registered_with_no_list_edited(temp_package):
    name, folder = temp_package
    init_before = (folder / "__init__.py").read_bytes()
    _write_module(folder, "beta", TASK_MODULE.format(cls="BetaTask", name="beta-task", description="the second"))
    _write_module(folder, "helpers", "HELPER = 1\n")  # a module that declares nothing is imported, not registered
    package = importlib.import_module(name)
    assert _recorded(package.register_tasks) == [("beta-task", "the second")]

    # adding a task is writing one module: nothing else changes
    _write_module(folder, "alpha", TASK_MODULE.format(cls="AlphaTask", name="alpha-task", description="the first"))
    assert (folder / "__init__.py").read_bytes() == init_before
    assert _recorded(package.register_tasks) == [("alpha-task", "the first"), ("beta-task", "the second")]

    # and registered as a plugin, achilles knows the task by name
    assert achilles.register_plugin(package, "discovery-temp")
    assert {"alpha-task", "beta-task"} <= set(achilles.list_tasks())
    assert type(achilles.get_task("alpha-task")).__name__ == "AlphaTask"


def test_declarations_come_in_module_order_with_their_modules(temp_package):
    name, folder = temp_package
    for module in ("b_second", "a_first", "c_none"):
        _write_module(folder, module, "" if module == "c_none" else f"RECIPES = ('{module}',)\n")
    found = [(module.__name__, value) for module, value in declarations(name, "RECIPES")]
    assert found == [(f"{name}.a_first", ("a_first",)), (f"{name}.b_second", ("b_second",))]


#: package -> (its registration hook, the module text that adds one component to it)
FIRST_PARTY = {
    "tasks": ("register_tasks",
              "from toy_plugin import CountTask\nTASKS = {'zz-discovery-task': (CountTask, 'added')}\n"),
    "probes": ("register_probes",
               "from toy_plugin import EchoProbe\nPROBES = {'zz-discovery-probe': (EchoProbe, 'added')}\n"),
    "archs": ("register_architectures",
              "ARCHITECTURES = {'zz-discovery-arch': (lambda **settings: None, 'added')}\n"),
    "recipes": ("register_recipes",
                "import types\n"
                "RECIPES = (types.SimpleNamespace(name='zz-discovery-recipe', title='added'),)\n"),
}


@pytest.mark.parametrize("kind", sorted(FIRST_PARTY))
def test_every_first_party_package_registers_a_new_module_with_no_list_edited(kind, tmp_path, monkeypatch):
    """A module dropped into the package's folder (here: a second folder on its ``__path__``) is
    registered by the package's own hook, after everything the package registered before."""
    package = getattr(achilles.plugins, kind)
    hook_name, text = FIRST_PARTY[kind]
    hook = getattr(package, hook_name)
    before = _recorded(hook)
    assert before  # the package registers its own components this way too
    module = f"zz_discovery_{kind}"
    _write_module(tmp_path, module, text)
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    try:
        after = _recorded(hook)
    finally:
        _forget(f"{package.__name__}.{module}")
    added = "arch" if kind == "archs" else kind.rstrip("s")
    assert after == [*before, (f"zz-discovery-{added}", "added")]


def test_task_classes_still_import_from_the_package():
    from achilles.plugins.tasks import CompositeTask, MQARTask

    assert CompositeTask.__module__ == "achilles.plugins.tasks.composite" and MQARTask.__name__ == "MQARTask"
    assert "CompositeSymmetricTask" in achilles.plugins.tasks.__all__
    with pytest.raises(AttributeError):
        achilles.plugins.tasks.NoSuchTask  # noqa: B018


def test_importing_the_first_party_packages_imports_no_torch():
    code = ("import json, sys\n"
            "import achilles.plugins.tasks, achilles.plugins.probes, achilles.plugins.archs, achilles.plugins.recipes\n"
            "print(json.dumps([m for m in ('torch', 'numpy') if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_registration_hooks_only_call_the_discovery_helper():
    """No package keeps a hand list: each hook's code names no component module of its package,
    and registers through the helpers of achilles.plugins.discovery."""
    for kind, (hook_name, _) in FIRST_PARTY.items():
        package = getattr(achilles.plugins, kind)
        code = getattr(package, hook_name).__code__
        names = set(code.co_names) | {c for c in code.co_consts if isinstance(c, str)}
        own_modules = {m.__name__.rpartition(".")[2] for m, _ in declarations(package.__name__, "__name__")}
        assert not names & own_modules, f"{kind}: {hook_name} names {sorted(names & own_modules)}"
        helpers = {n for n in ("register_declared", "declarations") if package.__dict__.get(n) is getattr(discovery, n)}
        assert helpers and names & (helpers | {"factories"}), f"{kind}: {hook_name} does not use the helper"
