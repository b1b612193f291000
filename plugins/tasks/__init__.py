"""First-party tasks of the three papers (definitions pinned in docs/tasks.md)."""

from achilles import hookimpl

from .composite import CompositeSymmetricTask, CompositeTask
from .copy_task import CopyTask
from .cot import EditDistanceTask, LISTask
from .inverse import InverseTask
from .mqar import MQARTask

__all__ = ["CompositeSymmetricTask", "CompositeTask", "CopyTask", "EditDistanceTask", "InverseTask",
           "LISTask", "MQARTask"]


@hookimpl
def register_tasks(register):
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
