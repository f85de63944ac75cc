"""Planning the grid: every cell of a spec with its resolved plan, read from configs alone (no weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models import (
    Checkpoint,
    ModelConfig,
    Precision,
    checkpoint_config,
    plan_config,
    read_model_config,
    resolve_dtype,
)
from ..tasks import TrialSettings, get_task
from .spec import SpecError, SweepSpec
from .store import cell_key


@dataclass(frozen=True)
class Cell:
    model: str
    rope: str
    layer_mix: str
    length: int
    key: str
    config: ModelConfig  # the resolved plan this cell runs
    task: str
    depth: float | None = None  # a retrieval cell's needle depth, percent of the haystack (None: placed at random)
    settings: TrialSettings | None = None  # a trial task's cell: its task's settings
    checkpoint: Checkpoint | None = None  # where the model's files are, resolved once when planned


def plan_cells(
    spec: SweepSpec, corpus_sha: str, precision: Precision | None = None
) -> tuple[list[Cell], dict[str, Checkpoint]]:
    """Every cell of the grid with its resolved plan (no weights are read): each model is located once
    (a hub id: the commit its revision names now, part of its cells' keys, so numbers of two snapshots
    never mix) and its config filled with upstream's defaults once, then each (layer mix, rope) is
    resolved from it once. A rope that fails validation or a mix that does not fit a model stops the
    sweep here. ``precision``: what the spec's dtype resolves to on this machine (resolved here when
    not given). Returns the cells and each model's checkpoint."""
    cells, checkpoints = [], {}
    precision = precision or resolve_dtype(spec.dtype, spec.device)
    # "auto" is keyed by what it resolves to here, so that a DIR resumed on another machine never
    # mixes bf16 and fp32 numbers in a cell; other dtypes by the spec's word (the keys DIRs hold).
    dtype = precision.name if spec.dtype == "auto" else spec.dtype
    for model in spec.models:
        try:
            located, raw = read_model_config(model)
            checkpoint = checkpoint_config(raw)
        except ValueError as err:
            raise SpecError(f"models: {err}") from None
        checkpoints[model] = located
        snapshot = {"commit": located.hub.commit} if located.hub else {}  # local models' keys stay as they were
        for mix in spec.layer_mixes:
            for rope_name, rope in spec.ropes.items():
                try:
                    config = plan_config(checkpoint, rope_scaling=rope, layer_mix=mix)
                except ValueError as err:
                    raise SpecError(f"model {model!r}, rope {rope_name!r}, layer mix {mix!r}: {err}") from None
                record = config.plan_record()  # what decides the numbers, whatever the spec called it
                where = {"model": model, "rope": rope_name, "plan": record, "layer_mix": mix, **snapshot}
                cells += trial_cells(spec, where, config, corpus_sha, dtype, located)
                if spec.document_task:
                    cells += document_cells(spec, where, config, corpus_sha, dtype, located)
    return cells, checkpoints


def document_cells(
    spec: SweepSpec, where: dict[str, Any], config: ModelConfig, corpus: str, dtype, checkpoint: Checkpoint
) -> list[Cell]:
    """One (model, layer mix, rope)'s cells of the task that scores documents (perplexity), one per length;
    a cell's key holds what decides its documents and numbers (mode, stride, n_docs, the corpus) and its plan."""
    cells = []
    for length in spec.lengths:
        definition = {**where, "length": length, "mode": spec.mode, "stride": spec.stride, "n_docs": spec.n_docs}
        definition |= {"corpus": corpus, "dtype": dtype, "device": spec.device}
        fields = where["model"], where["rope"], where["layer_mix"], length, cell_key(definition), config
        cells.append(Cell(*fields, task=spec.document_task, checkpoint=checkpoint))
    return cells


def trial_cells(
    spec: SweepSpec, where: dict[str, Any], config: ModelConfig, corpus: str, dtype, checkpoint: Checkpoint
) -> list[Cell]:
    """One (model, layer mix, rope)'s trial-task cells: per task, length and depth. A cell's key holds
    what decides its prompts (the task's settings; the corpus, for a task that reads it) and its plan."""
    cells = []
    for task, settings in spec.retrieval_tasks.items():
        reads_corpus = get_task(task).reads_corpus
        for length in spec.lengths:
            for depth in settings.cell_depths:
                definition = {**where, "task": task, "length": length, "depth": depth, **settings.definition()}
                definition |= {"corpus": corpus if reads_corpus else None, "dtype": dtype, "device": spec.device}
                fields = where["model"], where["rope"], where["layer_mix"], length, cell_key(definition), config
                cells.append(Cell(*fields, task=task, depth=depth, settings=settings, checkpoint=checkpoint))
    return cells


def plan_records(cells: list[Cell], length: int | None = None) -> list[dict[str, Any]]:
    """One record per (model, layer mix, rope): the resolved plan each of its cells ran, and, at ``length``
    (the sweep's longest), what each of its ropes does to the frequencies (``frequencies``, by the key
    of ``ropes``: ``ropekit.rope.table.frequency_record``), so that a report draws them without torch."""
    from ..rope.table import frequency_record

    seen: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        if (c.model, c.layer_mix, c.rope) in seen:
            continue
        record = {"model": c.model, "layer_mix": c.layer_mix, "rope": c.rope, **c.config.plan_record()}
        if length is not None:
            ropes = {
                key: next(layer.rope for layer in c.config.layers if layer.rope and layer.rope.to_record() == value)
                for key, value in record["ropes"].items()
            }
            record["frequencies"] = {key: frequency_record(rope, length) for key, rope in ropes.items()}
        seen[c.model, c.layer_mix, c.rope] = record
    return list(seen.values())
