"""First-party tasks of the three papers (definitions pinned in docs/tasks.md).

The task classes load when the tasks are registered (or on first use of a name below), so that
importing this plugin, as ``achilles --help`` does to find plugin commands, imports no torch."""

import importlib

from achilles import hookimpl

#: public name -> module of this package that defines it
_CLASSES = {"CompositeSymmetricTask": "composite", "CompositeTask": "composite", "CopyTask": "copy_task",
            "EditDistanceTask": "cot", "InverseTask": "inverse", "LISTask": "cot", "MQARTask": "mqar"}

__all__ = sorted(_CLASSES)


def __getattr__(name):
    if name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)


@hookimpl
def register_tasks(register):
    from .composite import CompositeSymmetricTask, CompositeTask
    from .copy_task import CopyTask
    from .cot import EditDistanceTask, LISTask
    from .inverse import InverseTask
    from .mqar import MQARTask

    register("composite", CompositeTask,
             description="composite function task: key + anchor pair; 43 held out (Achilles' Heel §3.3)")
    register("composite-symmetric", CompositeSymmetricTask,
             description="composite function task under full symmetry, anchors 0-4 (Achilles' Heel C.1)")
    register("inverse", InverseTask,
             description="inverse sequence matching: find the key whose reverse is the query (Achilles' Heel §3.4)")
    register("mqar", MQARTask,
             description="multi-query associative recall with placement, n-gram and noise variants")
    register("copy", CopyTask, description="copy a random string after a separator (COPY and CoT)")
    register("cot-lis", LISTask,
             description="longest increasing subsequence with a chain of thought (COPY and CoT)")
    register("cot-ed", EditDistanceTask,
             description="edit distance with a row-by-row chain of thought (COPY and CoT)")
