"""Retrieval prompts on both embedded tokenizers: exact lengths, the needle where the depth says,
the answer tokenized as the question's continuation, every trial rebuilt alone, bad settings refused."""

from __future__ import annotations

import re

import pytest

from ropekit.data import shakespeare
from ropekit.eval.retrieval import PASSKEY, PASSKEY_FILLER, Needle, continuation_ids
from ropekit.models.load import load_tokenizer
from ropekit.tasks import build_trial


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def tokenizer(request):
    return load_tokenizer(request.param)


@pytest.fixture(scope="module")
def documents(tokenizer):
    return [tokenizer.encode(d.text, add_special_tokens=False)[:3000] for d in shakespeare().documents[:5]]


@pytest.mark.parametrize("task", ["passkey", "needle"])
def test_prompts_have_the_length_and_the_needle_at_its_depth(tokenizer, documents, task):
    for length in (120, 333, 1500):
        for depth in (0, 10, 33.3, 50, 100):
            trial = build_trial(tokenizer, task, length, depth, 7, seed=0, digits=5, documents=documents)
            ids = list(trial.prompt_ids)
            assert len(ids) == trial.length == length
            assert trial.before == round(depth / 100 * trial.haystack)
            line = tokenizer.decode(ids[trial.position :])
            assert line.startswith("\n" + ("The pass key is " if task == "passkey" else "One of the special magic"))
            assert f"{trial.value}." in line.splitlines()[1]
            text = tokenizer.decode(ids)
            assert text.count(trial.value) == (2 if task == "passkey" else 1)  # the needle, nowhere else
            assert text.endswith("The pass key is" if task == "passkey" else "mentioned in the provided text is")
            if task == "needle":
                assert text.count(trial.key) == 3  # the needle and the question's two mentions
            if depth == 0:  # right after the intro line
                assert tokenizer.decode(ids[: trial.position]).rstrip().endswith(("information there.", "afterwards."))
            if depth == 100:  # right before the question
                assert tokenizer.decode(ids[trial.position :]).count("\n") == 3


def test_needle_haystack_is_corpus_text(tokenizer, documents):
    starts = set()
    for i in range(8):
        trial = build_trial(tokenizer, "needle", 400, 50, i, seed=3, digits=7, documents=documents)
        ids = list(trial.prompt_ids)
        first = ids[trial.position - trial.before : trial.position][:50]
        matches = [d for d, doc in enumerate(documents) if doc[:50] == first]
        assert len(matches) == 1  # the haystack starts at the start of one document
        starts.add(matches[0])
        assert len(trial.value) == 7
    assert len(starts) > 1  # trials draw different documents


def test_passkey_haystack_is_the_reference_filler(tokenizer):
    trial = build_trial(tokenizer, "passkey", 500, 0, 0, seed=0, digits=5)
    ids = list(trial.prompt_ids)
    after = tokenizer.decode(ids[trial.position :]).split("\n")[2]
    assert after.startswith(PASSKEY_FILLER + " " + PASSKEY_FILLER)


def test_answer_is_the_continuation_of_the_question(tokenizer):
    for trial_index in range(5):
        trial = build_trial(tokenizer, "passkey", 200, 50, trial_index, seed=11, digits=trial_index + 1)
        question = "\n" + PASSKEY.question
        whole = tokenizer.encode(question + " " + trial.value, add_special_tokens=False)
        n_question = len(tokenizer.encode(question, add_special_tokens=False))
        assert list(trial.prompt_ids[-n_question:]) + list(trial.answer_ids) == whole
        assert tokenizer.decode(list(trial.answer_ids)).strip() == trial.value
        assert len(trial.value) == trial_index + 1


def test_a_continuation_that_merges_with_its_context_is_refused(tokenizer):
    assert tokenizer.decode(continuation_ids(tokenizer, "The pass key is", " 123")).strip() == "123"
    with pytest.raises(ValueError, match="merges with the context's last tokens"):
        continuation_ids(tokenizer, "What is the pass k", "ey")


def test_every_trial_is_rebuilt_from_its_five_values(tokenizer, documents):
    def make(trial, depth=40, length=300, seed=5):
        return build_trial(tokenizer, "needle", length, depth, trial, seed=seed, digits=6, documents=documents)

    assert make(3) == make(3)
    values = {make(i).value for i in range(6)}
    assert len(values) == 6
    assert make(3).value != make(3, seed=6).value
    assert make(3).value != make(3, depth=41).value
    assert make(3).value != make(3, length=301).value


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"depth": -1}, "depth=-1 is outside"),
        ({"depth": 100.5}, "depth=100.5 is outside"),
        ({"length": 40}, "length=40 cannot hold the passkey prompt"),
        ({"digits": 0}, "digits = 0 is not allowed"),
        ({"task": "summary"}, "task='summary' is not a retrieval task"),
    ],
)
def test_bad_settings_are_refused(tokenizer, change, message):
    settings = {"task": "passkey", "length": 200, "depth": 50, "digits": 5, **change}
    with pytest.raises(ValueError, match=message):
        build_trial(
            tokenizer, settings["task"], settings["length"], settings["depth"], 0, seed=0, digits=settings["digits"]
        )


def test_the_needle_task_needs_documents(tokenizer):
    with pytest.raises(ValueError, match="pass documents"):
        build_trial(tokenizer, "needle", 300, 50, 0, seed=0, digits=5)
    with pytest.raises(ValueError, match="no tokens"):
        build_trial(tokenizer, "needle", 300, 50, 0, seed=0, digits=5, documents=[[]])


@pytest.mark.parametrize(
    ("needle", "question", "message"),
    [
        ("The code is 42.", "The code is", "has no {value} placeholder"),
        ("The code is {value}.", "The code {value} is", "would give the answer away"),
        ("The code of {key} is {value}.", "The code is", "must be in both"),
        ("The code is {value} {other}.", "The code is", "only {key} and {value}"),
    ],
)
def test_bad_needle_templates_are_refused(needle, question, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Needle("intro", needle, question)
