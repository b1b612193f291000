"""One check the per-architecture tests share: a run interrupted in its second epoch and resumed
ends with exactly the weights of the same run trained straight through."""

from __future__ import annotations

from pathlib import Path

import torch


def assert_resumes_exactly(arch: str, task: str, tmp_path: Path, *, site: str = "resid.0", **settings) -> Path:
    """Train ``arch`` on ``task`` straight, then again interrupted (Ctrl-C raised from hook ``site``
    early in epoch 2) and resumed; assert both end finished with bit-identical weights. ``settings``
    go to ``start_run``. Returns the resumed run's folder."""
    from achilles.models.loading import load_run
    from achilles.training.trainer import resume_run, start_run

    straight = start_run(arch, task, out=tmp_path / "straight", **settings).fit()
    assert straight.status == "finished"
    trainer = start_run(arch, task, out=tmp_path / "cut", **settings)
    calls = {"n": 0}

    def interrupt_in_epoch_two(value, hook):
        calls["n"] += 1
        if trainer.model.training and calls["n"] > 5:  # 4 steps per epoch: epoch 2 (past 2 evaluations)
            raise KeyboardInterrupt
        return value

    with trainer.model.hooks(edit={site: interrupt_in_epoch_two}):
        assert trainer.fit().status == "interrupted"
    assert resume_run(tmp_path / "cut", progress=False).fit().status == "finished"
    a, b = load_run(tmp_path / "straight").model.state_dict(), load_run(tmp_path / "cut").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return tmp_path / "cut"
