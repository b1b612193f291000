"""The Task interface: a named, seeded generator of token sequences with metrics, and what it
declares about itself for the rest of achilles (its paper, variant settings, capabilities)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Sequence

import torch


@dataclass(frozen=True)
class Paper:
    """The paper a task comes from: model cards cite it, ``docs/tasks.md`` points into it.

    The one paper record of achilles: a task may also declare its paper as a dict or a bare arXiv
    id (``achilles.contract.declarations.task_papers`` reads those), and the model card gathers
    them into this class, with the fields a declaration left out empty."""

    title: str
    #: arXiv identifier without prefix or version, e.g. ``"2509.17514"``
    arxiv: str
    #: where in the paper the task is defined, e.g. ``"§3.3, appendix C.1"`` (empty: unknown)
    section: str = ""
    #: a short name for tables and reports, e.g. ``"Achilles' Heel"`` (empty: the title)
    short: str = ""
    #: the BibTeX entry model cards print in their citation block (empty: a card writes a minimal
    #: ``@misc`` from the title and arXiv id)
    bibtex: str = ""

    @property
    def url(self) -> str:
        """The arXiv abstract page (empty when no arXiv id is known)."""
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else ""

    @property
    def label(self) -> str:
        return self.short or self.title

    def as_dict(self) -> dict[str, str]:
        """``{"title", "arxiv", "section", "short"}``: the form a run record or a card stores (the
        BibTeX is static text, read from the declaration, never stored)."""
        return {k: v for k, v in asdict(self).items() if k != "bibtex"}


@dataclass
class Batch:
    """A set of samples: ``tokens`` and ``targets`` are (N, S) int64; ``mask`` (N, S) bool
    marks the positions that carry loss and metrics; ``meta`` holds per-sample tensors
    whose first dimension is N (anchor pair, key position, length, ...)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> "Batch":
        return Batch(self.tokens[index], self.targets[index], self.mask[index],
                     {k: v[index] for k, v in self.meta.items()})

    def to(self, device) -> "Batch":
        return Batch(self.tokens.to(device), self.targets.to(device), self.mask.to(device),
                     {k: v.to(device) for k, v in self.meta.items()})

    @staticmethod
    def cat(batches: Sequence["Batch"]) -> "Batch":
        keys = batches[0].meta.keys()
        return Batch(torch.cat([b.tokens for b in batches]), torch.cat([b.targets for b in batches]),
                     torch.cat([b.mask for b in batches]),
                     {k: torch.cat([b.meta[k] for b in batches]) for k in keys})


class Task:
    """Base class for tasks. A subclass sets the class attributes and implements
    ``generate`` and ``metrics``; ``__init__`` takes the task's settings as keyword
    arguments, validates them (raise ``achilles.ConfigError`` naming the setting) and
    stores them all, defaults included, in ``self.config`` so that
    ``achilles.get_task(name, **task.config)`` rebuilds the same task.

    Settings that depend on the model (``n_layers`` for ``inverse``) are listed in
    ``model_settings``: the trainer passes the architecture's value for them.

    What the rest of achilles knows about a task, it learns from these declarations, never from
    the task's name: ``paper`` (cards cite it), ``variant_settings`` (cards and zoo ids show
    them), ``capabilities`` (probes require them; ``Probe.check`` names the missing one).
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: metric name (a key of ``metrics()``) shown in progress bars and zoo tables
    headline_metric: ClassVar[str] = "acc"
    #: the split whose headline metric summarises generalisation
    headline_split: ClassVar[str] = "test"
    #: the rate a guessing model reaches, per metric (e.g. ``{"acc": 0.2}`` for one answer in five);
    #: figures draw it as a baseline. Empty: not declared (nothing is drawn)
    chance: ClassVar[dict[str, float]] = {}
    #: metrics a sweep's phase diagram draws, one heatmap each (``split.metric``, or a metric of
    #: the headline split); empty: the headline metric
    phase_metrics: ClassVar[tuple[str, ...]] = ()
    model_settings: ClassVar[tuple[str, ...]] = ()
    #: the paper's model settings for this task (e.g. ``{"d_model": 128}``); CLI flags override
    model_defaults: ClassVar[dict[str, Any]] = {}
    #: the paper's training settings for this task (e.g. ``{"batch_size": 2048}``)
    training_defaults: ClassVar[dict[str, Any]] = {}
    #: the paper this task reproduces, with the section that defines it (None: not from a paper)
    paper: ClassVar[Paper | None] = None
    #: the settings, in order, whose values name a variant of the task (e.g. where the pairs of
    #: an associative-recall task sit); a card's dataset name or a zoo id may show their values
    variant_settings: ClassVar[tuple[str, ...]] = ()
    #: what the task offers beyond the base interface, as names a probe can require in
    #: ``Probe.requires``; each name stands for a contract documented by the task that declares
    #: it (e.g. ``"pair_shift"``: an anchor-pair label table and key positions in the batch meta)
    capabilities: ClassVar[tuple[str, ...]] = ()
    #: old setting name -> new name, so run folders recorded with an old name still load
    renamed_settings: ClassVar[dict[str, str]] = {}

    def __init__(self, **config: Any):
        self.config: dict[str, Any] = dict(config)

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def seq_len(self) -> int:
        """Sequence length (the longest, for tasks with variable-length samples)."""
        raise NotImplementedError

    def split_sizes(self) -> dict[str, int]:
        """Default number of samples per split (the paper's sizes)."""
        raise NotImplementedError

    def generate(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        """``n`` samples of ``split`` (default: ``split_sizes()[split]``), deterministic in ``seed``."""
        raise NotImplementedError

    def metrics(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Named scores of ``logits`` (N, S, V) on ``batch``."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The loss of full ``logits`` (N, S, V): ``masked_loss`` of the scored positions' rows."""
        return self.masked_loss(logits[batch.mask], batch)

    def masked_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The loss from the logits at the scored positions only: ``logits`` (K, V) are the rows
        of ``batch.mask.nonzero()`` in row-major order (what ``model(tokens, logits_mask=batch.mask)``
        returns). Default: mean cross-entropy. The trainer calls this one; a task that overrides
        ``loss`` alone is given full logits instead (``achilles.models.logits_mask.reads_selected_logits``)."""
        return torch.nn.functional.cross_entropy(logits.float(), batch.targets[batch.mask])

    def token_str(self, token: int) -> str:
        return str(int(token))

    def describe(self, batch: Batch, i: int) -> str:
        """One sample as text, with its targets marked."""
        toks = [self.token_str(t) for t in batch.tokens[i].tolist()]
        tgts = [self.token_str(t) if m else "" for t, m in zip(batch.targets[i].tolist(), batch.mask[i].tolist())]
        meta = ", ".join(f"{k}={v[i].tolist()}" for k, v in batch.meta.items())
        targets = " ".join(f"@{j}->{t}" for j, t in enumerate(tgts) if t)
        return f"{' '.join(toks)}   targets: {targets}" + (f"   [{meta}]" if meta else "")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"
