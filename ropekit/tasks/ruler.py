"""RULER's needle-in-a-haystack tasks (NVIDIA/RULER ``scripts/data/synthetic/niah.py``) as trial tasks, their
samples made by lm-evaluation-harness's port of RULER (``lm_eval/tasks/ruler/prepare_niah.py`` and
``niah_utils.py``, installed with ropekit), not written again here.

* The tasks and their arguments are ``niah_utils``'s (``NIAH`` below): the haystack (``repeat``: RULER's
  noise sentences; ``needle``: other needles; ``essay``: real text, split into sentences by nltk's
  ``punkt_tab``), the kinds of keys and values, and how many keys, values and queries, each overridable
  in the task's table (``keys``, ``values``, ``queries``).
* A cell's ``trials`` samples are the first that the port's ``generate_samples`` draws at the cell's
  length, with Python's and numpy's global generators seeded by the table's ``seed`` (RULER's 42 by
  default) and put back as they were after: a sample is a function of the task, its settings, the
  tokenizer, the length and its index. RULER places the needles at random depths, so a cell has no
  depth (``placed = False``).
* The prompt is lm-eval's for the sample: its input, a space, its answer prefix (``gen_prefix``, "The
  special magic number for ... is"), tokenized as lm-eval's backend tokenizes a context (the tokenizer's
  own special tokens). At most ``length`` tokens, of which RULER leaves ``tokens_to_generate`` (128) free.
* Scored as RULER scores: greedy decoding writes up to 128 tokens, ``postprocess_pred`` then
  ``string_match_all`` (the share of the reference values in the output, case-insensitive;
  ``lm_eval/tasks/ruler/common_utils.py``, from RULER's ``scripts/eval/synthetic/constants.py``). Beside it,
  the references joined by ``", "`` after a space, scored teacher-forced (its log-probability).
* ``essay`` tasks read the text of ``essay`` (a file, or a folder of ``.txt`` files: RULER reads Paul
  Graham's essays), else the embedded corpus ``shakespeare``; their cells are keyed by that text's hash.
  They need nltk's ``punkt_tab``, which a machine without the internet cannot download: refused by name.

The port builds RULER's list of 6.2 million adjective-noun keys when it is imported: ~10 s and ~1 GB, once
per process, only when a RULER task builds its first sample.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import random
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..eval.retrieval import Trial, continuation_ids
from ..rope.checks import is_count
from .registry import TaskSettingsError, TrialSettings, TrialTask, register_task

TOKENS_TO_GENERATE = 128  # RULER's niah (synthetic.yaml) and lm-eval's max_gen_toks for it
ESSAY_FALLBACK = "shakespeare"  # the embedded corpus, where no essay text is given

# lm_eval/tasks/ruler/niah_utils.py: each task's generate_samples arguments (the counts default to 1).
NIAH: dict[str, dict[str, Any]] = {
    "niah_single_1": {"type_haystack": "repeat", "type_needle_k": "words", "type_needle_v": "numbers"},
    "niah_single_2": {"type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers"},
    "niah_single_3": {"type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "uuids"},
    "niah_multikey_1": {"type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers", "keys": 4},
    "niah_multikey_2": {"type_haystack": "needle", "type_needle_k": "words", "type_needle_v": "numbers"},
    "niah_multikey_3": {"type_haystack": "needle", "type_needle_k": "uuids", "type_needle_v": "uuids"},
    "niah_multivalue": {"type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers", "values": 4},
    "niah_multiquery": {"type_haystack": "essay", "type_needle_k": "words", "type_needle_v": "numbers", "queries": 4},
}
COUNTS = {"keys": "num_needle_k", "values": "num_needle_v", "queries": "num_needle_q"}


@dataclass(frozen=True)
class RulerSettings(TrialSettings):
    """A RULER niah task's table: ``trials`` samples per length, drawn from ``seed`` (RULER's 42), the task's
    counts (None: the task's own) and an essay task's text; ``depths`` is not a key (RULER places the
    needles at random)."""

    seed: int = 42
    keys: int | None = field(default=None, metadata={"help": "needle keys in the haystack (default: the task's)"})
    values: int | None = field(default=None, metadata={"help": "values per key (default: the task's)"})
    queries: int | None = field(default=None, metadata={"help": "keys asked for (default: the task's)"})
    essay: str | None = field(
        default=None, metadata={"help": "an essay task's haystack: a text file or folder (default: shakespeare)"}
    )

    placed = False

    def __post_init__(self) -> None:
        super().__post_init__()
        need_port(self.task)
        for key in COUNTS:
            value = getattr(self, key)
            if value is not None and not (is_count(value) and value <= 64):
                raise TaskSettingsError(f"{self.task}.{key} = {value!r} is not allowed; expected an integer 1-64")
        if self.essay is not None and self.haystack != "essay":
            raise TaskSettingsError(f"{self.task}.essay: {self.task}'s haystack is {self.haystack!r}, not an essay")
        if self.essay is not None and not (isinstance(self.essay, str) and Path(self.essay).exists()):
            raise TaskSettingsError(f"{self.task}.essay = {self.essay!r} is not allowed; expected a file or folder")
        if self.haystack == "essay" and not punkt_installed():
            runs = ", ".join(name for name, args in NIAH.items() if args["type_haystack"] != "essay")
            raise TaskSettingsError(
                f"{self.task} splits its essay haystack into sentences with nltk's punkt_tab, which is not installed "
                f"here (python -m nltk.downloader punkt_tab); these RULER tasks need no essay: {runs}"
            )

    @property
    def haystack(self) -> str:
        return NIAH[self.task]["type_haystack"]

    def arguments(self) -> dict[str, Any]:
        """``generate_samples``'s keyword arguments for this task and table."""
        defaults = NIAH[self.task]
        counts = {COUNTS[key]: getattr(self, key) or defaults.get(key, 1) for key in COUNTS}
        types = {key: value for key, value in defaults.items() if key.startswith("type_")}
        return {**types, **counts, "tokens_to_generate": TOKENS_TO_GENERATE, "random_seed": 42}

    def definition(self) -> dict[str, Any]:
        """What decides the samples: the table, the arguments it resolves to and, for an essay, its text's hash."""
        essay = {"essay_sha256": self.sources()["essay"]["sha256"]} if self.essay_task else {}
        return {**super().definition(), "arguments": self.arguments(), **essay}

    def sources(self) -> dict[str, dict[str, str]]:
        """An essay task's haystack: the ``essay`` path or the embedded corpus, and the text's SHA-256."""
        if not self.essay_task:
            return {}
        source = self.essay or f"the embedded corpus {ESSAY_FALLBACK} (no essay given; RULER reads Paul Graham's)"
        return {"essay": {"source": source, "sha256": _essay(_essay_files(self))[1]}}

    @property
    def essay_task(self) -> bool:
        return self.haystack == "essay"


def need_port(task: str) -> None:
    """Refuse ``task`` by name where lm-evaluation-harness's port of RULER cannot be imported."""
    if missing := [m for m in ("lm_eval", "wonderwords", "nltk") if importlib.util.find_spec(m) is None]:
        raise TaskSettingsError(
            f"{task} is made by lm-evaluation-harness's port of RULER, which needs {', '.join(missing)}: "
            "pip install 'ropekit[ruler]'"
        )


def punkt_installed() -> bool:
    """Whether nltk's ``punkt_tab`` (RULER's sentence splitter for essays) is on this machine. nltk is imported
    as ``_port`` imports it, stderr redirected: its downloader keeps the stderr of its import to write to, and
    the port's import would otherwise print there that it could not download punkt_tab."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import nltk

        nltk.data.find("tokenizers/punkt_tab")
    except (ImportError, LookupError):
        return False
    return True


def essay_text(settings: RulerSettings) -> str:
    """The essay haystack's text: the ``essay`` file, or the ``.txt`` files of the folder in name order,
    joined by spaces; else the embedded corpus's documents."""
    return _essay(_essay_files(settings))[0]


def _essay_files(settings: RulerSettings) -> tuple[tuple[str, int, int], ...] | None:
    """The essay's files as (path, size, modification time), which key its text; None for the embedded corpus."""
    if settings.essay is None:
        return None
    path = Path(settings.essay)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@functools.lru_cache(maxsize=4)
def _essay(files: tuple[tuple[str, int, int], ...] | None) -> tuple[str, str]:
    """The essay's text and its SHA-256, read once per process while its files are unchanged: every cell key
    and meta.json hash it."""
    if files is None:
        from ..data import load_corpus

        text = " ".join(doc.text for doc in load_corpus(ESSAY_FALLBACK).documents)
    else:
        text = " ".join(Path(name).read_text(encoding="utf-8") for name, _, _ in files)
    return text, hashlib.sha256(text.encode()).hexdigest()


def _port() -> Any:
    """lm-eval's ``prepare_niah``, imported without its messages: it tries to download punkt_tab on import
    (and says so whatever came of it) and draws a progress bar per length."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.tasks.ruler import prepare_niah
    return prepare_niah


@contextlib.contextmanager
def seeded(seed: int):
    """Python's and numpy's global generators seeded (the port draws from them), then put back."""
    python, legacy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(legacy)


_SAMPLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {(settings, length): samples}


def samples(tokenizer, settings: RulerSettings, length: int) -> list[dict[str, Any]]:
    """The cell's ``trials`` samples, as the port writes them (``input``, ``outputs``, ``gen_prefix``, ...),
    made once per (tokenizer, settings, length) in a process."""

    def make() -> list[dict[str, Any]]:
        port = _port()
        from lm_eval.tasks.ruler.niah_utils import TEMPLATE

        if settings.essay_task:  # as get_haystack("essay") makes it of Paul Graham's essays
            haystack = re.sub(r"\s+", " ", essay_text(settings)).split(" ")
        else:
            haystack = port.get_haystack(settings.haystack)
        with seeded(settings.seed), contextlib.redirect_stderr(io.StringIO()):
            return port.generate_samples(
                haystack,
                TOKENIZER=tokenizer,
                max_seq_length=length,
                template=TEMPLATE,
                num_samples=settings.trials,
                **settings.arguments(),
            )

    return cached_samples(tokenizer, settings, length, make, TOKENS_TO_GENERATE)


def cached_samples(tokenizer, settings, length: int, make: Callable[[], list], generates: int) -> list[dict[str, Any]]:
    """``make()``'s samples for a RULER task's cell, made once per (tokenizer, settings, length) in a process;
    refused with the length where the port cannot make ``trials`` of them (its "could not generate any
    sample": the template and ``generates`` tokens leave no room)."""
    known = _SAMPLES.setdefault(tokenizer, {})
    if (settings, length) not in known:
        try:
            made = make()
        except ValueError as err:
            if str(err).startswith((f"length={length}", f"{settings.task}.")):  # ropekit's own refusal
                raise
            raise ValueError(f"length={length} cannot hold a {settings.task} sample: {err}") from None
        if len(made) < settings.trials:
            raise ValueError(
                f"length={length} holds only {len(made)} of {settings.task}'s {settings.trials} samples with "
                f"{generates} tokens left to generate; use a longer length"
            )
        known[settings, length] = made
    return known[settings, length]


def context(sample: dict[str, Any], delimiter: str = " ") -> str:
    """The prompt lm-eval builds of a sample: the input, its YAML's ``target_delimiter`` (a space; cwe's
    two newlines) where neither side has a space, the answer prefix (``build_qa_turn`` in
    ``lm_eval/api/task.py``)."""
    from lm_eval.api.utils import maybe_delimit

    return maybe_delimit(sample["input"], sample["gen_prefix"], delimiter=delimiter)


def build(tokenizer, settings: RulerSettings, length: int, depth: float | None, trial: int, documents=None) -> Trial:
    sample = samples(tokenizer, settings, length)[trial]
    text = context(sample)
    references = tuple(sample["outputs"])
    answer = " " + ", ".join(references)
    query = re.search(r" for (.*) mentioned in the provided text", sample["gen_prefix"])
    return sample_trial(tokenizer, settings.task, length, trial, text, references, answer, query, TOKENS_TO_GENERATE)


def sample_trial(tokenizer, task: str, length: int, trial: int, text: str, references, answer: str, key, new: int):
    """A RULER sample as a :class:`Trial`: its prompt ``text`` (the port's context and answer prefix) as
    ids, ``answer`` as the prompt's continuation, its ``references``, the ``key`` asked for (a regex match
    of it, or None) and the ``new`` tokens greedy decoding may write; its needles sit at random (no depth)."""
    return Trial(
        task=task,
        length=length,
        depth=None,
        trial=trial,
        key=key[1] if key else "",
        value=answer.strip(),
        prompt_ids=tuple(tokenizer.encode(text)),
        answer_ids=tuple(continuation_ids(tokenizer, text, answer)),
        position=-1,
        before=0,
        haystack=0,
        references=references,
        max_new_tokens=new,
    )


def string_match_all(output: str, references) -> float:
    """RULER's score of one output: the share of ``references`` in it, case-insensitive, after
    ``postprocess_pred`` (lm-eval's ``common_utils``, as its ``process_results`` scores a sample)."""
    from lm_eval.tasks.ruler.common_utils import postprocess_pred
    from lm_eval.tasks.ruler.common_utils import string_match_all as score

    return score(postprocess_pred([output]), [list(references)])


TASKS = {
    name: register_task(
        TrialTask(
            name,
            RulerSettings,
            build,
            description=f"RULER's {name} ({args['type_haystack']} haystack), as lm-evaluation-harness's port makes it",
            match=string_match_all,
            generates=TOKENS_TO_GENERATE,
            metric="string_match_all",
        )
    )
    for name, args in NIAH.items()
}
