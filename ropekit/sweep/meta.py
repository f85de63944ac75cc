"""DIR/meta.json: what it takes to reproduce a sweep, and the refusals of a DIR computed otherwise
(another dtype, another snapshot of a hub model, a corpus or a model's files changed since).
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import stats
from ..cache import file_sha256
from ..eval.perplexity import BLOCK
from ..models import Checkpoint, Precision
from ..tasks import get_task
from .cells import Cell
from .spec import SpecError, SweepSpec, reproduce_command
from .store import StoredResults
from .units import SweepPlan


def check_dtype(meta: dict[str, Any], precision: Precision, out: Path) -> None:
    """Refuse to add numbers in one dtype to a DIR that holds another's (``dtype = "auto"`` resolved
    on another machine), as for a changed spec."""
    stored = meta.get("dtype", {})
    if isinstance(stored, str):  # meta.json of a ropekit before "auto": the dtype's name
        stored = {"asked": stored, "resolved": stored, "reason": "asked for"}
    if stored.get("resolved", precision.name) != precision.name:
        raise SpecError(
            f"{out} holds numbers computed in {stored['resolved']} ({stored.get('reason')}); here dtype "
            f"{stored.get('asked')} is {precision.name} ({precision.reason}); use another --out, or --force to "
            f"drop them and compute in {precision.name}"
        )


def check_snapshots(meta: dict[str, Any], checkpoints: dict[str, Checkpoint], out: Path) -> None:
    """A DIR resumed where a hub id's revision now names another commit is refused: its cells were
    computed from the snapshot meta.json records."""
    for model, checkpoint in checkpoints.items():
        stored = meta.get("models", {}).get(model, {}).get("commit")
        if checkpoint.hub and stored and stored != checkpoint.hub.commit:
            raise SpecError(
                f"{out} holds cells of {model} at commit {stored}, but revision {checkpoint.hub.revision!r} is now "
                f"commit {checkpoint.hub.commit}; use another --out, or --force to drop those cells"
            )


def changed_models(meta: dict[str, Any], checkpoints: dict[str, Checkpoint]) -> dict[str, str]:
    """The models whose files are not those DIR's cells were computed from (meta.json's SHA-256 of the
    weights and config), each with what changed. A local model's cells are keyed by its plan, not its
    bytes, so this is what tells that its numbers are stale; a hub model's snapshot is ``check_snapshots``'s."""
    changed = {}
    for model, checkpoint in checkpoints.items():
        stored = meta.get("models", {}).get(model, {}).get("sha256")
        if stored and not checkpoint.hub and stored != (now := file_sha256(checkpoint.path)):
            changed[model] = f"the files of model {model!r} have changed (sha256 {stored[:12]}, now {now[:12]})"
    return changed


def corpus_change(meta: dict[str, Any], corpus) -> str | None:
    """What has changed in the corpus since DIR's cells read it (documents changed, added and removed,
    by meta.json's per-document SHA-256), or None when it is the same."""
    stored = meta.get("corpus", {})
    if not stored.get("sha256") or stored["sha256"] == corpus.sha256:
        return None
    before, now = stored.get("document_sha256"), _document_hashes(corpus)
    if before is None:  # a meta.json of a ropekit before per-document hashes
        return f"corpus {stored.get('source')!r} has changed (sha256 {stored['sha256'][:12]}, now {corpus.sha256[:12]})"
    parts = []
    for what, names in (
        ("changed", [d for d in now if d in before and before[d] != now[d]]),
        ("added", [d for d in now if d not in before]),
        ("removed", [d for d in before if d not in now]),
    ):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            parts.append(f"{what} {', '.join(map(repr, names[:3]))}{more}")
    if not parts:
        parts.append("the same documents in another order")
    return f"corpus {stored.get('source')!r} has changed since (documents {'; '.join(parts)})"


def check_inputs(
    stored: StoredResults, corpus, checkpoints: dict[str, Checkpoint], cells: list[Cell], out: Path
) -> None:
    """Refuse to resume a DIR whose cells read other inputs than these: a corpus changed since (its
    cells are keyed by the corpus's hash, so the old rows would stand beside the new ones), or a local
    model's files. Only what DIR holds a row of counts: a corpus no stored cell read may change."""
    keys = {c.key for c in cells}
    held = set(stored.rows) | {cell for cell, _ in stored.docs} | {cell for cell, _ in stored.trials}
    problems = []
    if held - keys and (change := corpus_change(stored.meta, corpus)):
        problems.append(change)
    models = {c.model for c in cells if c.key in held}
    problems += [change for model, change in changed_models(stored.meta, checkpoints).items() if model in models]
    if problems:
        raise SpecError(
            f"{out} holds cells computed from other inputs: {'; '.join(problems)}; use another --out, or --force to "
            "compute those cells again from the inputs as they are now"
        )


def check_resumable(stored: StoredResults, plan: SweepPlan, out: Path) -> None:
    """Refuse to add to a DIR computed otherwise (without ``--force``): in another dtype, from another
    snapshot of a hub model, or from a corpus or model files changed since."""
    check_dtype(stored.meta, plan.precision, out)
    check_snapshots(stored.meta, plan.checkpoints, out)
    check_inputs(stored, plan.corpus, plan.checkpoints, plan.cells, out)


def _document_hashes(corpus) -> dict[str, str]:
    """Each document's SHA-256 (its first 16 hex digits: enough to tell a change), by name, in corpus order."""
    return {doc.name: doc.sha256[:16] for doc in corpus.documents}


def sweep_meta(
    spec: SweepSpec, corpus, checkpoints: dict[str, Checkpoint], out: Path, precision: Precision, *, started: str | None
) -> dict[str, Any]:
    """meta.json: what it takes to reproduce the sweep (the spec as ``spec_from_dict`` takes it back
    and the ``ropekit sweep`` command that reruns it, content hashes of corpus and models and, for a
    hub id, the repository, revision and commit that ran, versions,
    the dtype the models ran in and why, device, threads, interval settings), and when it first
    started (kept across resumed runs)."""
    meta = {
        "name": spec.name,
        "spec": spec.to_dict(),
        "spec_sha256": spec.sha256,
        "corpus": {
            "source": spec.corpus.path,
            "name": corpus.name,
            "documents": len(corpus.documents),
            "sha256": corpus.sha256,
            "document_sha256": _document_hashes(corpus),
        },
        "models": {m: {**c.record(), "sha256": file_sha256(c.path)} for m, c in checkpoints.items()},
        "versions": {
            "ropekit": __import__("ropekit").__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "dtype": {"asked": spec.dtype, "resolved": precision.name, "reason": precision.reason},
        "device": spec.device,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "intervals": {
            "method": "percentile bootstrap",
            "resamples": stats.N,
            "level": stats.LEVEL,
            "units": f"the cell's documents when it has at least {stats.MIN_UNITS}, else each document's blocks "
            f"resampled within it; no interval from fewer than {stats.MIN_UNITS} units",
            "min_units": stats.MIN_UNITS,
            "block": BLOCK,
            "weighting": "as ppl: by tokens (yarn: by documents; blocks by tokens)",
            "seed": "seed_of(cell key): the first 4 bytes of the SHA-256 of the cell key, little-endian, seeding "
            "numpy.random.RandomState",
        },
    }
    if spec.retrieval_tasks:
        meta["retrieval"] = {
            "exact": "every answer token is the argmax given the prompt and the answer tokens before it (greedy "
            "decoding's outcome), scored teacher-forced in one forward of prompt + answer - 1 tokens",
            "accuracy_interval": f"Wilson score interval, {stats.LEVEL:.0%}, over the cell's trials",
            "depth": "percent of the haystack's tokens before the needle line",
            "answer": "the value after a space, tokenized as the question's continuation (lm-evaluation-harness's "
            "split of context and continuation)",
            "prompts": "each trial from numpy default_rng([seed, crc32(task), length, round(depth * 1e6), trial])",
            "tasks": {task: get_task(task).description for task in spec.retrieval_tasks},
            # the depths each task's cells are at; [] for a task that places its needles at random (RULER's)
            "depths": {task: [d for d in s.cell_depths if d is not None] for task, s in spec.retrieval_tasks.items()},
        }
        if own := {task: get_task(task).own_columns() for task in spec.retrieval_tasks if get_task(task).columns}:
            # the columns each task that scores its own way fills, and how a report shows them (OwnColumns)
            meta["retrieval"]["own"] = {
                task: {"columns": list(get_task(task).columns), **shown.to_dict()} for task, shown in own.items()
            }
        if sources := {task: read for task, s in spec.retrieval_tasks.items() if (read := s.sources())}:
            meta["retrieval"]["sources"] = sources  # which local texts each task read (RULER's essay, a QA dataset)
        if generated := [task for task in spec.retrieval_tasks if get_task(task).match]:
            meta["retrieval"]["scores"] = {task: get_task(task).metric or "score" for task in generated}
            meta["retrieval"]["generated"] = (
                "RULER's tasks: greedy decoding writes up to tokens_to_generate tokens after the prompt, stopping at "
                "EOS; the output's score is the task's in scores: RULER's string_match_all (the share of the "
                "reference values in it) or string_match_part (1 where any reference is in it), case-insensitive; "
                "accuracy is the trials' mean, its interval Wilson's of that mean (conservative for partial "
                "credit), or a percentile bootstrap over trials where partial credit has 16 trials or more; samples "
                "as lm-evaluation-harness's port of RULER draws them, Python's and numpy's generators seeded with "
                "the task's seed"
            )
    try:
        meta["command"] = reproduce_command(meta, out)
    except ValueError:  # a rope no flag carries as it is: the spec above still reruns it
        meta["command"] = None
    return {**meta, "started": started or datetime.now(timezone.utc).isoformat(timespec="seconds")}
