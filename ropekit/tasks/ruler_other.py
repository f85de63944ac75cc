"""RULER's tasks besides the needles (NVIDIA/RULER ``scripts/data/synthetic/``: ``variable_tracking.py``,
``common_words_extraction.py``, ``freq_words_extraction.py``, ``qa.py``) as trial tasks under RULER's names,
``vt``, ``cwe``, ``fwe``, ``qa_squad`` and ``qa_hotpot``, and ``ruler``, the whole suite. Their samples are
made by lm-evaluation-harness's port of RULER (``lm_eval/tasks/ruler/vt_utils.py``, ``cwe_utils.py``,
``fwe_utils.py``, ``qa_utils.py``: its tasks ``ruler_vt``, ``ruler_cwe``, ...), not written again here; what
``ruler.py`` says of the needle tasks holds for these (seeded samples, the first ``trials`` the port draws at
the length, one cell per length, the prompt as lm-eval builds it), with these differences:

* Settings: RULER's defaults (its ``synthetic.yaml``), overridable where the port takes them: vt's ``chains``
  and ``hops`` (1 and 4), fwe's ``alpha`` (2.0). cwe's counts (10 common words repeated 30 times, others 3;
  6 and 1 under 4096 tokens) are fixed inside the port's sampler.
* cwe's sampler also draws from the port's own generator (``cwe_utils.RNG``), which carries over from one
  call to the next in a process: it is set as a fresh import leaves it for each cell, so a sample is the one
  a fresh lm-eval process draws first.
* vt draws its few-shot example first (at 500 tokens), then its samples at the length, as lm-eval does.
* cwe: lm-eval's prompt leaves out the few-shot example RULER's own puts before it (the port keeps it in
  ``input_example``, which lm-eval's YAML does not read); the prompts here are lm-eval's, and its YAML's
  ``target_delimiter`` (two newlines) comes before the answer prefix.
* fwe: the port sizes its coded text to the whole length, leaving no room for the 50 tokens it may
  generate, so a prompt and its output can run up to 50 tokens past the length.
* qa: RULER reads SQuAD 2.0's and HotpotQA's dev sets, which cannot be downloaded here: the table's
  ``dataset`` names the local file, parsed as the port's ``read_squad`` / ``read_hotpotqa`` parse their
  downloads (rewritten below, since they fetch from the web); without it the task is refused (or, in the
  ``ruler`` suite, skipped) naming that key. The cells are keyed by the file's hash.
* Guards: the port's vt and cwe samplers retry forever (``while True``) when their smallest haystack (10
  noise lines, 10 words) does not fit, which happens when the first draw of their sizing loop is already too
  long; fwe's fails below 200 tokens (its coded vocabulary is length // 50 words and holds the three
  answers) and loops when its template alone does not fit. So before the port runs, vt and cwe replay
  that first draw from the same seed (the port's own ``generate_input_output``), and a length that cannot
  hold it is refused with the minimum.
* Scores: vt, cwe and fwe by ``string_match_all``, qa by ``string_match_part`` (1 where any one of the
  dataset's answers is written), as RULER's ``constants.py`` scores them. lm-eval's port scores qa by the
  share of the answers written, which equals RULER's where a question's answers are all written or none
  (or it has one); where they differ, ropekit keeps RULER's. The teacher-forced answer is the references
  joined by ``", "`` (qa: the first answer).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import file_sha256
from ..eval.retrieval import Trial
from ..rope.checks import is_count
from .registry import TaskSettingsError, TrialSettings, TrialTask, register_suite, register_task
from .ruler import NIAH, cached_samples, context, need_port, sample_trial, seeded, string_match_all

# Each task's tokens_to_generate in RULER's synthetic.yaml, lm-eval's max_gen_toks in its YAML.
TOKENS = {"vt": 30, "cwe": 120, "fwe": 50, "qa_squad": 32, "qa_hotpot": 32}
DELIMITER = {"cwe": "\n\n"}  # lm-eval's target_delimiter (cwe.yaml); the others' is a space
VT_EXAMPLE = 500  # vt's few-shot example is drawn at 500 tokens, 5 noise lines at a time (vt_utils.get_dataset)
SMALLEST = 10  # the port's incremental: vt's fewest noise lines, cwe's fewest words
FWE_SHORTEST = 200  # fwe's vocabulary is length // 50 coded words: the noise "..." and the three answers
QA = {  # the dev set RULER reads, and the file it downloads
    "qa_squad": ("SQuAD 2.0's dev set", "dev-v2.0.json"),
    "qa_hotpot": ("HotpotQA's dev set (distractor)", "hotpot_dev_distractor_v1.json"),
}


@dataclass(frozen=True)
class OtherSettings(TrialSettings):
    """A RULER task's table: ``trials`` samples per length drawn from ``seed`` (RULER's 42); no ``depths``."""

    seed: int = 42

    placed = False

    def __post_init__(self) -> None:
        super().__post_init__()
        need_port(self.task)

    def arguments(self) -> dict[str, Any]:
        """The port's keyword arguments this table sets."""
        return {}

    def definition(self) -> dict[str, Any]:
        return {**super().definition(), "arguments": self.arguments()}


@dataclass(frozen=True)
class VtSettings(OtherSettings):
    chains: int = field(default=1, metadata={"help": "chains of variable assignments (RULER's 1)"})
    hops: int = field(default=4, metadata={"help": "assignments per chain after the value (RULER's 4)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("chains", "hops"):
            if not (is_count(getattr(self, key)) and getattr(self, key) <= 64):
                raise TaskSettingsError(f"vt.{key} = {getattr(self, key)!r} is not allowed; expected an integer 1-64")

    def arguments(self) -> dict[str, Any]:
        return {"num_chains": self.chains, "num_hops": self.hops}


@dataclass(frozen=True)
class FweSettings(OtherSettings):
    alpha: float = field(default=2.0, metadata={"help": "the Zipf exponent of the coded words (RULER's 2.0)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 1 < self.alpha <= 10:
            raise TaskSettingsError(f"fwe.alpha = {self.alpha!r} is not allowed; expected a number in (1, 10]")

    def arguments(self) -> dict[str, Any]:
        return {"alpha": float(self.alpha)}


@dataclass(frozen=True)
class QaSettings(OtherSettings):
    dataset: str | None = field(default=None, metadata={"help": "the local dev-set JSON file RULER downloads"})

    def __post_init__(self) -> None:
        super().__post_init__()
        what, name = QA[self.task]
        if self.dataset is None:
            raise TaskSettingsError(
                f"{self.task} reads {what} from a local file, which cannot be downloaded here: set "
                f"{self.task}.dataset = the path of {name}"
            )
        if not (isinstance(self.dataset, str) and Path(self.dataset).is_file()):
            raise TaskSettingsError(f"{self.task}.dataset = {self.dataset!r} is not allowed; expected the file {name}")

    def definition(self) -> dict[str, Any]:
        return {**super().definition(), "dataset_sha256": self.sources()["dataset"]["sha256"]}

    def sources(self) -> dict[str, dict[str, str]]:
        """The local dev set its samples are drawn from, and the file's SHA-256."""
        return {"dataset": {"source": self.dataset, "sha256": file_sha256(Path(self.dataset))}}


def _module(name: str) -> Any:
    """One of the port's modules, imported without its messages."""
    import importlib

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module(f"lm_eval.tasks.ruler.{name}")


def _tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` as the port counts them (the tokenizer's own special tokens)."""
    return len(tokenizer(text).input_ids)


def too_short(task: str, length: int, need: int, what: str) -> ValueError:
    return ValueError(f"length={length} cannot hold a {task} sample: {what} needs {need} tokens; use a longer length")


def vt_samples(tokenizer, settings: VtSettings, length: int) -> list[dict[str, Any]]:
    """vt's samples as lm-eval's ``vt_utils.get_dataset`` makes them: the few-shot example, then the samples."""
    vt, args = _module("vt_utils"), settings.arguments()

    def example() -> dict[str, Any]:
        return vt.sys_vartrack_w_noise_random(tokenizer, 1, VT_EXAMPLE, incremental=5, **args)[0]

    with seeded(settings.seed), contextlib.redirect_stdout(io.StringIO()):  # the sizing loops' first draws
        text, answer = vt.generate_input_output(5, is_icl=True, **args)
        if (need := _tokens(tokenizer, f"{text} {answer}") + TOKENS["vt"]) > VT_EXAMPLE:
            raise too_short("vt", length, need, f"its few-shot example (drawn at {VT_EXAMPLE} tokens)")
    with seeded(settings.seed), contextlib.redirect_stdout(io.StringIO()):
        shot = example()
        shot_tokens = _tokens(tokenizer, shot["input"] + " " + " ".join(shot["outputs"]) + "\n\n")
        text, answer = vt.generate_input_output(SMALLEST, **args)
        if (need := _tokens(tokenizer, f"{text} {answer}") + TOKENS["vt"] + shot_tokens) > length:
            raise too_short("vt", length, need, f"its smallest ({SMALLEST} noise lines and the few-shot example)")
    with seeded(settings.seed), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        shot = example()
        return vt.sys_vartrack_w_noise_random(tokenizer, settings.trials, length, icl_example=shot, **args)


def cwe_samples(tokenizer, settings: OtherSettings, length: int) -> list[dict[str, Any]]:
    """cwe's samples as lm-eval's ``cwe_utils.get_dataset`` makes them."""
    cwe = _module("cwe_utils")
    with seeded(settings.seed), _as_imported(cwe):  # the sizing loop's first draw, measured as it measures it
        shot, text, answer = cwe.generate_input_output(SMALLEST, length)
        listed = " ".join(f"{i + 1}. {word}" for i, word in enumerate(answer))
        if (need := _tokens(tokenizer, f"{shot}\n{text} {listed}") + TOKENS["cwe"]) > length:
            raise too_short("cwe", length, need, f"its smallest ({SMALLEST} words and the example it sizes with)")
    with seeded(settings.seed), _as_imported(cwe), contextlib.redirect_stderr(io.StringIO()):
        return cwe.sys_word_pair_random(settings.trials, length, tokenizer=tokenizer)


@contextlib.contextmanager
def _as_imported(cwe):
    """cwe's own generator (``cwe_utils.RNG``: ``random.Random(42)``, which shuffles the word list on import and
    every list of words drawn after) as a fresh import leaves it, then put back: else a sample would depend on
    what the process drew before. Its state after the import's shuffle depends on the list's length only."""
    kept = cwe.RNG.getstate()
    fresh = random.Random(42)
    fresh.shuffle(list(cwe.WORDS))
    cwe.RNG.setstate(fresh.getstate())
    try:
        yield
    finally:
        cwe.RNG.setstate(kept)


def fwe_samples(tokenizer, settings: FweSettings, length: int) -> list[dict[str, Any]]:
    """fwe's samples as lm-eval's ``fwe_utils.get_dataset`` makes them."""
    fwe = _module("fwe_utils")
    template = _tokens(tokenizer, fwe.TEMPLATE.format(context="", query=""))
    if length < FWE_SHORTEST or template > length:
        raise too_short("fwe", length, max(FWE_SHORTEST, template), "its vocabulary of length // 50 words")
    with seeded(settings.seed), contextlib.redirect_stderr(io.StringIO()):
        made = fwe.sys_kwext(tokenizer, length, num_samples=settings.trials, **settings.arguments())
    for sample in made:  # sized down to no coded words at all: the answers are not in the text
        if not all(re.search(rf"\b{word}\b", sample["input"]) for word in sample["outputs"]):
            raise ValueError(f"length={length} cannot hold a fwe sample: its text is left without its answers")
    return made


def qa_samples(tokenizer, settings: QaSettings, length: int) -> list[dict[str, Any]]:
    """qa's samples as lm-eval's ``qa_utils.get_dataset`` makes them, of the local dev set."""
    qas, docs = read_qa(settings.task, settings.dataset)
    if settings.trials > len(qas):
        raise ValueError(f"{settings.task}.trials = {settings.trials} is more than the {len(qas)} questions it holds")
    with seeded(settings.seed), contextlib.redirect_stderr(io.StringIO()):
        return _module("qa_utils").generate_samples(  # a copy: where every document fits, it shuffles them in place
            tokenizer, list(docs), qas, length, num_samples=settings.trials, tokens_to_generate=TOKENS[settings.task]
        )


@functools.lru_cache(maxsize=2)
def read_qa(task: str, path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The questions and documents of a dev set, as the port's ``read_squad`` / ``read_hotpotqa`` make them
    of the JSON they download (``lm_eval/tasks/ruler/qa_utils.py``, from RULER's ``qa.py``)."""
    what, name = QA[task]
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return _read_squad(data) if task == "qa_squad" else _read_hotpot(data)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise ValueError(f"{task}.dataset = {path!r} is not {what} ({name}): {type(err).__name__} {err}") from None


def _read_squad(data: dict) -> tuple[list[dict[str, Any]], list[str]]:
    docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
    index = {doc: i for i, doc in enumerate(docs)}
    qas = []
    for d in data["data"]:
        more = [index[p["context"]] for p in d["paragraphs"]]
        for p in d["paragraphs"]:
            at = index[p["context"]]
            for qa in p["qas"]:
                if not qa["is_impossible"]:
                    answers = [a["text"] for a in qa["answers"]]
                    others = [i for i in more if i != at]
                    qas.append({"query": qa["question"], "outputs": answers, "context": [at], "more_context": others})
    return qas, docs


def _read_hotpot(data: list) -> tuple[list[dict[str, Any]], list[str]]:
    docs = sorted({f"{t}\n{''.join(p)}" for d in data for t, p in d["context"]})
    index = {doc: i for i, doc in enumerate(docs)}
    qas = [
        {
            "query": d["question"],
            "outputs": [d["answer"]],
            "context": [index[f"{t}\n{''.join(p)}"] for t, p in d["context"]],
        }
        for d in data
    ]
    return qas, docs


SAMPLERS = {"vt": vt_samples, "cwe": cwe_samples, "fwe": fwe_samples, "qa_squad": qa_samples, "qa_hotpot": qa_samples}


def samples(tokenizer, settings: OtherSettings, length: int) -> list[dict[str, Any]]:
    """The cell's ``trials`` samples as the port writes them, made once per (tokenizer, settings, length)."""
    make = functools.partial(SAMPLERS[settings.task], tokenizer, settings, length)
    return cached_samples(tokenizer, settings, length, make, TOKENS[settings.task])


def build(tokenizer, settings: OtherSettings, length: int, depth: float | None, trial: int, documents=None) -> Trial:
    sample = samples(tokenizer, settings, length)[trial]
    text = context(sample, DELIMITER.get(settings.task, " "))
    references = tuple(sample["outputs"])
    qa = settings.task in QA
    answer = " " + (references[0] if qa else ", ".join(references))
    if settings.task == "vt":  # the value asked for; a question
        asked = re.search(r"the value (\S+), they are", sample["gen_prefix"])
    else:
        asked = re.search(r"Question: ([^\n]*)$", sample["input"]) if qa else None
    return sample_trial(tokenizer, settings.task, length, trial, text, references, answer, asked, TOKENS[settings.task])


def string_match_part(output: str, references) -> float:
    """RULER's qa score of one output (``scripts/eval/synthetic/constants.py``): 1 where any of ``references``
    is in it, case-insensitive, after ``postprocess_pred``. lm-eval's ``common_utils.string_match_part`` gives
    the share of the references found instead, which differs where a question's answers differ and only
    some are written."""
    from lm_eval.tasks.ruler.common_utils import postprocess_pred

    (written,) = postprocess_pred([output])
    return max(1.0 if r.lower() in written.lower() else 0.0 for r in references)


DESCRIPTIONS = {
    "vt": "variable tracking: the variables a chain of assignments gives a value",
    "cwe": "common words extraction: the ten most frequent words of a list",
    "fwe": "frequent words extraction: the three most frequent coded words",
    "qa_squad": "question answering over SQuAD 2.0 paragraphs (a local file)",
    "qa_hotpot": "multi-hop question answering over HotpotQA paragraphs (a local file)",
}
SETTINGS = {"vt": VtSettings, "cwe": OtherSettings, "fwe": FweSettings, "qa_squad": QaSettings, "qa_hotpot": QaSettings}

TASKS = {
    name: register_task(
        TrialTask(
            name,
            SETTINGS[name],
            build,
            description=f"RULER's {name}, {DESCRIPTIONS[name]}, as lm-evaluation-harness's port makes it",
            match=string_match_part if name in QA else string_match_all,
            generates=TOKENS[name],
            metric="string_match_part" if name in QA else "string_match_all",
        )
    )
    for name in TOKENS
}

# RULER's thirteen tasks (lm-eval's ruler.yaml): the needles, then the others
SUITE = register_suite("ruler", (*NIAH, *TOKENS))
