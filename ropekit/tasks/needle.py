"""``needle``: RULER's single needle (NVIDIA/RULER ``niah``, ``essay`` haystack): a key-value sentence in
the corpus's own text, the question naming the key; its texts replaceable in the ``[needle]`` table."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..eval.retrieval import RULER_NEEDLE, Needle, corpus_haystack, needle_trial
from .passkey import DigitSettings
from .registry import TaskSettingsError, TrialTask, register_task


@dataclass(frozen=True)
class NeedleSettings(DigitSettings):
    """Also the texts: ``intro``, ``needle`` (with ``{value}`` and ``{key}``) and ``question`` (ending where
    the answer begins); None: RULER's."""

    intro: str | None = field(default=None, metadata={"help": "the first line (default: RULER's)"})
    needle: str | None = field(default=None, metadata={"help": "the fact, with {key} and {value} (default: RULER's)"})
    question: str | None = field(
        default=None, metadata={"help": "the question, with {key}, ending where {value} begins (default: RULER's)"}
    )

    default_digits = 7  # RULER's values have 7 digits

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("intro", "needle", "question"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise TaskSettingsError(f"{self.task}.{key} = {getattr(self, key)!r} is not allowed; expected a string")
        try:
            self.texts()
        except ValueError as err:
            raise TaskSettingsError(f"{self.task}: {err}") from None

    def texts(self) -> Needle:
        """The intro, needle and question its prompts are made of."""
        return Needle(
            self.intro if self.intro is not None else RULER_NEEDLE.intro,
            self.needle if self.needle is not None else RULER_NEEDLE.needle,
            self.question if self.question is not None else RULER_NEEDLE.question,
        )


def build(tokenizer, settings: NeedleSettings, length: int, depth: float, trial: int, documents=None):
    if documents is None:
        raise ValueError("the needle task's haystack is the corpus: pass documents (token ids)")
    separator = tokenizer.encode("\n\n", add_special_tokens=False)
    return needle_trial(
        tokenizer,
        "needle",
        length,
        depth,
        trial,
        seed=settings.seed,
        digits=settings.answer_digits,
        needle=settings.texts(),
        haystack=lambda rng, n: corpus_haystack(documents, rng, n, separator),
    )


TASK = register_task(
    TrialTask("needle", NeedleSettings, build, reads_corpus=True, description="RULER's single needle in corpus text")
)
