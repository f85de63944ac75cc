"""The tasks of a sweep: one record each, in one registry that code outside ropekit adds to.

A task is of one of two kinds, and the sweep runs each kind its own way. A :class:`DocumentTask` scores
the corpus's documents at each length, its passes shared across lengths and ropes where the mode lets
them (``ropekit/sweep/perplexity.py`` plans, runs and writes them; its settings are the spec's ``mode``,
``stride`` and ``n_docs``): ropekit's perplexity, ``perplexity.py`` beside this file. A :class:`TrialTask`
asks a question at a length: each trial is a prompt of exactly that many tokens with the
answer's tokens after it (a :class:`ropekit.eval.retrieval.Trial`), scored by ``score_answer`` in one
forward pass. Its record holds everything the sweep needs to know of it, so no other module names it:

* ``settings``: the frozen dataclass of its spec table (``[passkey]``): :class:`TrialSettings`'s keys
  (``trials``, ``depths``, ``seed``) and its own; unknown keys are refused from the fields, and its
  ``__post_init__`` raises :class:`TaskSettingsError` naming a bad value.
* ``build(tokenizer, settings, length, depth, trial, documents)``: one trial's prompt and answer, a
  function of those values only (every rope and layer mix of a model reads the same prompts);
  ``documents`` are the corpus's token ids (without special tokens) for a task with ``reads_corpus``,
  whose cells are then keyed by the corpus too. A task whose settings say it places no needle at a
  depth (``placed = False``: RULER's, which place theirs at random) has one cell per length, depth None.
* ``match(output, references)``: for a task scored on what the model writes (RULER's), the score in
  [0, 1] of the answer greedy decoding generates (up to the trial's ``max_new_tokens``) against the
  trial's ``references``; the cell's accuracy is their mean, and ``metric`` names it. Without it a trial is
  scored on its answer's tokens alone, teacher-forced (``exact``), and every task's trials also get that
  log-probability.
* ``score(model, tokenizer, settings, trial)`` and ``summarize(trials, seed)``: for a task that scores a
  trial its own way (LongPPL's documents): a trial's numbers (a dict, stored as JSON in trials.csv's
  ``scores``), and its cell's results.csv columns from its trials' numbers (the ``columns`` it fills,
  each a results.csv column); ``passes(config, settings, length)`` the forward lengths one trial runs,
  which the cost model prices, and ``shared_passes`` those of them every rope and layer mix of the model reads
  alike (LongPPL's shared evaluator: a process runs them once, the dry run prices them once); ``shown``
  (:class:`OwnColumns`) how the report shows those columns.

ropekit's own trial tasks are ``passkey.py``, ``needle.py``, RULER's (``ruler.py``, ``ruler_other.py``) and
``longppl.py`` beside this file; a notebook adds one with :func:`register_task`, an installed package through
the ``ropekit.tasks`` entry-point group (each entry point names a :class:`TrialTask`), so ``ropekit sweep
--tasks NAME``, ``status``, ``report`` and the dry run find it without an import. A task with ``default``
set is what a spec that names no ``tasks`` runs (perplexity).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..plugins import Registry
from ..rope.checks import is_count

if TYPE_CHECKING:
    from ..eval.retrieval import Trial

ENTRY_POINTS = "ropekit.tasks"
DEPTHS = tuple(range(0, 101, 10))  # the needle-in-a-haystack grid: 0, 10, ..., 100 % of the haystack


class TaskSettingsError(ValueError):
    """A task table's value that cannot run; the message names ``task.key`` and what is allowed."""


@dataclass(frozen=True)
class TrialSettings:
    """What every trial task's table takes: ``trials`` prompts per (length, depth), the needle after
    each of ``depths`` percent of the haystack, prompts drawn from ``seed``. A task's own settings
    subclass this with its keys (each a field with a default)."""

    task: str
    trials: int = 5
    depths: tuple[float, ...] = DEPTHS
    seed: int = 0

    placed = True  # its prompts put the needle at a depth of the haystack: a cell per depth (else one, depth None)

    def __post_init__(self) -> None:
        where = self.task
        if not is_count(self.trials):
            raise TaskSettingsError(f"{where}.trials = {self.trials!r} is not allowed; expected an integer >= 1")
        if not isinstance(self.depths, tuple):
            raise TaskSettingsError(f"{where}.depths = {self.depths!r} is not allowed; expected a list of percentages")
        if not self.depths:
            raise TaskSettingsError(f"{where}.depths is empty; give at least one depth in [0, 100]")
        for depth in self.depths:
            if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 <= depth <= 100:
                raise TaskSettingsError(
                    f"{where}.depths: {depth!r} is not allowed; a depth is a percentage of the haystack in [0, 100]"
                )
        if len(set(self.depths)) < len(self.depths):
            raise TaskSettingsError(f"{where}.depths {list(self.depths)} repeat a depth; give each once")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise TaskSettingsError(f"{where}.seed = {self.seed!r} is not allowed; expected an integer >= 0")

    @classmethod
    def table_keys(cls) -> tuple[str, ...]:
        """The keys its spec table takes: its fields but ``task`` (and ``depths`` where it places nothing)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "task" and (cls.placed or f.name != "depths"))

    @property
    def cell_depths(self) -> tuple[float | None, ...]:
        """The depths its cells are at: ``depths``, or one cell (depth None) for a task that places nothing."""
        return self.depths if self.placed else (None,)

    def to_dict(self) -> dict[str, Any]:
        """The keys given or defaulted, as a spec table (None: left to the task)."""
        data = {key: getattr(self, key) for key in self.table_keys()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items() if v is not None}

    def definition(self) -> dict[str, Any]:
        """What decides its cells' prompts, for their keys (``ropekit.sweep.store.cell_key``)."""
        return {"settings": self.to_dict()}

    def sources(self) -> dict[str, dict[str, str]]:
        """The local texts its prompts read besides the corpus, each ``{"source": where, "sha256": of what was
        read}`` by what it is (RULER's essay, a QA dataset), as meta.json and the report name them; none here."""
        return {}


@dataclass(frozen=True)
class OwnColumns:
    """How the report shows a task's own results.csv columns (a task that scores its own way). The sweep
    writes it to meta.json (``retrieval.own``), so the report, which reads no registry, shows any task's:
    a section titled ``title`` stating ``text``, a table of ``figure`` [its interval], the ``beside`` column
    [its interval] and ``more``, and a figure of ``figure`` (solid, its interval as error bars) and
    ``beside`` (dashed) against length. A column's interval is its ``_lo`` and ``_hi`` columns, where the
    task fills them."""

    title: str
    figure: str  # the column drawn against length
    label: str = ""  # its name in tables and on the axis (default: the column's)
    beside: str = ""  # a results.csv column drawn dashed beside it (LongPPL: ppl, of the same text)
    beside_label: str = ""
    more: tuple[tuple[str, str], ...] = ()  # further columns of its table: (column, its name there)
    text: str = ""  # the conventions the section states: what the figure is, its interval
    log: bool = True  # a log y axis

    def to_dict(self) -> dict[str, Any]:
        """As meta.json keeps it (every label filled in)."""
        data = dataclasses.asdict(self)
        return {**data, "label": self.label or self.figure, "beside_label": self.beside_label or self.beside}


@dataclass(frozen=True)
class Task:
    """What every task record has: its name, as a spec's ``tasks`` list and results.csv's ``task`` say it."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} is not allowed; expected an identifier")


@dataclass(frozen=True)
class DocumentTask(Task):
    """A task that scores the corpus's documents at each length (module docstring): ``columns`` the results.csv
    columns its rows fill, ``progress`` the column the progress bar shows of a finished cell. The sweep's
    document passes compute perplexity's numbers, so this kind is ropekit's own: plugins add trial tasks."""

    description: str = ""
    columns: tuple[str, ...] = ()
    progress: str = ""
    default: bool = False  # what a spec that names no tasks runs


@dataclass(frozen=True)
class TrialTask(Task):
    """One trial task (module docstring)."""

    settings: type[TrialSettings]
    build: Callable[[Any, TrialSettings, int, float | None, int, Sequence[Sequence[int]] | None], Trial]
    reads_corpus: bool = False
    description: str = ""
    match: Callable[[str, Sequence[str]], float] | None = None  # a generated answer's score against the trial's
    generates: int = 0  # with ``match``: the tokens greedy decoding may write per trial (what the cost model prices)
    score: Callable[[Any, Any, TrialSettings, Trial], dict[str, Any]] | None = None  # its own numbers per trial
    summarize: Callable[[list[dict[str, Any]], int], dict[str, str]] | None = None  # a cell's columns from them
    columns: tuple[str, ...] = ()  # the results.csv columns ``summarize`` fills
    passes: Callable[[Any, TrialSettings, int], list[int]] | None = None  # with ``score``: one trial's forwards
    shared_passes: Callable[[Any, TrialSettings, int], list[int]] | None = None  # with ``passes``: read once
    metric: str = ""  # with ``match``: its score's name (RULER's string_match_all), as the report and tables say it
    shown: OwnColumns | None = None  # with ``columns``: how the report shows them (default: a table of them)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.settings, type) and issubclass(self.settings, TrialSettings)):
            raise ValueError(f"task {self.name!r}: settings must be a TrialSettings dataclass of its table's keys")
        if not callable(self.build):
            raise ValueError(f"task {self.name!r}: build must be a function (tokenizer, settings, length, ...)")
        if (self.match is None) != (self.generates == 0) or not is_count(self.generates, 0):
            raise ValueError(f"task {self.name!r}: a task scored on what it generates gives match and generates > 0")
        if len({self.score is None, self.summarize is None, self.passes is None}) > 1 or (self.score and self.match):
            raise ValueError(f"task {self.name!r}: a task that scores its own way gives score, summarize and passes")
        if self.shared_passes is not None and self.passes is None:
            raise ValueError(f"task {self.name!r}: shared_passes are some of a task's own passes: give passes too")
        if bool(self.columns) != bool(self.summarize) or (self.shown is not None and not self.columns):
            raise ValueError(f"task {self.name!r}: the columns summarize fills are given with it (and shown with them)")
        for column in self.columns:
            if not isinstance(column, str) or not column.isidentifier():
                raise ValueError(f"task {self.name!r}: column {column!r} cannot name a results.csv column")

    def own_columns(self) -> OwnColumns | None:
        """How the report shows the columns it fills (``shown``, else a table of them); None: it fills none."""
        if not self.columns:
            return None
        if self.shown is not None:
            return self.shown
        first, rest = self.columns[0], self.columns[1:]
        return OwnColumns(self.name, first, more=tuple((c, c) for c in rest if c not in (first + "_lo", first + "_hi")))

    def table(self, table: Any) -> TrialSettings:
        """Its spec table (a dict; None: every key defaulted) as its settings, checked key by key."""
        table = {} if table is None else table
        if not isinstance(table, dict):
            raise TaskSettingsError(
                f"{self.name} = {table!r} is not allowed; expected a table of {', '.join(self.settings.table_keys())}"
            )
        for key in table:
            if key not in self.settings.table_keys():
                others = [f"[{name}]" for name, task in trial_tasks().items() if key in task.settings.table_keys()]
                where = f" ({key!r} is a key of the {' and '.join(others)} table)" if others else ""
                raise TaskSettingsError(
                    f"{self.name}: unknown key {key!r}; allowed keys: {', '.join(self.settings.table_keys())}{where}"
                )
        if "depths" in table and isinstance(table["depths"], list):
            table = {**table, "depths": tuple(table["depths"])}
        try:
            return self.settings(self.name, **table)
        except TypeError as err:
            raise TaskSettingsError(f"{self.name}: {err}") from None


TASKS: Registry[Task] = Registry(
    "task",
    Task,
    ENTRY_POINTS,
    [
        "ropekit.tasks.perplexity",
        "ropekit.tasks.passkey",
        "ropekit.tasks.needle",
        "ropekit.tasks.ruler",
        "ropekit.tasks.ruler_other",
        "ropekit.tasks.longppl",
    ],
)


def register_task(record: Task, *, replace: bool = False) -> Task:
    """Add a task to the registry and return it; a name already registered is refused unless
    ``replace=True``."""
    if not isinstance(record, TrialTask):  # the sweep's document passes compute perplexity's numbers only
        raise ValueError(f"{record!r} is not a trial task; expected a TrialTask")
    return TASKS.register(record, replace=replace)


def tasks() -> dict[str, Task]:
    """Every registered task of either kind, installed plugins included, by name (ropekit's own first)."""
    return TASKS.all()


def trial_tasks() -> dict[str, TrialTask]:
    """Every registered trial task, installed plugins included, by name (ropekit's own first)."""
    return {name: task for name, task in TASKS.all().items() if isinstance(task, TrialTask)}


def default_tasks() -> tuple[str, ...]:
    """What a spec that names no ``tasks`` runs: the tasks registered as ``default`` (perplexity)."""
    return tuple(name for name, task in TASKS.all().items() if getattr(task, "default", False))


def get_task(name: str) -> Task | None:
    """The record of a task, looking in installed plugins when it is not registered yet."""
    return TASKS.get(name)


def is_trial(name: str) -> bool:
    """Whether the task named ``name`` is a trial task (else it scores documents, or is not a task)."""
    return isinstance(TASKS.get(name), TrialTask)


SUITES: dict[str, tuple[str, ...]] = {}  # a suite's name (``ruler``) -> its tasks' names


def register_suite(name: str, members: Sequence[str]) -> tuple[str, ...]:
    """Name a set of trial tasks that a sweep's ``tasks`` list may give as one (RULER's ``ruler``)."""
    if not isinstance(name, str) or not name.isidentifier() or name in TASKS.records:
        raise ValueError(f"suite name {name!r} is not allowed; expected an identifier that names no task")
    SUITES[name] = tuple(members)
    return SUITES[name]


def suites() -> dict[str, tuple[str, ...]]:
    """Every suite of trial tasks, by name."""
    TASKS.all()  # ropekit's own modules register theirs
    return dict(SUITES)


def expand_suites(tasks: Sequence[str], tables: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """``tasks`` with each suite's name replaced by those of its tasks that can run here, once each, and
    the others by name with the reason. A task whose table is given (``tables``) runs or is refused as it
    would be named alone; one without is skipped where its defaults are refused (a missing dataset, a
    package not installed)."""
    known, expanded, skipped = suites(), [], {}
    for name in tasks:
        for task in known.get(name, (name,)):
            if name in known and task not in tables:
                try:
                    get_task(task).table(None)
                except TaskSettingsError as err:
                    skipped[task] = str(err)
                    continue
            expanded.append(task)
    return list(dict.fromkeys(expanded)), skipped
