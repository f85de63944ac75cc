"""``passkey``: the landmark-attention prompt of jquesnelle/yarn ``eval/passkey.py`` (from
epfml/landmark-attention): a number in repeated filler text, asked for at the end."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..eval.retrieval import PASSKEY, filler_ids, needle_trial
from ..rope.checks import is_count
from .registry import TaskSettingsError, TrialSettings, TrialTask, register_task


@dataclass(frozen=True)
class DigitSettings(TrialSettings):
    """A trial task whose answer is a number of ``digits`` digits (None: the task's own default)."""

    digits: int | None = field(default=None, metadata={"help": "digits of the answer (default: the task's own)"})

    default_digits = 5  # the landmark format's keys go up to 50000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.digits is not None and not (is_count(self.digits) and self.digits <= 18):
            raise TaskSettingsError(
                f"{self.task}.digits = {self.digits!r} is not allowed; expected an integer from 1 to 18"
            )

    @property
    def answer_digits(self) -> int:
        return self.digits if self.digits is not None else self.default_digits

    def definition(self) -> dict:
        return {**super().definition(), "digits": self.answer_digits}  # the default too: it decides the prompts


def build(tokenizer, settings: DigitSettings, length: int, depth: float, trial: int, documents=None):
    return needle_trial(
        tokenizer,
        "passkey",
        length,
        depth,
        trial,
        seed=settings.seed,
        digits=settings.answer_digits,
        needle=PASSKEY,
        haystack=lambda rng, n: filler_ids(tokenizer, n),
    )


TASK = register_task(
    TrialTask("passkey", DigitSettings, build, description="the landmark-attention format of the YaRN repository")
)
