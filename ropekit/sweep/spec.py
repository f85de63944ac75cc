"""Sweep specs: TOML files (or CLI flags) naming the grid, parsed as data and checked up front.

models = ["smollm2-135m"]                  # local .gguf files or transformers folders, embedded names, or hub
                                           # ids "org/name" ("org/name@REVISION": a branch, tag or commit),
                                           # first match in that order (ropekit/models/checkpoint.py)
corpus = "shakespeare"                     # or {path = "pg19.parquet", format = "parquet", field = "text"}
lengths = [512, 1024, 2048]
n_docs = 4                                 # documents per length (first, yarn: the first n_docs with
                                           # >= length tokens; strided, rolling: the first n_docs)
mode = "first"                             # or "yarn", "rolling", "strided" (then stride = N)
layer_mixes = ["native", "LLLG@1024+nope"]
device = "cpu"
dtype = "float32"                          # default: float32 on CPU, bfloat16 on CUDA; "auto": bfloat16 on
                                           # CUDA and where the CPU has fast bf16 (recorded in meta.json)

tasks = ["perplexity", "passkey"]          # default ["perplexity"]; also "needle" and plugin tasks (ropekit/tasks/)

[ropes]                                    # name = "TYPE[:FACTOR]", "native", a config.json path or a table
default = "default"
yarn2 = {rope_type = "yarn", factor = 2.0}

[passkey]                                  # each trial task's table (its record's settings), every key optional
trials = 5                                 # prompts per (length, depth)
digits = 5                                 # digits of the answer (needle: 7, as RULER)
depths = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]   # % of the haystack before the needle
seed = 0                                   # with (task, length, depth, trial): each prompt

[needle]                                   # also intro, needle, question: the texts, with {key} and {value}
trials = 5

[executor]                                 # how it runs, not what it computes (not hashed)
executor = "local"                         # worker processes here (one: "inline"), or "slurm": a job array
workers = 1                                # processes (array tasks) claiming work units of one directory
lease = 120                                # seconds a unit's claim lasts without a heartbeat
# slurm only, as sbatch's options: partition, gpus_per_task, cpus_per_task, mem ("32G"), time (minutes,
# default 60: a task at its limit is requeued and resumes), account, qos, constraint, array_parallelism,
# sbatch = ["--exclusive", ...]
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import Notice
from ..models import DTYPES, MIX_HELP, ModelConfigError, parse_layer_mix
from ..modes import MODES
from ..names import FOLDER_HELP, ROPE_NAME_HELP, folder_name_problem, rope_name_problem, unprintable
from ..rope.checks import is_count
from ..tasks import TaskSettingsError, TrialSettings, default_tasks, get_task, is_trial, trial_tasks
from ..tasks import tasks as registered_tasks
from ..tasks.registry import expand_suites, suites
from .executors import executors, get_executor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SpecError(ValueError):
    """A sweep spec that cannot run; the message names the key and what is allowed."""


KEYS = (
    "name",
    "models",
    "corpus",
    "lengths",
    "ropes",
    "layer_mixes",
    "n_docs",
    "mode",
    "stride",
    "device",
    "dtype",
    "tasks",
    "executor",
)  # and a table per trial task the spec runs (ropekit/tasks/)


def task_names() -> tuple[str, ...]:
    """Every task a spec may name: the registered tasks (perplexity, the trial tasks, plugins included), then
    the suites (``ruler``: every RULER task that can run here)."""
    return (*registered_tasks(), *suites())


def task_keys() -> tuple[str, ...]:
    """Every key of a trial task's table (each a flag of ``ropekit sweep`` too), in the tasks' order."""
    return tuple(dict.fromkeys(key for task in trial_tasks().values() for key in task.settings.table_keys()))


EXECUTOR_KEYS = ("executor", "workers", "lease")  # and the chosen executor's own keys (ropekit/sweep/executors/)


@dataclass(frozen=True)
class ExecutorSpec:
    """How a sweep runs, never what it computes (so not part of the spec's hash): ``workers`` worker
    processes of ``executor`` on one results directory, each claim of a work unit lasting ``lease``
    seconds without a heartbeat (``ropekit.sweep.claims``), and ``options``, the executor's own keys
    given (Slurm's: sbatch's options of the same names), checked by its record."""

    executor: str = "local"
    workers: int = 1
    lease: float = 120.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        record = get_executor(self.executor) if isinstance(self.executor, str) else None
        if record is None:
            names = ", ".join(executors())
            raise SpecError(f"executor = {self.executor!r} is not an executor; expected one of {names}")
        if not is_count(self.workers):
            raise SpecError(f"workers = {self.workers!r} is not allowed; expected a positive integer")
        if isinstance(self.lease, bool) or not isinstance(self.lease, (int, float)) or not self.lease > 0:
            raise SpecError(f"lease = {self.lease!r} is not allowed; expected a positive number of seconds")
        checked = {}
        for key, value in self.options.items():
            if key not in record.options:
                owner = next((e for e in executors().values() if key in e.options), None)
                if owner is None:
                    raise SpecError(f"executor: unknown key {key!r}; allowed keys: {', '.join(self.keys(record))}")
                raise SpecError(
                    f"{key} is a {owner.title} setting, but executor = {self.executor!r}; add executor = {owner.name!r}"
                )
            try:
                checked[key] = record.options[key].check(key, value)
            except ValueError as err:
                raise SpecError(str(err)) from None
        object.__setattr__(self, "options", checked)

    @staticmethod
    def keys(record) -> tuple[str, ...]:
        return (*EXECUTOR_KEYS, *record.options)

    def to_dict(self) -> dict[str, Any]:
        """Its settings that differ from the defaults."""
        data = {k: getattr(self, k) for k in EXECUTOR_KEYS if getattr(self, k) != getattr(ExecutorSpec, k)}
        return {**data, **self.options}


def executor_spec(table: Any) -> ExecutorSpec:
    """An ``[executor]`` table (or the CLI's flags as one) checked key by key."""
    if not isinstance(table, dict):
        keys = ", ".join(dict.fromkeys(k for e in executors().values() for k in ExecutorSpec.keys(e)))
        raise SpecError(f"executor = {table!r} is not allowed; expected a table of {keys}")
    base = {k: v for k, v in table.items() if k in EXECUTOR_KEYS}
    return ExecutorSpec(**base, options={k: v for k, v in table.items() if k not in EXECUTOR_KEYS})


@dataclass(frozen=True)
class CorpusSpec:
    path: str
    format: str | None = None
    field: str = "text"


@dataclass(frozen=True)
class SweepSpec:
    models: tuple[str, ...]
    corpus: CorpusSpec
    lengths: tuple[int, ...]
    ropes: dict[str, Any]  # name -> preset string or rope_scaling dict
    layer_mixes: tuple[str, ...] = ("native",)
    n_docs: int = 4
    mode: str = "first"
    stride: int | None = None
    device: str = "cpu"
    dtype: str | None = None
    name: str = "sweep"
    tasks: tuple[str, ...] = field(default_factory=default_tasks)
    retrieval: dict[str, TrialSettings] = field(default_factory=dict)  # trial task -> its table's settings
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)  # how it runs (not hashed)

    def __post_init__(self) -> None:
        if not self.models:
            raise SpecError("models is empty; name at least one model")
        if not self.lengths:
            raise SpecError("lengths is empty; give at least one context length")
        for length in self.lengths:
            if not is_count(length, 2):
                raise SpecError(f"lengths: {length!r} is not allowed; a length is an integer >= 2")
        for axis in ("models", "lengths", "layer_mixes"):  # a cell is named by its axes' values
            values = list(getattr(self, axis))
            if repeated := sorted({str(v) for v in values if values.count(v) > 1}):
                raise SpecError(f"{axis} {values} repeat {', '.join(repeated)}; give each once")
        if not self.ropes:
            raise SpecError('ropes is empty; give at least one, e.g. default = "default"')
        if not is_count(self.n_docs):
            raise SpecError(f"n_docs={self.n_docs!r} is not allowed; expected a positive integer")
        if self.mode not in MODES:
            raise SpecError(f"mode={self.mode!r} is not allowed; expected one of {', '.join(MODES)}")
        if self.mode == "strided":
            if not is_count(self.stride):
                raise SpecError(f"mode 'strided' needs stride = a positive integer, got {self.stride!r}")
            if self.stride > min(self.lengths):
                raise SpecError(f"stride={self.stride} is longer than the shortest length {min(self.lengths)}")
        elif self.stride is not None:
            raise SpecError('stride is only used with mode = "strided"')
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise SpecError(f"device={self.device!r} is not allowed; expected 'cpu' or 'cuda'")
        if self.dtype is not None and self.dtype not in ("auto", *DTYPES):
            raise SpecError(f"dtype={self.dtype!r} is not allowed; expected auto or one of {', '.join(DTYPES)}")
        if problem := folder_name_problem(self.name):
            raise SpecError(f"name = {self.name!r} cannot name the sweep's folder runs/NAME ({problem}); {FOLDER_HELP}")
        for axis in ("models", "layer_mixes"):
            for value in getattr(self, axis):
                if bad := unprintable(value):
                    raise SpecError(f"{axis}: {value!r} holds {bad}; a name is printable text, one line")
        for name, rope in self.ropes.items():
            if problem := rope_name_problem(name):
                raise SpecError(f"ropes: {name!r} cannot name a rope ({problem}); a rope's name is {ROPE_NAME_HELP}")
            if not isinstance(rope, (str, dict)):
                raise SpecError(
                    f'ropes.{name} = {rope!r} is not allowed; expected "TYPE[:FACTOR]", "native", a config.json '
                    "path or a rope_scaling table"
                )
        for mix in self.layer_mixes:
            try:
                parse_layer_mix(mix)
            except ModelConfigError as err:
                raise SpecError(f"layer_mixes: {err}") from None
        if not self.tasks:
            raise SpecError(f"tasks is empty; give at least one of {', '.join(task_names())}")
        for task in self.tasks:
            if get_task(task) is None:
                raise SpecError(f"tasks: {task!r} is not a task; expected some of {', '.join(task_names())}")
        if repeated := sorted({t for t in self.tasks if self.tasks.count(t) > 1}):
            raise SpecError(f"tasks {list(self.tasks)} repeat {', '.join(repeated)}; give each once")
        if unused := sorted(set(self.retrieval) - set(self.tasks)):
            raise SpecError(f"a [{unused[0]}] table is given but tasks does not name {unused[0]!r}; add it to tasks")

    @property
    def retrieval_tasks(self) -> dict[str, TrialSettings]:
        """Each trial task the spec runs, in its order, with its settings (defaults where it has no table)."""
        return {t: self.retrieval.get(t) or get_task(t).table(None) for t in self.tasks if is_trial(t)}

    @property
    def document_task(self) -> str | None:
        """The task the spec runs that scores the corpus's documents (perplexity, a ``DocumentTask``), or None."""
        return next((t for t in self.tasks if not is_trial(t)), None)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data that ``spec_from_dict`` takes back to an equal spec, in the spec's
        own order (ropes and axes run in it): what meta.json stores."""
        data = {
            "name": self.name,
            "models": list(self.models),
            "corpus": {"path": self.corpus.path, "format": self.corpus.format, "field": self.corpus.field},
            "lengths": list(self.lengths),
            "ropes": self.ropes,
            "layer_mixes": list(self.layer_mixes),
            "n_docs": self.n_docs,
            "mode": self.mode,
            "stride": self.stride,
            "device": self.device,
            "dtype": self.dtype,
        }
        if self.tasks != default_tasks():  # a perplexity-only spec keeps the hash it had before tasks
            data["tasks"] = list(self.tasks)
            data |= {task: settings.to_dict() for task, settings in self.retrieval_tasks.items()}
        if executor := self.executor.to_dict():
            data["executor"] = executor
        return json.loads(json.dumps(data))  # a copy, nothing shared with the spec

    def canonical(self) -> dict[str, Any]:
        """The spec as plain sorted data without its name and executor: what is hashed to tell one spec
        from another (a sweep run by one process and resumed by ten is one sweep)."""
        data = self.to_dict()
        data.pop("name")
        data.pop("executor", None)
        return json.loads(json.dumps(data, sort_keys=True))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()


def _check_keys(where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")


def spec_from_dict(data: dict[str, Any], *, name: str = "sweep") -> SweepSpec:
    """A SweepSpec from parsed TOML (or the CLI's equivalent dict)."""
    _check_keys("spec", data, (*KEYS, *trial_tasks()))
    for key in ("models", "corpus", "lengths", "ropes"):
        if key not in data:
            raise SpecError(f"spec: required key {key!r} is missing")
    models = data["models"]
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise SpecError(f"models = {models!r} is not allowed; expected a list of names, paths or hub ids")
    corpus = data["corpus"]
    if isinstance(corpus, str):
        corpus = {"path": corpus}
    if not isinstance(corpus, dict):
        raise SpecError(f"corpus = {corpus!r} is not allowed; expected a path or a table with path, format, field")
    _check_keys("corpus", corpus, ("path", "format", "field"))
    if "path" not in corpus:
        raise SpecError("corpus: required key 'path' is missing")
    lengths = data["lengths"]
    if not isinstance(lengths, list):
        raise SpecError(f"lengths = {lengths!r} is not allowed; expected a list of integers")
    ropes = data["ropes"]
    if isinstance(ropes, list):  # a list names itself, by the naming rule of --rope
        from ..rope import rope_name

        named = [(rope_name(r) if isinstance(r, (str, dict)) else str(r), r) for r in ropes]
        for i, (rope, _) in enumerate(named):
            if rope in dict(named[:i]):
                raise SpecError(f"ropes: two entries are named {rope!r}; use a table to name them apart")
        ropes = dict(named)
    if not isinstance(ropes, dict):
        raise SpecError(f"ropes = {ropes!r} is not allowed; expected a table of name = rope")
    mixes = data.get("layer_mixes", ["native"])
    if isinstance(mixes, str):
        mixes = [mixes]
    if not isinstance(mixes, list) or not all(isinstance(m, str) for m in mixes):
        raise SpecError(f"layer_mixes = {mixes!r} is not allowed; expected a list of: {MIX_HELP}")
    tasks = data.get("tasks", list(default_tasks()))
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SpecError(f"tasks = {tasks!r} is not allowed; expected a list of: {', '.join(task_names())}")
    if any(t in suites() for t in tasks):
        tasks, skipped = expand_suites(tasks, data)
        if skipped:  # one line, tasks skipped for the same reason together
            reasons: dict[str, list[str]] = {}
            for task, why in skipped.items():
                reasons.setdefault(why.removeprefix(f"{task} "), []).append(task)
            told = "; ".join(f"{', '.join(tasks)}: {why}" for why, tasks in reasons.items())
            warnings.warn(f"tasks: skipped {len(skipped)} tasks that cannot run here: {told}", Notice, stacklevel=2)
    return SweepSpec(
        models=tuple(models),
        corpus=CorpusSpec(str(corpus["path"]), corpus.get("format"), corpus.get("field", "text")),
        lengths=tuple(lengths),
        ropes=dict(ropes),
        layer_mixes=tuple(mixes),
        n_docs=data.get("n_docs", 4),
        mode=data.get("mode", "first"),
        stride=data.get("stride"),
        device=data.get("device", "cpu"),
        dtype=data.get("dtype"),
        name=str(data.get("name", name)),
        tasks=tuple(tasks),
        retrieval={task: _task_settings(task, data[task]) for task in trial_tasks() if task in data},
        executor=executor_spec(data.get("executor", {})),
    )


def _task_settings(task: str, table: Any) -> TrialSettings:
    try:
        return get_task(task).table(table)
    except TaskSettingsError as err:
        raise SpecError(str(err)) from None


def _flag(name: str, value: Any) -> list[str]:
    """``--name value``, or ``--name=value`` for a value argparse would take for an option."""
    return [f"--{name}={value}"] if str(value).startswith("-") else [f"--{name}", str(value)]


def reproduce_command(meta: dict[str, Any], out: str | Path | None = None) -> str:
    """The ``ropekit sweep`` command line, shell-quoted (``shlex``), that runs the sweep a meta.json
    describes again: every key of its spec as a flag, into ``out`` (default ``runs/NAME``). The spec
    it builds has the same hash and runs its cells in the same order. Raises ValueError for a
    rope ``--rope NAME=ROPE`` cannot carry as the spec has it (a string with spaces around it)."""
    from ..rope import rope_argument

    spec = spec_from_dict(meta["spec"])
    args = ["ropekit", "sweep"]
    for model in spec.models:
        args += _flag("model", model)
    args += _flag("corpus", spec.corpus.path)
    if spec.corpus.format is not None:
        args += _flag("corpus-format", spec.corpus.format)
    if spec.corpus.field != "text":
        args += _flag("field", spec.corpus.field)
    args += _flag("lengths", ",".join(str(n) for n in spec.lengths))
    for name, rope in spec.ropes.items():
        text = f"{name}={rope if isinstance(rope, str) else json.dumps(rope)}"
        if rope_argument(text) != (name, rope):
            raise ValueError(f"rope {name!r} cannot be given as --rope NAME=ROPE; use a spec file")
        args += _flag("rope", text)
    for mix in spec.layer_mixes:
        args += _flag("layer-mix", mix)
    args += _flag("n-docs", spec.n_docs) + _flag("mode", spec.mode)
    if spec.stride is not None:
        args += _flag("stride", spec.stride)
    args += _flag("device", spec.device)
    if spec.dtype is not None:
        args += _flag("dtype", spec.dtype)
    if spec.tasks != default_tasks():
        args += _flag("tasks", ",".join(spec.tasks))
    # One flag sets a key in every table of the spec's tasks that has it: tables that differ need the spec file.
    settings = list(spec.retrieval_tasks.values())
    for key in task_keys():
        tables = [s.to_dict() for s in settings if key in s.table_keys()]
        if len({json.dumps(t.get(key)) for t in tables}) > 1:
            raise ValueError(f"the tasks' {key} differ, which one --{key} cannot say; use a spec file")
        value = next((t[key] for t in tables if key in t), None)
        if value is not None:
            args += _flag(key.replace("_", "-"), ",".join(f"{d:g}" for d in value) if key == "depths" else value)
    for key, value in spec.executor.to_dict().items():
        for one in value if isinstance(value, list) else [value]:  # a list's flag repeats
            args += _flag(key.replace("_", "-"), one)
    args += _flag("out", out if out is not None else Path("runs") / spec.name)
    return shlex.join(args)


def read_toml(path: str | Path) -> dict[str, Any]:
    """A spec file's TOML as data; a file that is missing or not TOML is one :class:`SpecError` line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec file {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"spec file {path} is not valid TOML: {err}") from None


def load_spec(path: str | Path) -> SweepSpec:
    return spec_from_dict(read_toml(path), name=Path(path).stem)


DEFAULT_SPEC = Path(__file__).with_name("default.toml")


def default_spec() -> SweepSpec:
    """The embedded default sweep: ropekit's main job."""
    return load_spec(DEFAULT_SPEC)
