"""The progress bar: predicted seconds of the planned passes and trials, scaled by what they took."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..eval.perplexity import Plan
from ..models import ModelConfig, Precision
from ..tasks import DocumentTask, get_task
from .cost import machine_rates, measurable, plan_seconds
from .spec import SweepSpec
from .trials import trial_seconds

if TYPE_CHECKING:
    from .work import ModelWork


def seconds_estimator(spec: SweepSpec, precision: Precision, quiet: bool) -> Callable[[ModelConfig, Any], float] | None:
    """Predicted seconds of a plan or a retrieval trial's pass (``ropekit.sweep.cost``, with this
    machine's rates, measured once and cached), for the progress bar; None (the bar counts tokens)
    when the bar is off or this machine lacks the spec's device (loading the model says so next)."""
    if quiet or not measurable(spec.device):
        return None
    rates = machine_rates(precision.dtype, spec.device).rates

    def estimate(config: ModelConfig, work: Any) -> float:  # a Plan, or a retrieval cell (one trial)
        if isinstance(work, Plan):
            return plan_seconds(config, work, rates)
        return trial_seconds(config, work, rates)  # a retrieval cell's trial

    return estimate


class Progress:
    """A tqdm bar over the predicted seconds of the planned passes (``estimate``; their tokens when
    there is none), so that its time left is the prediction from the first second on, scaled, once
    passes have finished, by the seconds they took over the seconds predicted for them. Tokens done of
    the total and cells done are beside it; silent with quiet=True."""

    def __init__(self, cells: int, reused: int, estimate: Callable[[ModelConfig, Any], float] | None, *, quiet: bool):
        from tqdm.auto import tqdm

        class Bar(tqdm):  # tqdm's documented way to a field of one's own in bar_format
            status = ""

            @property
            def format_dict(self) -> dict[str, Any]:
                return {**super().format_dict, "status": self.status}

        self.cells, self.finished = cells, reused
        self.predicts = estimate is not None
        self.estimate = estimate or (lambda config, work: float(work.tokens if isinstance(work, Plan) else work.length))
        self.tokens = self.tokens_done = 0
        self.predicted_done = self.took = 0.0  # of the passes that finished
        self.shown = 0.0  # of the plan running now: what the bar moved by as its layers finished
        self.last = self.doing = ""
        self.bar = Bar(total=0, disable=quiet, dynamic_ncols=True, desc="sweep", bar_format="{l_bar}{bar}| {status}")
        self._status()

    def _status(self) -> None:
        bar = self.bar
        if bar.disable:
            return
        # n and total sum the same predictions in other orders: n may pass total by a rounding at the end (tqdm then
        # warns that it clamps, and the time left turns negative)
        bar.n = min(bar.n, bar.total)
        if self.predicted_done:  # the prediction, scaled by how the passes so far compared with it
            left = bar.format_interval((bar.total - bar.n) * self.took / self.predicted_done)
        else:  # the prediction as it is; tokens say nothing of seconds yet
            left = bar.format_interval(bar.total) if self.predicts else "?"
        tokens = f"{_count(self.tokens_done)}/{_count(self.tokens)} tok"
        elapsed = bar.format_interval(bar.format_dict["elapsed"])
        last = f" {self.last}" if self.last else ""
        doing = f"; {self.doing}" if self.doing else ""
        bar.status = f"{tokens} [{elapsed}<{left}], cells {self.finished}/{self.cells}{last}{doing}"
        bar.refresh()

    def add(self, work: ModelWork) -> None:
        """Every plan and retrieval trial of a model's work."""
        for group, plans in work.groups:
            for _, plan in plans.values():
                self.add_plan(group[0].config, plan, refresh=False)
        for trials in work.trials:
            for c in trials.cells:
                self.bar.total += self.estimate(c.config, c) * len(trials.todo[c.key])
                self.tokens += c.length * len(trials.todo[c.key])
        self._status()

    def drop_work(self, work: ModelWork | None) -> None:
        """A unit's work that this worker will not run as planned (another ran it, or it is planned
        again)."""
        if work is None:
            return
        for group, plans in work.groups:
            for _, plan in plans.values():
                self.bar.total -= self.estimate(group[0].config, plan)
                self.tokens -= plan.tokens
        for trials in work.trials:
            for c in trials.cells:
                self.bar.total -= self.estimate(c.config, c) * len(trials.todo[c.key])
                self.tokens -= c.length * len(trials.todo[c.key])
        self._status()

    def trial_done(self, config: ModelConfig, cell, seconds: float) -> None:
        """A trial of the retrieval cell ``cell`` that ran in ``seconds``."""
        predicted = self.estimate(config, cell)
        self.predicted_done += predicted
        self.took += seconds
        self.tokens_done += cell.length
        self.bar.n += predicted
        self._status()

    def add_plan(self, config: ModelConfig, plan: Plan, *, refresh: bool = True) -> None:
        self.bar.total += self.estimate(config, plan)
        self.tokens += plan.tokens
        if refresh:
            self._status()

    def drop(self, config: ModelConfig, plan: Plan) -> None:
        """A plan that will not run (a failure changed what is left)."""
        self.bar.total -= self.estimate(config, plan)
        self.tokens -= plan.tokens
        self._status()

    def done(self, config: ModelConfig, plan: Plan, seconds: float) -> None:
        """A plan that ran, in ``seconds`` (the bar already moved by what ``running`` showed of it)."""
        predicted = self.estimate(config, plan)
        self.predicted_done += predicted
        self.took += seconds
        self.tokens_done += plan.tokens
        self.bar.n += predicted - self.shown  # then one refresh, with the status that goes with it
        self.shown, self.doing = 0.0, ""
        self._status()

    @contextmanager
    def running(self, model, plan: Plan) -> Iterator[None]:
        """While ``plan`` runs on ``model``: the bar moves as each decoder layer of each pass finishes,
        by that pass's predicted share over the layers, never past the plan's prediction (a pass retried
        on its own after an out-of-memory error runs the layers again), and says which pass runs. A pass
        of 16k tokens takes minutes on a CPU: without this the bar and its clock stand still meanwhile."""
        config, layers = model.config, list(model.layers)
        shares = [
            self.estimate(config, Plan(plan.n_tokens, plan.lengths, (p,))) / len(layers)
            for p in plan.passes
            if not p.cached
        ]
        total, calls = self.estimate(config, plan), [0]
        running = [p for p in plan.passes if not p.cached]

        def advance(module, inputs, output) -> None:
            k = calls[0]
            calls[0] += 1
            if self.bar.disable or k >= len(shares) * len(layers):
                return
            step = min(shares[k // len(layers)], total - self.shown)
            self.shown += step
            self.bar.n += step
            p = running[k // len(layers)]
            self.doing = f"pass {k // len(layers) + 1}/{len(running)} ({_count(p.end - p.begin)} tok) layer "
            self.doing += f"{k % len(layers) + 1}/{len(layers)}"
            self._status()

        hooks = [layer.register_forward_hook(advance) for layer in layers] if shares and layers else []
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def planning(self, what: str) -> None:
        """Say what the sweep is doing before its next pass (loading a model's weights)."""
        self.doing = what
        self._status()

    def cell_done(self, row: dict[str, Any]) -> None:
        self.finished += 1
        if row["status"] != "ok":
            outcome = row["status"]
        elif isinstance(task := get_task(row["task"]), DocumentTask):  # perplexity: its figure
            outcome = f"{task.progress} {row[task.progress]}"
        elif columns := task.columns:  # a task's own figures: its first one
            outcome = f"{columns[0]} {row[columns[0]] or '-'}"
        else:
            at = f" at {row['depth']}%" if row["depth"] != "" else ""  # RULER's place theirs at random
            outcome = f"{row['task']}{at} {float(row['accuracy']):.0%}"
        self.last = f"{row['rope']}@{row['length']}: {outcome}"
        self._status()

    def close(self) -> None:
        self.bar.close()


def _count(n: int) -> str:
    """Tokens as tqdm scales them (``7.17k``), whole below a thousand."""
    from tqdm import tqdm

    return str(n) if n < 1000 else tqdm.format_sizeof(n)
