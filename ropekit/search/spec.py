"""A search spec: the ``[search]`` table of a TOML file (``ropekit search SPEC``), checked up front.

[search]
model = "smollm2-135m"        # as a sweep's models: a .gguf file, a transformers folder, an embedded name, a hub id
factor = 2.0                  # the length scale (or target_length = 16384: factor = target / trained length)
factors = "long"              # which list is searched: "long" (scored at the target length; short_factor all 1)
                              # or "short" (scored at the trained length; long_factor YaRN's ramp at factor)
algorithm = "dim_mono"        # LongRoPE's search spaces: "dim_mono" or "dim_piece_mono"
objective = "perplexity"      # perplexity at the scoring length (LongRoPE), "needle" (LongRoPE2: the loss of the
                              # answer tokens of needle prompts), or any trial task's answer loss ("passkey", ...)
mode = "first"                # perplexity's ids: "first" (tokenizer.encode(text)) or "yarn" (BOS + the text's
                              # ids, LongRoPE's own); both cut each document to the scored length
corpus = "shakespeare"        # or {path = "pg19.parquet", format = "parquet", field = "text"}
n_docs = 2                    # perplexity: the first n_docs documents with at least the scoring length's tokens
trials = 4                    # a task objective: prompts per depth, at these depths (% of the haystack)
depths = [10, 50, 90]
seed = 42                     # LongRoPE's set_seed()
population_size = 64          # LongRoPE's hyper-parameters under its names; these are its defaults
max_time_budget = 40          # (evolution/default_hyper_params/*.json: 1344 candidates scored on 8 GPUs)
mutation_numbers = 16
crossover_size = 16
max_crossover_try = 20
parents_size = 32
list_step = 0.01
evo_scale = 1.0
beta_fast = 32                # the YaRN ramp the search starts from (LongRoPE: 32, 1; Mistral 128, 2)
beta_slow = 1
start = [1.0, 1.0, ...]       # or these factors (one per rotary pair; LongRoPE's --init-factors, e.g. an
                              # earlier search's, as its progressive extension starts from them)
dtype = "float32"             # as a sweep's ("auto": bf16 where this machine runs it fast)
device = "cpu"

A spec's key (``SearchSpec.key``) hashes what decides its candidates and their scores; a results
directory keeps the spec it was started with and refuses another.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..models import DTYPES
from ..rope.checks import is_count
from ..sweep.spec import SpecError, read_toml
from .evolution import ALGORITHMS
from .loop import Hyper

FACTOR_LISTS = ("long", "short")
PERPLEXITY_MODES = ("first", "yarn")  # the modes that cut a document to its first L ids
HYPER_KEYS = tuple(f.name for f in fields(Hyper))


@dataclass(frozen=True)
class SearchSpec:
    model: str
    factor: float | None = None
    target_length: int | None = None
    factors: str = "long"
    algorithm: str = "dim_mono"
    objective: str = "perplexity"
    mode: str = "first"
    corpus: dict[str, Any] = field(default_factory=lambda: {"path": "shakespeare", "format": None, "field": "text"})
    n_docs: int = 2
    trials: int = 4
    depths: tuple[float, ...] = (10.0, 50.0, 90.0)
    seed: int = 42
    hyper: Hyper = field(default_factory=Hyper)
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    start: tuple[float, ...] | None = None
    dtype: str | None = None
    device: str = "cpu"
    name: str = "search"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("hyper"))
        data["depths"] = list(self.depths)
        data["start"] = None if self.start is None else list(self.start)
        return data

    @property
    def key(self) -> str:
        """A hash of everything that decides the candidates and their scores (not the name or device)."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("name", "device")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def scale(self, trained: int) -> float:
        """The length scale for a model trained at ``trained`` tokens."""
        return self.factor if self.factor is not None else self.target_length / trained

    def scored_length(self, trained: int) -> int:
        """The length candidates are scored at: the target (long factors) or the trained length (short)."""
        if self.factors == "short":
            return trained
        return self.target_length if self.target_length is not None else int(round(self.factor * trained))


KEYS = (
    "model",
    "factor",
    "target_length",
    "factors",
    "algorithm",
    "objective",
    "mode",
    "corpus",
    "n_docs",
    "trials",
    "depths",
    "seed",
    *HYPER_KEYS,
    "beta_fast",
    "beta_slow",
    "start",
    "dtype",
    "device",
    "name",
)


def _number(key: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"search.{key} = {value!r} is not allowed; expected a number")
    if positive and value <= 0:
        raise SpecError(f"search.{key} = {value!r} is not allowed; expected a positive number")
    return float(value)


def _count(key: str, value: Any) -> int:
    if not is_count(value):
        raise SpecError(f"search.{key} = {value!r} is not allowed; expected a positive integer")
    return int(value)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"search.{key} = {value!r} is not allowed; expected one of {', '.join(allowed)}")
    return value


def search_from_dict(table: Any, *, name: str = "search") -> SearchSpec:
    """A ``[search]`` table (a dict) as a :class:`SearchSpec`; anything wrong is one SpecError line."""
    if not isinstance(table, dict):
        raise SpecError(f"search = {table!r} is not allowed; expected a table of {', '.join(KEYS[:4])}, ...")
    if unknown := [k for k in table if k not in KEYS]:
        raise SpecError(f"search.{unknown[0]} is not a key of [search]; expected one of {', '.join(KEYS)}")
    if not isinstance(table.get("model"), str) or not table["model"]:
        raise SpecError("search.model is missing; expected a model (.gguf, folder, embedded name or hub id)")
    given = [k for k in ("factor", "target_length") if k in table]
    if len(given) != 1:
        raise SpecError(
            "[search] takes one of factor (the length scale) or target_length; "
            + ("both were given" if given else "neither was given")
        )
    factor = _number("factor", table["factor"]) if "factor" in table else None
    if factor is not None and factor <= 1:
        raise SpecError(f"search.factor = {factor!r} is not allowed; expected a length scale above 1")
    target = _count("target_length", table["target_length"]) if "target_length" in table else None
    corpus = table.get("corpus", "shakespeare")
    if isinstance(corpus, str):
        corpus = {"path": corpus}
    if not isinstance(corpus, dict) or "path" not in corpus or set(corpus) - {"path", "format", "field"}:
        raise SpecError(
            f"search.corpus = {corpus!r} is not allowed; expected a path or a table with path, format, field"
        )
    corpus = {"path": str(corpus["path"]), "format": corpus.get("format"), "field": corpus.get("field", "text")}
    objective = table.get("objective", "perplexity")
    if objective != "perplexity":
        from ..tasks import get_task, trial_tasks

        if not isinstance(objective, str) or get_task(objective) is None:
            allowed = ", ".join(["perplexity", *trial_tasks()])
            raise SpecError(f"search.objective = {objective!r} is not allowed; expected one of {allowed}")
    depths = table.get("depths", [10, 50, 90])
    if not isinstance(depths, list) or not depths:
        raise SpecError(f"search.depths = {depths!r} is not allowed; expected a list of percentages 0..100")
    depths = tuple(_number("depths", d, positive=False) for d in depths)
    if any(not 0 <= d <= 100 for d in depths):
        raise SpecError(f"search.depths = {list(depths)!r} is not allowed; expected percentages 0..100")
    seed = table.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise SpecError(f"search.seed = {seed!r} is not allowed; expected an integer 0 .. 2**32 - 1")
    try:
        hyper = Hyper(**{k: table[k] for k in HYPER_KEYS if k in table})
    except ValueError as err:
        raise SpecError(f"search.{err}") from None
    beta_fast = _number("beta_fast", table.get("beta_fast", 32.0))
    beta_slow = _number("beta_slow", table.get("beta_slow", 1.0))
    if beta_fast < beta_slow:
        raise SpecError(f"search.beta_fast = {beta_fast:g} must be >= beta_slow = {beta_slow:g}")
    start = table.get("start")
    if start is not None:
        if not isinstance(start, list) or not start:
            raise SpecError(f"search.start = {start!r} is not allowed; expected a list of factors, one per rotary pair")
        start = tuple(_number("start", x) for x in start)
    dtype = table.get("dtype")
    if dtype is not None and dtype != "auto" and dtype not in DTYPES:
        raise SpecError(f"search.dtype = {dtype!r} is not allowed; expected auto or one of {', '.join(DTYPES)}")
    device = table.get("device", "cpu")
    if not isinstance(device, str):
        raise SpecError(f"search.device = {device!r} is not allowed; expected cpu, cuda or cuda:N")
    return SearchSpec(
        model=table["model"],
        factor=factor,
        target_length=target,
        factors=_choice("factors", table.get("factors", "long"), FACTOR_LISTS),
        algorithm=_choice("algorithm", table.get("algorithm", "dim_mono"), ALGORITHMS),
        objective=objective,
        mode=_choice("mode", table.get("mode", "first"), PERPLEXITY_MODES),
        corpus=corpus,
        n_docs=_count("n_docs", table.get("n_docs", 2)),
        trials=_count("trials", table.get("trials", 4)),
        depths=depths,
        seed=seed,
        hyper=hyper,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        start=start,
        dtype=dtype,
        device=device,
        name=str(table.get("name", name)),
    )


def spec_from_record(data: dict[str, Any]) -> SearchSpec:
    """A spec as :meth:`SearchSpec.to_dict` wrote it (DIR/search.json)."""
    table = {k: v for k, v in data.items() if v is not None}
    table["corpus"] = {k: v for k, v in table.get("corpus", {}).items() if v is not None}
    return search_from_dict(table, name=table.get("name", "search"))


def load_search_spec(path: str | Path) -> SearchSpec:
    """A TOML file's ``[search]`` table."""
    path = Path(path)
    data = read_toml(path)
    if "search" not in data:
        raise SpecError(f"spec file {path} has no [search] table; ropekit search reads its [search] table")
    return search_from_dict(data["search"], name=path.stem)
