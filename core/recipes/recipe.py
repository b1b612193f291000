"""What a recipe is: plain data saying which runs reproduce a finding, what to evaluate and probe
on them, which figures to draw, and which claims of the paper to check.

A recipe is declared once, like a zoology sweep config::

    Recipe(
        name="achilles-fig9",
        title="Inverse sequence matching: Mamba2 fails, Transformer and residual Mamba2 generalise",
        paper=ACHILLES_HEEL, source="Figure 9, §5",
        plans={"quick": Plan(runs=[RunGroup("mamba2", "mamba2", "inverse", seeds=3, train={...}), ...],
                             departures="80,000 training samples for 6 epochs instead of ..."),
               "paper": Plan(runs=[...], departures="none")},
        claims=[Claim("mamba2-test-chance", "Mamba2's test accuracy stays at chance (20%)", ...)],
        figures=[Figure("accuracy", draw_accuracy_bars, "test and OOD accuracy per architecture")],
    )

Claims carry their own measurement (a function of the recipe's results) and rule; verdicts are
computed by ``achilles.recipes.measure``, never written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from achilles.errors import ConfigError
from achilles.contract.task import Paper

if TYPE_CHECKING:  # pragma: no cover
    from achilles.recipes.statistics import Measurement, Rule
    from achilles.recipes.recipe_results import RecipeResults

PROFILES = ("quick", "paper")


@dataclass(frozen=True)
class Evaluation:
    """An extra evaluation of every run of a group on a variant of its task (e.g. MQAR trained on
    ``standard`` placements, evaluated on ``last``). Results land in ``RUN/evals/<name>.json``."""

    name: str
    task_settings: Mapping[str, Any] = field(default_factory=dict)
    splits: tuple[str, ...] = ("test",)
    samples: int | None = None  # per split; None: the run's evaluation size


@dataclass(frozen=True)
class Until:
    """A premise some runs must meet (e.g. "learned the composite solution"): the runner adds seeds
    to the group until ``need`` finished runs pass ``test``, or ``cap`` seeds have been trained."""

    text: str
    test: Callable[[Any], bool]
    need: int = 3
    cap: int = 9


@dataclass(frozen=True)
class RunGroup:
    """Runs trained like one sweep: one architecture on one task, an optional grid, N seeds.

    ``model`` / ``task_settings`` / ``train`` are the settings every run of the group shares
    (``train`` overrides the training profile: epochs, lr_peak, train_samples, eval_samples,
    batch_size, ...); ``grid`` maps a setting (``gamma``, ``n_layers``, ``task.X``, ``train.X``)
    to its values."""

    name: str
    arch: str
    task: str
    model: Mapping[str, Any] = field(default_factory=dict)
    task_settings: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, list] = field(default_factory=dict)
    seeds: int = 3
    evals: tuple[Evaluation, ...] = ()
    #: train more seeds (one at a time, up to ``until.cap``) until ``until.need`` runs pass ``until.test``
    until: "Until | None" = None

    @property
    def cells(self) -> int:
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n

    @property
    def runs(self) -> int:
        return self.cells * self.seeds


@dataclass(frozen=True)
class ProbeStep:
    """Run probe ``probe`` on every run of group ``on`` (optionally only the grid cells matching
    ``where``) with ``options``; results land in ``RUN/probes/<probe>/``."""

    probe: str
    on: str
    options: Mapping[str, Any] = field(default_factory=dict)
    where: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """The runs and probes of one profile, and how this profile departs from the paper."""

    runs: tuple[RunGroup, ...]
    probes: tuple[ProbeStep, ...] = ()
    departures: str = ""
    #: the training profile the runs start from before their ``train`` overrides
    training_profile: str = "quick"

    def group(self, name: str) -> RunGroup:
        for group in self.runs:
            if group.name == name:
                return group
        raise KeyError(name)


@dataclass(frozen=True)
class Source:
    """Where a paper states a claim, and the number it gives (as the paper writes it)."""

    paper: Paper
    where: str            # "Figure 9a", "§4.2", "Table 1"
    value: str = ""       # "≈100% train, ≈20% test"; empty when the paper gives no number


@dataclass(frozen=True)
class Precondition:
    """What must hold for a claim to be testable at all (e.g. "the seen pairs are fitted"): when
    it does not hold, the claim is ``inconclusive``, whatever its own measurement says."""

    text: str
    measure: Callable[["RecipeResults"], "Measurement"]
    rule: "Rule"


@dataclass(frozen=True)
class Claim:
    """A paper's statement, how this recipe measures it, and the rule that decides the verdict."""

    id: str
    statement: str
    source: Source
    measure: Callable[["RecipeResults"], "Measurement"]
    rule: "Rule"
    measured_as: str      # what the number is, in words: "test accuracy of mamba2, mean over seeds"
    requires: tuple[Precondition, ...] = ()
    #: when the claim ends inconclusive: which budget or how many runs would decide it
    decides: str = ""


@dataclass(frozen=True)
class Figure:
    """A figure of the report: ``draw(results, path)`` writes a PNG at ``path``."""

    name: str
    draw: Callable[["RecipeResults", Any], None]
    caption: str


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    paper: Paper
    source: str
    summary: str
    plans: Mapping[str, Plan]
    claims: tuple[Claim, ...]
    figures: tuple[Figure, ...] = ()
    #: the paper's budget, for the report's "this run vs the paper" table
    paper_budget: Mapping[str, Any] = field(default_factory=dict)
    #: the architecture the paper studies: every run group of it is the subject (``--subject`` swaps it)
    subject: str = "mamba2"
    #: why no other subject makes sense for this recipe ("" when it can be swapped)
    fixed_subject: str = ""
    #: set by ``with_subject``: the architecture measured in the subject's place, and what changed
    tested_subject: str = ""
    subject_note: str = ""
    #: set by ``with_subject``: the run groups now trained as ``tested_subject`` (named as in the paper's plan)
    swapped_groups: tuple[str, ...] = ()

    def plan(self, profile: str) -> Plan:
        if profile not in self.plans:
            raise ConfigError("--profile", f"recipe {self.name!r} has no {profile!r} profile "
                                           f"(it has: {', '.join(self.plans)})")
        return self.plans[profile]

    def check(self) -> "Recipe":
        """The recipe itself if its structure holds together, else a ``ValueError`` naming what is
        wrong: it declares at least one plan; within each plan no two run groups share a name and
        every probe step runs on one of that plan's groups; no two claims share an id.

        ``get_recipe`` calls it each time a recipe is looked up (registering one checks nothing), so
        a malformed recipe fails before anything trains. It checks these names only: whether the
        groups' architectures, tasks and probes are registered, and whether the claims and figures
        can measure what they name, are left to planning, running and judging the recipe."""
        if not self.plans:
            raise ValueError(f"recipe {self.name!r} declares no plan")
        for profile, plan in self.plans.items():
            names = [g.name for g in plan.runs]
            if len(set(names)) != len(names):
                raise ValueError(f"recipe {self.name!r} ({profile}): two run groups share a name")
            for step in plan.probes:
                if step.on not in names:
                    raise ValueError(f"recipe {self.name!r} ({profile}): probe {step.probe!r} runs on "
                                     f"unknown group {step.on!r}")
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise ValueError(f"recipe {self.name!r}: two claims share an id")
        return self


def with_seeds(plan: Plan, seeds: int) -> Plan:
    """The plan with every group trained on ``seeds`` seeds (``--seeds N``)."""
    from dataclasses import replace

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError("--seeds", f"must be a whole number of at least 1, got {seeds!r}")
    return replace(plan, runs=tuple(replace(g, seeds=seeds) for g in plan.runs))


def with_train_overrides(plan: Plan, overrides: Mapping[str, Any]) -> Plan:
    """The plan with training ``overrides`` (``--train-set epochs=2``) applied to every group."""
    from dataclasses import replace

    if not overrides:
        return plan
    from dataclasses import fields

    from achilles.training.profiles import TrainSettings

    known = sorted(f.name for f in fields(TrainSettings) if f.name != "profile")
    for key in overrides:
        if key not in known:
            raise ConfigError(f"--train-set {key}", f"is not a training setting (settings: {', '.join(known)})")
    return replace(plan, runs=tuple(replace(g, train={**g.train, **overrides}) for g in plan.runs))
