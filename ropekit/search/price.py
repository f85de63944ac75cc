"""A search's dry run: what it will score and what that costs here, before any weight is read.

Every candidate is priced as the passes its objective runs (perplexity: ``n_docs`` passes of the scored
length; a trial task: ``trials x depths`` prompts of it, the LM head on the answer only), each by the cost
model of ``ropekit/sweep/cost.py`` (this machine's measured rates, FLOPs from the resolved plan); the
search proposes ``Hyper.candidates()`` of them, an upper bound on what it scores (a proposal whose factors
were scored before, dim_piece_mono's often, is looked up) less what the directory already holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..sweep.cost import Rates, machine_rates, measurable, pass_memory, pass_seconds
from ..sweep.trials import TRIAL_ANSWER_TOKENS
from .run import SearchPlan, model_rope, plan_search
from .spec import SearchSpec
from .store import CandidateStore


@dataclass(frozen=True)
class SearchPrice:
    plan: SearchPlan
    dtype: str
    passes: int  # per candidate
    candidate_seconds: float | None
    proposals: int
    scored: int
    peak_bytes: int

    @property
    def seconds(self) -> float | None:
        if self.candidate_seconds is None:
            return None
        return max(self.proposals - self.scored, 0) * self.candidate_seconds

    def text(self) -> str:
        p, s = self.plan, self.plan.spec
        h = s.hyper
        what = (
            f"perplexity of {s.n_docs} document(s)"
            if s.objective == "perplexity"
            else f"{s.objective} answer loss of {s.trials} trial(s) x {len(s.depths)} depth(s)"
        )
        lines = [
            f"search {s.name}: {s.model}, {s.factors}_factor by {s.algorithm} (LongRoPE), scale {p.scale:g} "
            f"(trained {p.trained}), {p.rotary_dim // 2} factors, "
            + (
                "start: the spec's factors"
                if s.start
                else f"start: YaRN's ramp (beta {s.beta_fast:g}, {s.beta_slow:g})"
            ),
            f"objective: {what} at {p.length} tokens = {self.passes} pass(es) per candidate, {self.dtype}",
            f"population {h.count('population_size')}, {h.count('max_time_budget')} generations of "
            f"{h.count('mutation_numbers')} mutations + {h.count('crossover_size')} crossovers, "
            f"{h.count('parents_size')} parents, list_step {h.list_step:g}, seed {s.seed}: "
            f"at most {self.proposals} candidates ({self.scored} already scored here)",
            f"peak memory per pass: {self.peak_bytes / 2**30:.2f} GiB",
        ]
        if self.seconds is None:
            lines.append("time: not priced (the device is not on this machine)")
        else:
            lines.append(
                f"time: {self.candidate_seconds:.1f} s per candidate, at most {self.seconds / 3600:.2f} h for the "
                f"{max(self.proposals - self.scored, 0)} left (one worker; --workers N about 1/N)"
            )
        return "\n".join(lines)


def price_search(spec: SearchSpec, out: Path | None = None, *, rates: Rates | None = None) -> SearchPrice:
    import torch

    from ..models import resolve_dtype

    plan = plan_search(spec)
    config, _ = model_rope(spec)
    precision = resolve_dtype(spec.dtype, spec.device)
    threads = torch.get_num_threads()
    if rates is None and measurable(spec.device):
        rates = machine_rates(precision.dtype, spec.device, threads).rates
    if spec.objective == "perplexity":
        passes, head_rows = spec.n_docs, None
    else:
        passes, head_rows = spec.trials * len(spec.depths), TRIAL_ANSWER_TOKENS
    per = None if rates is None else passes * pass_seconds(config, plan.length, rates, head_rows=head_rows)
    memory = pass_memory(config, plan.length, precision.dtype, threads, head_rows=head_rows).total
    scored = 0
    if out is not None and (Path(out) / "candidates").is_dir():
        scored = len(CandidateStore(Path(out), spec).scores)
    return SearchPrice(plan, precision.name, passes, per, spec.hyper.candidates(), scored, memory)
