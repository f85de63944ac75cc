"""Retrieval prompts built to an exact length in tokens: a fact (the needle) at a depth of irrelevant
text (the haystack), a question at the end, and the answer's tokens to score with ``score_answer``.

* ``passkey``: the format of jquesnelle/yarn ``eval/passkey.py`` (from epfml/landmark-attention): the
  task line, the repeated filler, the line "The pass key is N. Remember it. N is the pass key." at the
  depth, more filler, and "What is the pass key? The pass key is", joined by newlines; N a random
  number of ``digits`` digits.
* ``needle``: RULER's single needle (NVIDIA/RULER ``niah``, ``essay`` haystack): a key-value sentence
  ("One of the special magic numbers for {key} is: {value}.") in real text, the question naming the
  key; the value a random number of ``digits`` digits, the key a random adjective-noun pair.

A prompt is assembled from token ids, not re-tokenized text, so its length is exact: the intro (with
the tokenizer's BOS when it adds one), ``round(depth / 100 * H)`` haystack tokens, the needle line,
the rest of the ``H`` haystack tokens, the question; ``H`` is whatever the length leaves. The
haystack is cut at a token, mid-sentence as the reference cuts its filler at a character. The
answer is the continuation of the question: its value after a space, tokenized as
lm-evaluation-harness splits a continuation from its context (``continuation_ids``).

Every trial is drawn from its own generator seeded with (seed, task, length, depth, trial), so any
one trial can be rebuilt alone, and every rope and layer mix of a sweep reads the same prompts.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

PASSKEY_INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_NEEDLE = "The pass key is {value}. Remember it. {value} is the pass key."
PASSKEY_QUESTION = "What is the pass key? The pass key is"

# RULER's niah template (synthetic/constants.py) with its single numeric needle.
NEEDLE_INTRO = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards."
)
NEEDLE = "One of the special magic numbers for {key} is: {value}."
NEEDLE_QUESTION = (
    "What is the special magic number for {key} mentioned in the provided text? "
    "The special magic number for {key} mentioned in the provided text is"
)
# Keys as RULER draws them (two random words); these lists keep them tokenizer-neutral English.
ADJECTIVES = (
    "amber ancient bitter brave bright calm clever cold crimson curious damp distant dusty eager fierce frozen "
    "gentle golden hollow humble hungry icy jolly lonely lucky mellow noisy pale quiet rapid silent silver"
).split()
NOUNS = (
    "anchor badger barrel beacon candle canyon cellar comet falcon garden harbor hammer island kettle lantern "
    "meadow mirror orchard otter parrot pebble pepper quarry ribbon saddle shovel spider teapot tunnel violin "
    "walnut willow"
).split()


@dataclass(frozen=True)
class Needle:
    """What a needle task says: the intro line, the needle (with ``{value}``, the answer, and for the
    needle task ``{key}``), the question (ending where the answer begins)."""

    intro: str
    needle: str
    question: str

    def __post_init__(self):
        for field in ("needle", "question"):
            text = getattr(self, field)
            try:
                text.format(key="k", value="v")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"{field}={text!r} is not a template with only {{key}} and {{value}}: {e}") from None
        if "{value}" not in self.needle:
            raise ValueError(f"needle={self.needle!r} has no {{value}} placeholder: the answer must be in it")
        if "{value}" in self.question:
            raise ValueError(f"question={self.question!r} contains {{value}}: it would give the answer away")
        if ("{key}" in self.needle) != ("{key}" in self.question):
            raise ValueError(
                f"needle={self.needle!r} and question={self.question!r}: a {{key}} placeholder must be in both "
                "(the question names the key the needle holds) or in neither"
            )


PASSKEY = Needle(PASSKEY_INTRO, PASSKEY_NEEDLE, PASSKEY_QUESTION)
RULER_NEEDLE = Needle(NEEDLE_INTRO, NEEDLE, NEEDLE_QUESTION)


@dataclass(frozen=True)
class Trial:
    """One retrieval prompt: ``prompt_ids`` (exactly ``length`` tokens; a task that generates its answer:
    at most ``length - max_new_tokens``), ``answer_ids`` (the value as a continuation of the prompt),
    the key and value, and where the needle sits: ``position``, the index of its first token in the
    prompt, after ``before`` of the ``haystack`` tokens (-1, 0, 0 where several needles sit at random).
    A task scored on what the model writes gives the strings its output must hold (``references``) and
    how many tokens greedy decoding may write (``max_new_tokens``)."""

    task: str
    length: int
    depth: float | None
    trial: int
    key: str
    value: str
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    position: int
    before: int
    haystack: int
    references: tuple[str, ...] = ()
    max_new_tokens: int = 0


def trial_rng(seed: int, task: str, length: int, depth: float, trial: int) -> np.random.Generator:
    """The generator of one trial: a function of these five values only (depth to 1e-6 %)."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), length, round(depth * 1_000_000), trial])


def random_value(rng: np.random.Generator, digits: int) -> str:
    """A number of exactly ``digits`` digits (no leading zero), uniform over them."""
    if digits < 1:
        raise ValueError(f"digits={digits} must be at least 1")
    return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def continuation_ids(tokenizer, context: str, continuation: str) -> list[int]:
    """The tokens of ``continuation`` after ``context``: ``encode(context + continuation)`` less the
    tokens of ``encode(context)``, as lm-evaluation-harness splits a context from its continuation.
    Refused where the context's own tokens change when the continuation follows (a merge across
    the boundary), since then no forward of the context's tokens can score the continuation."""
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    head = tokenizer.encode(context, add_special_tokens=False)
    if whole[: len(head)] != head:
        raise ValueError(
            f"{continuation!r} after {context[-40:]!r} merges with the context's last tokens; "
            "end the question on a word so the answer starts a token"
        )
    return whole[len(head) :]


def filler_ids(tokenizer, n: int, text: str = PASSKEY_FILLER) -> list[int]:
    """At least ``n`` tokens of ``text`` repeated, joined by spaces as the reference joins its filler."""
    per = max(1, len(tokenizer.encode(text, add_special_tokens=False)))
    ids = tokenizer.encode(" ".join([text] * (n // per + 2)), add_special_tokens=False)
    return ids[:n]


def corpus_haystack(documents: Sequence[Sequence[int]], rng: np.random.Generator, n: int, separator: list[int]):
    """``n`` tokens of real text: from the start of a document drawn by ``rng``, continuing into the
    next documents (in order, wrapping around), each joined by ``separator``."""
    if not documents or sum(len(d) for d in documents) == 0:
        raise ValueError("a haystack of the corpus needs a corpus with text; this one has no tokens")
    first = int(rng.integers(len(documents)))
    out: list[int] = []
    i = first
    while len(out) < n:
        out.extend(int(t) for t in documents[i % len(documents)][: n - len(out)])
        out.extend(separator)
        i += 1
    return out[:n]


def needle_trial(
    tokenizer,
    task: str,
    length: int,
    depth: float,
    trial: int,
    *,
    seed: int,
    digits: int,
    needle: Needle,
    haystack: Callable[[np.random.Generator, int], list[int]],
) -> Trial:
    """The prompt of one trial of ``task`` with exactly ``length`` tokens: ``needle``'s texts, its value
    ``digits`` digits long, after ``depth`` percent of the ``haystack(rng, n)`` tokens (drawn after the
    value and key from the trial's generator). The task records (``ropekit/tasks/``) say which needle
    and haystack."""
    if not 0 <= depth <= 100:
        raise ValueError(f"depth={depth} is outside [0, 100]: it is a percentage of the haystack")
    rng = trial_rng(seed, task, length, depth, trial)
    value = random_value(rng, digits)
    key = f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]}-{NOUNS[rng.integers(len(NOUNS))]}"
    # The reference joins its lines with "\n"; each piece carries its newlines so the joins are in it.
    intro = tokenizer.encode(needle.intro + "\n")  # with BOS where the tokenizer adds one
    line = tokenizer.encode("\n" + needle.needle.format(key=key, value=value) + "\n", add_special_tokens=False)
    question_text = "\n" + needle.question.format(key=key)
    question = tokenizer.encode(question_text, add_special_tokens=False)
    answer = continuation_ids(tokenizer, question_text, " " + value)
    n_haystack = length - len(intro) - len(line) - len(question)
    if n_haystack < 1:
        raise ValueError(
            f"length={length} cannot hold the {task} prompt: its intro, needle and question alone take "
            f"{length - n_haystack} tokens; use a length of at least {length - n_haystack + 1}"
        )
    hay = haystack(rng, n_haystack)
    before = round(depth / 100 * n_haystack)
    ids = intro + hay[:before] + line + hay[before:] + question
    assert len(ids) == length
    return Trial(
        task=task,
        length=length,
        depth=depth,
        trial=trial,
        key=key if "{key}" in needle.question else "",
        value=value,
        prompt_ids=tuple(ids),
        answer_ids=tuple(answer),
        position=len(intro) + before,
        before=before,
        haystack=n_haystack,
    )
