"""A sweep directory's results as one tidy DataFrame, with the cells the spec plans but nobody ran yet.

Columns are those of ``results.csv`` (model, rope, layer_mix, length, n_docs, n_tokens, nll, ppl,
ppl_lo, ppl_hi, interval, bits_per_byte, word_ppl, status, ...) plus ``trained_context`` (the
trained length of the model's rope, from the plans the sweep stored in DIR/plans.json) so the
figures can mark it. ``status`` is ``ok`` for a number, the sweep's failure status (``oom``,
``nan``, ``no_docs``) for a failed cell, and ``pending`` for a planned cell with no row yet. A
directory written before ropekit stored intervals (no ``ppl_lo``, ``ppl_hi``, ``interval``,
``bits_per_byte`` columns; a ``seconds`` column instead) reads the same, those columns empty.
DIR/documents.csv (a row per cell and document: NLL sum, tokens, bytes, words and ``blocks``, the
NLL sums of its consecutive 64-prediction blocks) is read into ``Sweep.documents`` for paired
comparisons. Nothing here loads a model or reads a checkpoint: reports depend on the results files
and ropekit.rope only. A symbolic link at one of the files read (``READ``) is refused, naming it: what
it points to is no file of the sweep (``ropekit.cache.no_links``).

A sweep with retrieval tasks (meta.json's spec lists ``tasks``) has a ``task`` column: its
``perplexity`` rows are ``Sweep.results`` as above, its ``passkey`` and ``needle`` rows (one per
model, layer mix, rope, task, length and ``depth``, the percent of the haystack before the needle)
``Sweep.retrieval``, with a ``pending`` row for every planned (..., length, depth) without one, and
DIR/trials.csv (a row per trial; the last of a (cell, trial) counts) is ``Sweep.trials``. A directory
without a ``task`` column holds perplexity only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import no_links
from ..modes import PERPLEXITY
from . import own

if TYPE_CHECKING:
    import pandas as pd


PENDING = "pending"
READ = ("results.csv", "documents.csv", "trials.csv", "meta.json", "plans.json")  # what a report reads of DIR
REQUIRED = ("model", "rope", "layer_mix", "length", "n_docs", "nll", "ppl", "status")  # of results.csv
NUMBERS = ("ppl_lo", "ppl_hi", "bits_per_byte", "word_ppl")  # empty where a directory predates them
DOCUMENTS = ("cell", "doc", "n_tokens", "nll_sum")  # what documents.csv needs for a paired comparison
RETRIEVAL = ("depth", "n_trials", "accuracy", "accuracy_lo", "accuracy_hi", "mean_logprob")  # retrieval rows only
TRIALS = ("cell", "trial", "exact", "logprob")  # what trials.csv needs for an interval
# The sweep's defaults for a retrieval task whose table omits them (ropekit.sweep.spec.TaskSpec, which
# report/ may not import): 5 trials at each of depths 0, 10, ..., 100 % of the haystack.
DEPTHS = tuple(range(0, 101, 10))
TRIALS_PER_DEPTH = 5


class ReportError(ValueError):
    """A directory or table a report cannot be built from; the message says what is missing."""


@dataclass
class ModelRopes:
    """What a report needs to know about one model of a sweep, read from DIR/plans.json."""

    trained_context: int
    ropes: dict[str, dict[str, Any]]  # rope name -> the rope of its global (full attention) layers, as recorded
    frequencies: dict[str, dict[str, Any]] = field(default_factory=dict)  # rope name -> what plans.json keeps of it


@dataclass
class Sweep:
    """A sweep directory read back: its results (with pending cells) and its provenance."""

    path: Path
    results: pd.DataFrame
    meta: dict[str, Any]
    models: dict[str, ModelRopes | None] = field(default_factory=dict)  # None: no plan stored for it
    documents: pd.DataFrame | None = None  # documents.csv; None when absent or without NLL sums
    has_intervals: bool = False  # results.csv has the ppl_lo/ppl_hi columns
    retrieval: pd.DataFrame | None = None  # passkey/needle rows with pending ones; empty (load_sweep) when none
    trials: pd.DataFrame | None = None  # trials.csv; None when absent
    own: dict[str, pd.DataFrame] = field(default_factory=dict)  # per task with columns of its own: its rows (own.py)

    @property
    def spec(self) -> dict[str, Any]:
        return self.meta.get("spec", {})

    @property
    def shown(self) -> dict[str, dict[str, Any]]:
        """How each task with columns of its own shows them (report/own.py), as meta.json says."""
        return own.shown_tasks(self.meta)

    @property
    def has_retrieval(self) -> bool:
        return self.retrieval is not None and not self.retrieval.empty


def load_results(path: str | Path) -> pd.DataFrame:
    """``DIR/results.csv`` (or a results.csv path) as a DataFrame, planned cells without a row
    added as ``pending``, models, ropes and layer mixes in the spec's order, and each model's trained
    context (read from its config, no weights; NA when the checkpoint is gone)."""
    return load_sweep(path).results


def load_sweep(path: str | Path) -> Sweep:
    """Everything a report shows about a sweep directory, complete or partial."""
    import pandas as pd

    path = Path(path)
    folder = path.parent if path.suffix == ".csv" else path
    results_path = path if path.suffix == ".csv" else folder / "results.csv"
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a directory; expected a sweep directory (ropekit sweep --out DIR)")
    no_links(folder, *READ)
    meta = _read_meta(folder / "meta.json")
    if not results_path.exists() and not meta:
        raise ReportError(f"{folder} holds neither results.csv nor meta.json; is it a sweep directory?")
    shown = own.shown_tasks(meta)
    rows, retrieval_rows, own_rows = _read_rows(results_path, shown)
    has_intervals = {"ppl_lo", "ppl_hi"} <= set(rows.columns)
    spec = meta.get("spec", {})
    frame = _with_pending(rows, spec)
    retrieval = _retrieval_with_pending(retrieval_rows, spec, meta)
    owns = {
        task: _in_spec_order(own.frame_of(task, own_rows.get(task, []), spec, shown[task]), spec, ["length"])
        for task in shown
    }
    if frame.empty and retrieval.empty and not any(len(f) for f in owns.values()):
        raise ReportError(f"{folder} has no results and its meta.json plans no cells")
    plans = _read_plans(folder / "plans.json")
    infos = {m: _model_ropes(m, plans) for m in dict.fromkeys([*frame["model"], *retrieval["model"]])}
    trained = {m: info.trained_context for m, info in infos.items() if info is not None}
    for table in (frame, retrieval):
        table["trained_context"] = pd.array([trained.get(m) for m in table["model"]], dtype="Int64")
    documents = _read_documents(folder / "documents.csv")
    trials = _read_trials(folder / "trials.csv")
    return Sweep(folder, frame, meta, infos, documents, has_intervals, retrieval, trials, owns)


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ReportError(f"{path} is not valid JSON ({err})") from None


def _read_rows(path: Path, shown: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[dict[str, str]]]]:
    """results.csv's perplexity rows (without the retrieval columns) and its retrieval rows, each
    parsed on its own so that one's empty fields do not turn the other's integers into floats, and the
    rows of each task with columns of its own that ``shown`` names (``report/own.py`` reads them)."""
    import pandas as pd

    from ..cache import csv_text, read_csv

    if not path.exists():
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED})
        return empty, empty.copy(), {}
    header, rows, _ = read_csv(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ReportError(f"{path} lacks the column(s) {', '.join(missing)}; is it a ropekit results.csv?")
    if "cell" in header:
        rows = list({r["cell"]: r for r in rows}.values())  # a cell run again: its last row, where it first ran
    owned = {task: [r for r in rows if r.get("task") == task] for task in shown}  # tasks with columns of their own
    rows = [r for r in rows if r.get("task") not in shown]
    perplexity = [r for r in rows if r.get("task", PERPLEXITY) in (PERPLEXITY, "")]
    retrieval = [r for r in rows if r.get("task", PERPLEXITY) not in (PERPLEXITY, "")]
    columns = [c for c in header if c not in ("task", *RETRIEVAL)]
    return _parse(path, csv_text(columns, perplexity)), _parse(path, csv_text(header, retrieval)), owned


def _parse(path: Path, text: str) -> pd.DataFrame:
    import io

    import pandas as pd

    try:
        return pd.read_csv(  # only an empty field is missing: status "nan" (a non-finite loss) is a status
            io.StringIO(text),
            dtype={"model": str, "rope": str, "layer_mix": str, "task": str, "status": str, "detail": str},
            keep_default_na=False,
            na_values=[""],
        )
    except (ValueError, pd.errors.ParserError) as err:
        raise ReportError(f"{path} is not a readable CSV ({err})") from None


def _with_pending(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Add a ``pending`` row for every cell the spec plans that has no row, and order the axes as
    the spec lists them."""
    import pandas as pd

    models = list(spec.get("models", []))
    ropes, mixes, lengths = list(spec.get("ropes", {})), list(spec.get("layer_mixes", [])), spec.get("lengths", [])
    if PERPLEXITY not in spec.get("tasks", [PERPLEXITY]):
        lengths = []
    have = set(zip(frame["model"], frame["rope"], frame["layer_mix"], frame["length"].astype(int), strict=True))
    pending = [
        {"model": m, "rope": r, "layer_mix": x, "length": n, "status": PENDING}
        for m in models
        for x in mixes
        for r in ropes
        for n in lengths
        if (m, r, x, n) not in have
    ]
    if pending:
        frame = pd.concat([frame, pd.DataFrame(pending)], ignore_index=True)
    frame["length"] = frame["length"].astype(int)
    frame["ppl"] = pd.to_numeric(frame["ppl"], errors="coerce")
    frame["nll"] = pd.to_numeric(frame.get("nll"), errors="coerce")
    for column in NUMBERS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else float("nan")
    frame["interval"] = (
        frame["interval"].astype(object).where(frame["interval"].notna(), "").astype(str) if "interval" in frame else ""
    )
    frame["status"] = frame["status"].fillna("error").astype(str)
    frame.loc[frame["status"] != "ok", ["ppl", "nll", *NUMBERS]] = float("nan")
    return _in_spec_order(frame, spec, ["length"])


def _in_spec_order(frame: pd.DataFrame, spec: dict[str, Any], then: list[str], tasks: list[str] = ()) -> pd.DataFrame:
    """Rows by model, layer mix, (task), rope in the spec's order (meta.json keeps it), then by ``then``:
    the order the spec, ``--dry-run`` and the README list them in, whatever order the units ran in
    (units of shared passes run together, several workers at once). Values the spec does not list
    (a directory without meta.json) follow in results.csv's order."""
    order = {}
    axes = [("model", spec.get("models", [])), ("layer_mix", spec.get("layer_mixes", []))]
    axes += [("task", tasks)] if tasks else []
    axes += [("rope", list(spec.get("ropes", {})))]
    for column, planned in axes:
        order[column] = list(dict.fromkeys([*planned, *frame[column]]))
        frame[column + "_order"] = frame[column].map({v: i for i, v in enumerate(order[column])})
    frame = frame.sort_values([c + "_order" for c in order] + then, kind="stable")
    return frame.drop(columns=[c + "_order" for c in order]).reset_index(drop=True)


def retrieval_plan(spec: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Each retrieval task the spec runs with its ``trials`` and ``depths`` (the sweep's defaults where
    its table omits them; ``[None]`` for a task that places no needle, as meta.json's ``retrieval.depths``
    says); {} for a spec without ``tasks`` (perplexity only)."""
    shown = own.shown_tasks(meta or {})
    tables = {task: spec.get(task) or {} for task in spec.get("tasks", []) if task not in (PERPLEXITY, *shown)}
    written = (meta or {}).get("retrieval", {}).get("depths", {})
    return {
        task: {
            "trials": table.get("trials", TRIALS_PER_DEPTH),
            "depths": (written[task] or [None]) if task in written else list(table.get("depths", DEPTHS)),
        }
        for task, table in tables.items()
    }


def _depth(value: Any) -> float | None:
    """A depth as results.csv writes it (``f"{depth:g}"``) read back, so 33.3333 planned matches 33.3 run;
    None for a cell of a task that places no needle (written empty)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(f"{float(value):g}")


def _retrieval_with_pending(rows: pd.DataFrame, spec: dict[str, Any], meta: dict[str, Any]) -> pd.DataFrame:
    """The retrieval rows, numbers parsed, with a ``pending`` row for each planned (model, layer mix,
    rope, task, length, depth) without one, in the spec's order."""
    import pandas as pd

    columns = ["model", "rope", "layer_mix", "task", "length", "depth", "n_tokens", *RETRIEVAL[1:]]
    columns += ["status", "detail", "cell"]
    frame = rows.reindex(columns=columns).copy()
    depths = [_depth(d) for d in frame["depth"]]  # None (no depth) stays None here, NaN in the frame
    frame["depth"] = depths
    plan = retrieval_plan(spec, meta)
    key = ["model", "rope", "layer_mix", "task", "length"]
    rows_named = frame[key].itertuples(index=False, name=None)
    have = {(*named, depth) for named, depth in zip(rows_named, depths, strict=True)}
    pending = [
        {"model": m, "rope": r, "layer_mix": x, "task": t, "length": n, "depth": _depth(d), "status": PENDING}
        for m in spec.get("models", [])
        for x in spec.get("layer_mixes", [])
        for r in spec.get("ropes", {})
        for t, settings in plan.items()
        for n in spec.get("lengths", [])
        for d in settings["depths"]
        if (m, r, x, t, n, _depth(d)) not in have
    ]
    if pending:
        frame = pd.concat([frame, pd.DataFrame(pending, columns=columns)], ignore_index=True)
    frame["length"] = frame["length"].astype(int)
    for column in ("depth", "n_tokens", *RETRIEVAL[1:]):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["status"] = frame["status"].fillna("error").astype(str)
    frame["detail"] = frame["detail"].fillna("").astype(str)
    frame.loc[frame["status"] != "ok", list(RETRIEVAL[2:])] = float("nan")
    return _in_spec_order(frame, spec, ["length", "depth"], tasks=list(plan))


def _read_trials(path: Path) -> pd.DataFrame | None:
    """DIR/trials.csv, the last row of each (cell, trial), numbers parsed; None when absent or without
    the columns an interval needs."""
    import pandas as pd

    from ..cache import read_csv

    header, rows, _ = read_csv(path)
    if not rows or any(c not in header for c in TRIALS):
        return None
    rows = list({(r["cell"], r["trial"]): r for r in rows}.values())  # a retried trial: the last row counts
    frame = pd.DataFrame(rows, columns=header)
    for column in ("length", "depth", "trial", "position", "n_answer", "n_correct", "exact", "logprob", "match"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if "depth" in frame:
        frame["depth"] = [_depth(d) for d in frame["depth"]]
    return frame


def _read_documents(path: Path) -> pd.DataFrame | None:
    """DIR/documents.csv, the last row of each (cell, document), ``blocks`` parsed to a tuple of
    floats (empty when the directory predates blocks); None when absent or unreadable as such."""
    import pandas as pd

    from ..cache import read_csv

    header, rows, _ = read_csv(path)
    if not rows or any(c not in header for c in DOCUMENTS):
        return None
    rows = list({(r["cell"], r["doc"]): r for r in rows}.values())  # a retried document: the last row counts
    frame = pd.DataFrame(rows, columns=header)
    for column in ("n_tokens", "nll_sum", "n_bytes", "n_words"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else float("nan")
    frame["blocks"] = [_floats(text) for text in frame.get("blocks", [""] * len(frame))]
    return frame


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in str(text).split())
    except ValueError:  # a malformed field: no blocks rather than wrong ones
        return ()


def _read_plans(path: Path) -> list[dict[str, Any]]:
    """DIR/plans.json (the resolved plan of each model, layer mix and rope); [] when absent."""
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ReportError(f"{path} is not valid JSON ({err})") from None


def _model_ropes(model: str, plans: list[dict[str, Any]]) -> ModelRopes | None:
    """Trained context and the rope of each rope name's global layers (else its first rope) of a
    model, from the plans the sweep resolved; None when the directory holds no plan for it."""
    records = [p for p in plans if p["model"] == model]
    if not records:
        return None
    ropes: dict[str, dict[str, Any]] = {}
    frequencies: dict[str, dict[str, Any]] = {}
    for prefer_global in (True, False):
        for record in records:
            keys = [
                layer["rope"]
                for layer in record["layers"]
                if layer["rope"] and (layer["attention"] == "full_attention" or not prefer_global)
            ]
            if keys and record["rope"] not in ropes:
                ropes[record["rope"]] = record["ropes"][keys[0]]  # RopeSpec.to_record's dict
                if keys[0] in record.get("frequencies", {}):  # written by the sweep since issue 27
                    frequencies[record["rope"]] = record["frequencies"][keys[0]]
    return ModelRopes(records[0]["trained_context"], ropes, frequencies)
