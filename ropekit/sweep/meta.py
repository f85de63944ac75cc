"""DIR/meta.json: what it takes to reproduce a sweep, and the refusals of a DIR computed otherwise
(another dtype, another snapshot of a hub model).
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
from .spec import SpecError, SweepSpec, reproduce_command


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
        }
    try:
        meta["command"] = reproduce_command(meta, out)
    except ValueError:  # a rope name no flag can carry: the spec above still reruns it
        meta["command"] = None
    return {**meta, "started": started or datetime.now(timezone.utc).isoformat(timespec="seconds")}
