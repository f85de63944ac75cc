"""Running a sweep: the grid of (model, layer mix, rope, length) cells, resumable and failure-tolerant.

Per model the weights load once; each (layer mix, rope) reuses them under another plan. Per
document, one forward pass serves every length whose rope frequencies are the same (static
ropes: one pass at the largest length; dynamic: one per length past its trained length;
longrope: one per regime). Each document's score and each finished cell go to disk at once.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..cache import file_sha256
from ..data import load_corpus, tokenize
from ..eval.perplexity import Score, combine, first_tokens_scores, shared_passes, strided_score
from ..models import load_model, model_config, parse_layer_mix, read_model_config, reconfigure
from ..rope import RopeConfigError, rope_from_config
from .spec import SpecError, SweepSpec, rope_scaling_for
from .store import ResultStore, cell_key


@dataclass
class Cell:
    model: str
    rope: str
    layer_mix: str
    length: int
    key: str
    overrides: dict[str, Any]
    docs: list[str] = field(default_factory=list)  # the documents this cell scores, in order


@dataclass
class SweepSummary:
    out: Path
    cells: int
    computed: int
    reused: int
    failed: list[dict[str, Any]]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed


def rope_geometry(raw: dict[str, Any]) -> dict[str, Any]:
    """The head geometry presets are built for: the global layers' rope (else the first one)."""
    specs = rope_from_config(raw)
    spec = specs["full_attention"] or specs["sliding_attention"]
    return {
        "head_dim": spec.head_dim,
        "rope_theta": spec.rope_theta,
        "max_position_embeddings": spec.original_length,
        "partial_rotary_factor": spec.partial_rotary_factor,
    }


def plan_cells(spec: SweepSpec, corpus_sha: str) -> tuple[list[Cell], dict[str, tuple[Path, dict]]]:
    """Every cell of the grid, each checked by building its model config (no weights are read):
    a rope that fails validation or a mix that does not fit a model stops the sweep here."""
    cells, checkpoints = [], {}
    for model in spec.models:
        try:
            path, raw = read_model_config(model)
        except ValueError as err:
            raise SpecError(f"models: {err}") from None
        checkpoints[model] = (path, raw)
        for mix in spec.layer_mixes:
            for rope_name, rope in spec.ropes.items():
                try:
                    overrides = {"rope_scaling": rope_scaling_for(rope, rope_geometry(raw)), **parse_layer_mix(mix)}
                    model_config(raw, **overrides)
                except (RopeConfigError, ValueError) as err:
                    raise SpecError(f"model {model!r}, rope {rope_name!r}, layer mix {mix!r}: {err}") from None
                for length in spec.lengths:
                    definition = {
                        "model": model,
                        "rope": rope_name,
                        "rope_scaling": overrides["rope_scaling"],
                        "layer_mix": mix,
                        "length": length,
                        "mode": spec.mode,
                        "stride": spec.stride,
                        "n_docs": spec.n_docs,
                        "corpus": corpus_sha,
                        "dtype": spec.dtype,
                        "device": spec.device,
                    }
                    cells.append(Cell(model, rope_name, mix, length, cell_key(definition), overrides))
    return cells, checkpoints


def _failure(err: BaseException) -> str | None:
    """'oom' for running out of memory (CPU or GPU), else None."""
    text = str(err).lower()
    if isinstance(err, MemoryError | torch.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text:
        return "oom"
    return None


def run_sweep(spec: SweepSpec, out: Path, *, force: bool = False, quiet: bool = False) -> SweepSummary:
    """Run (or resume) ``spec`` into ``out``; returns what was computed, reused and what failed."""
    started = time.perf_counter()
    corpus = load_corpus(spec.corpus.source, format=spec.corpus.format, field=spec.corpus.field)
    cells, checkpoints = plan_cells(spec, corpus.sha256)
    store = ResultStore(out, spec, force=force)
    if force:
        store.keep_only({c.key for c in cells})
    meta = {
        "spec": spec.canonical(),
        "spec_sha256": spec.sha256,
        "name": spec.name,
        "versions": {
            "ropekit": __import__("ropekit").__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "python": platform.python_version(),
        },
        "device": spec.device,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "corpus": {
            "source": spec.corpus.source,
            "name": corpus.name,
            "documents": len(corpus.documents),
            "sha256": corpus.sha256,
        },
        "models": {m: {"path": str(p), "sha256": file_sha256(p)} for m, (p, _) in checkpoints.items()},
        "started": store.meta.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    earlier = float(store.meta.get("total_wall_seconds", store.meta.get("wall_seconds", 0.0)))  # resumed runs
    store.write_meta(meta)
    reused = sum(store.done(c.key) for c in cells)
    pending = [c for c in cells if not store.done(c.key)]
    failed: list[dict[str, Any]] = []
    progress = _Progress(len(cells), reused, quiet=quiet)
    for model_name in spec.models:
        model_cells = [c for c in pending if c.model == model_name]
        if not model_cells:
            continue
        base = load_model(model_name, device=spec.device, dtype=spec.dtype)
        tokens = tokenize(corpus, base.tokenizer)
        for cell in model_cells:
            cell.docs = [name for name, ids in tokens.items() if len(ids) >= cell.length][: spec.n_docs]
        groups = [(reconfigure(base, **group[0].overrides), group) for group in _groups(model_cells)]
        memos: dict[str, dict] = {}  # per document: passes of this model's weights, by signature
        progress.add_tokens(_work(groups, tokens, spec, store))
        for model, group in groups:
            failed += _run_group(model, group, tokens, spec, store, progress, memos)
    progress.close()
    store.write_meta(
        {
            **meta,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "total_wall_seconds": round(earlier + time.perf_counter() - started, 1),
        }
    )
    return SweepSummary(out, len(cells), len(pending), reused, failed, time.perf_counter() - started)


def _groups(cells: list[Cell]) -> list[list[Cell]]:
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.layer_mix, cell.rope), []).append(cell)
    return list(groups.values())


def _todo(cells: list[Cell], doc: str, store: ResultStore) -> list[Cell]:
    return [c for c in cells if doc in c.docs and store.doc_score(c.key, doc) is None]


def _doc_work(model, todo: list[Cell], n_tokens: int, spec: SweepSpec, planned: dict) -> int:
    """Tokens pushed through the model to score one document for the cells ``todo``; ``planned``
    (signature -> pass length already run for this document) is updated, as the memo will be."""
    if spec.mode != "first":
        return sum(c.length * math.ceil(n_tokens / spec.stride) for c in todo)
    work = 0
    for signature, length, _ in shared_passes(model, [c.length for c in todo]):
        if planned.get(signature, 0) < length:
            work, planned[signature] = work + length, length
    return work


def _work(groups: list, tokens: dict, spec: SweepSpec, store: ResultStore) -> int:
    """Tokens the whole sweep of one model will push through it, for the progress bar's ETA."""
    planned: dict[str, dict] = {}
    total = 0
    for model, cells in groups:
        for doc in dict.fromkeys(d for c in cells for d in c.docs):
            if todo := _todo(cells, doc, store):
                total += _doc_work(model, todo, len(tokens[doc]), spec, planned.setdefault(doc, {}))
    return total


def _run_group(
    model, cells: list[Cell], tokens: dict, spec: SweepSpec, store: ResultStore, progress: _Progress, memos: dict
) -> list[dict[str, Any]]:
    """All lengths of one (model, layer mix, rope), document by document; returns failed rows."""
    failed, broken, recorded, scored = [], {}, set(), set()  # broken: cell key -> (status, detail)
    started = time.perf_counter()
    for doc in dict.fromkeys(d for c in cells for d in c.docs):
        todo = [c for c in _todo(cells, doc, store) if c.key not in broken]
        if todo:
            ids = torch.as_tensor(tokens[doc], dtype=torch.long)
            memo = memos.setdefault(doc, {})
            work = _doc_work(model, todo, len(ids), spec, {sig: len(r) - 1 for sig, r in memo.items()})
            scores, failures = _score_doc(model, ids, [c.length for c in todo], spec, memo)
            broken.update(
                {
                    c.key: (failures[c.length][0], f"{doc}: {failures[c.length][1]}")
                    for c in todo
                    if c.length in failures
                }
            )
            for c in todo:
                if c.length in scores:
                    scored.add((c.key, doc))
                    store.add_doc(
                        {
                            "cell": c.key,
                            "model": c.model,
                            "rope": c.rope,
                            "layer_mix": c.layer_mix,
                            "length": c.length,
                            "doc": doc,
                            "n_tokens": scores[c.length].n_tokens,
                            "nll_sum": repr(scores[c.length].nll_sum),
                        }
                    )
            progress.done_tokens(work)
        for c in cells:
            if c.key in recorded or not c.docs:
                continue
            if c.key in broken or all(store.doc_score(c.key, d) is not None or (c.key, d) in scored for d in c.docs):
                recorded.add(c.key)
                row = _cell_row(c, store, broken.get(c.key), time.perf_counter() - started)
                store.add_cell(row)
                progress.cell_done(row)
                failed += [row] if row["status"] != "ok" else []
    for c in cells:  # lengths no document reaches
        if not c.docs:
            row = _cell_row(c, store, ("no_docs", f"no document has {c.length} tokens"), 0.0)
            store.add_cell(row)
            progress.cell_done(row)
            failed.append(row)
    return failed


def _score_doc(
    model, ids: torch.Tensor, lengths: list[int], spec: SweepSpec, memo: dict
) -> tuple[dict[int, Score], dict[int, tuple[str, str]]]:
    """Scores of one document at ``lengths``, and (status, message) for lengths that failed. When a
    pass shared by several lengths runs out of memory, each length is retried on its own, so the
    shorter ones still get their numbers."""
    try:
        if spec.mode == "first":
            return first_tokens_scores(model, ids, lengths, memo=memo), {}
        return {length: strided_score(model, ids, length, spec.stride) for length in lengths}, {}
    except (RuntimeError, MemoryError) as err:
        status = _failure(err)
        if status is None:
            raise
        if len(lengths) == 1:
            return {}, {lengths[0]: (status, str(err).splitlines()[0][:200])}
    scores, failures = {}, {}
    for length in lengths:
        one, failed = _score_doc(model, ids, [length], spec, memo)
        scores.update(one)
        failures.update(failed)
    return scores, failures


def _cell_row(c: Cell, store: ResultStore, failure: tuple[str, str] | None, seconds: float) -> dict[str, Any]:
    row = {
        "model": c.model,
        "rope": c.rope,
        "layer_mix": c.layer_mix,
        "length": c.length,
        "cell": c.key,
        "seconds": round(seconds, 2),
    }
    if failure is not None:
        return {
            **row,
            "n_docs": len(c.docs),
            "n_tokens": 0,
            "nll": "",
            "ppl": "",
            "status": failure[0],
            "detail": failure[1],
        }
    total = combine([Score(float(r["nll_sum"]), int(r["n_tokens"])) for r in (store.docs[c.key, d] for d in c.docs)])
    status = "ok" if math.isfinite(total.nll_sum) else "nan"
    return {
        **row,
        "n_docs": len(c.docs),
        "n_tokens": total.n_tokens,
        "nll": f"{total.nll:.6f}",
        "ppl": f"{total.ppl:.4f}",
        "status": status,
        "detail": "" if status == "ok" else "non-finite loss",
    }


class _Progress:
    """A tqdm bar over tokens, with cells done in its postfix; silent with quiet=True."""

    def __init__(self, cells: int, reused: int, *, quiet: bool):
        from tqdm.auto import tqdm

        self.cells, self.finished = cells, reused
        self.bar = tqdm(
            total=0, unit="tok", unit_scale=True, disable=quiet, dynamic_ncols=True, desc="sweep", smoothing=0.1
        )
        self._postfix()

    def _postfix(self, last: str = "") -> None:
        self.bar.set_postfix_str(f"cells {self.finished}/{self.cells}{' ' + last if last else ''}")

    def add_tokens(self, n: int) -> None:
        self.bar.total += n
        self.bar.refresh()

    def done_tokens(self, n: int) -> None:
        self.bar.update(n)

    def cell_done(self, row: dict[str, Any]) -> None:
        self.finished += 1
        last = f"{row['rope']}@{row['length']}: " + (f"ppl {row['ppl']}" if row["status"] == "ok" else row["status"])
        self._postfix(last)

    def close(self) -> None:
        self.bar.close()
