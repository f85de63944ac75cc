"""Each perplexity mode against its source: the source's computation rewritten here from the
source, with transformers' forward of the same weights as its engine, equals ropekit's to 1e-6.

* first: the YaRN-table quantity (ARCHITECTURE.md) (first L tokens, all L-1 predictions, token-weighted);
* strided: transformers' guide "Perplexity of fixed-length models" (with stride < L once each
  window's mean loss is weighted by the labels it averaged: the guide's own weights are one short);
* yarn: jquesnelle/yarn eval/perplexity.py (``compute_perplexity`` with ``--truncate``);
* rolling: lm-evaluation-harness ``HFLM.loglikelihood_rolling`` and the task metrics.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import ropekit
from ropekit.eval.perplexity import (
    aggregate,
    combine,
    document_ids,
    plan_document,
    prefix_id,
    score_plan,
    text_metrics,
)
from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus

REL = 1e-6


# --- the sources, rewritten (batch size 1, the model's forward as the engine) ---


def first_source(hf, tokenizer, texts: list[str], length: int) -> float:
    """ARCHITECTURE.md: each document's first L tokens (default special tokens), all L-1 predictions, token-weighted."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text)[:length]])
        with torch.no_grad():
            total += float(hf(ids, labels=ids).loss) * (length - 1)  # transformers shifts the labels
        count += length - 1
    return math.exp(total / count)


def guide_source(hf, tokenizer, text: str, max_length: int, stride: int, *, weight_fix: bool = False) -> float:
    """transformers' perplexity guide, as written; ``weight_fix`` weights each window's mean loss by
    the labels it averaged instead of ``num_valid_tokens - batch_size``."""
    encodings = tokenizer(text, return_tensors="pt")
    seq_len = encodings.input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings.input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = hf(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size  # subtract batch_size due to internal label shift
        if weight_fix:
            num_loss_tokens = int((target_ids[:, 1:] != -100).sum())
        nll_sum += float(neg_log_likelihood) * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


def yarn_source(hf, tokenizer, texts: list[str], max_length: int) -> tuple[list[float], float]:
    """jquesnelle/yarn eval/perplexity.py: main()'s tokenize (no special tokens), then
    compute_perplexity(add_start_token=tokenizer.bos_token is not None, truncate=True). Returns each
    document's loss and the figure, exp(mean of the losses)."""
    encoded_texts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    add_start_token = tokenizer.bos_token is not None
    max_tokenized_len = max_length - 1 if add_start_token else max_length
    encoded_texts = [x[0:max_tokenized_len] for x in encoded_texts]  # truncate
    sliding_window = max_tokenized_len
    nlls = []
    for encoding_index in range(0, len(encoded_texts)):
        labels = torch.tensor(encoded_texts[encoding_index : encoding_index + 1])
        seq_len = labels.size(1)
        prev_end_loc = 0
        for begin_loc in range(0, seq_len, sliding_window):
            end_loc = min(begin_loc + max_tokenized_len, seq_len)
            trg_len = end_loc - prev_end_loc
            input_ids = labels[:, begin_loc:end_loc]
            if add_start_token:
                bos_tokens_tensor = torch.tensor([[tokenizer.bos_token_id]] * input_ids.size(dim=0))
                input_ids = torch.cat([bos_tokens_tensor, input_ids], dim=1)
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            with torch.no_grad():
                nlls.append(hf(input_ids, labels=target_ids).loss)
            prev_end_loc = end_loc
            if end_loc == seq_len:
                break
    return [float(n) for n in nlls], float(torch.exp(torch.stack(nlls).mean()).float())


def get_rolling_token_windows(token_list, prefix_token, max_seq_len, context_len):
    """lm_eval.utils.get_rolling_token_windows."""
    assert 1 <= context_len <= max_seq_len
    if not token_list:
        return
    pred_len = max_seq_len - context_len + 1  # +1 offset, going from input->preds
    predicted = 0
    first_seq_len = min(max_seq_len, len(token_list))  # the first window predicts all its tokens
    yield [prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len]
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        yield (
            token_list[window_end - max_seq_len - 1 : window_end - 1],
            token_list[window_end - window_pred_len : window_end],
        )
        predicted += window_pred_len


def make_disjoint_window(pair):
    """lm_eval.utils.make_disjoint_window."""
    a, b = pair
    return a[: len(a) - (len(b) - 1)], b


def rolling_source(hf, tokenizer, texts: list[str], max_length: int) -> list[float]:
    """lm-eval HFLM.loglikelihood_rolling (tok_encode without special tokens for a causal model,
    prefix_token_id BOS else EOS) and _loglikelihood_tokens: each document's loglikelihood."""
    prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    loglikelihoods = []
    for string in texts:
        rolling_token_windows = list(
            map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=tokenizer.encode(string, add_special_tokens=False),
                    prefix_token=prefix_token_id,
                    max_seq_len=max_length,
                    context_len=1,
                ),
            )
        )
        string_nll = []
        for context_enc, continuation_enc in rolling_token_windows:
            inp = torch.tensor((context_enc + continuation_enc)[-(max_length + 1) :][:-1], dtype=torch.long)
            (inplen,) = inp.shape
            with torch.no_grad():
                logits = F.log_softmax(hf(inp[None]).logits, dim=-1)[0]
            contlen = len(continuation_enc)
            logits = logits[inplen - contlen : inplen]  # _select_cont_toks
            cont_toks = torch.tensor(continuation_enc, dtype=torch.long)
            string_nll.append(float(torch.gather(logits, 1, cont_toks[:, None]).sum()))
        loglikelihoods.append(sum(string_nll))
    return loglikelihoods


def lm_eval_metrics(loglikelihoods: list[float], texts: list[str]) -> dict[str, float]:
    """lm-eval's process_results for loglikelihood_rolling and its weighted_perplexity / bits_per_byte."""
    words = [len(re.split(r"\s+", t)) for t in texts]
    bytes_ = [len(t.encode("utf-8")) for t in texts]
    return {
        "word_perplexity": math.exp(-sum(loglikelihoods) / sum(words)),
        "byte_perplexity": math.exp(-sum(loglikelihoods) / sum(bytes_)),
        "bits_per_byte": -sum(loglikelihoods) / sum(bytes_) / math.log(2),
    }


# --- ropekit's side ---


def scores(model, texts: list[str], lengths: list[int], mode: str, stride: int | None = None) -> dict[int, list]:
    """Per length, each document's score as the sweep gets it: ids per mode, a plan, its run."""
    out: dict[int, list] = {length: [] for length in lengths}
    for text in texts:
        ids = torch.tensor(document_ids(model.tokenizer, text, mode))
        plan = plan_document(model, len(ids), lengths, mode=mode, stride=stride)
        for length, score in score_plan(model, ids, plan).items():
            out[length].append(score)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny llama whose transformers twin is the model that wrote it, a word tokenizer with BOS,
    and three texts (one shorter than the rolling length)."""
    folder = tmp_path_factory.mktemp("modes")
    hf = make_checkpoint(folder, {"model_type": "llama"})
    add_tokenizer(folder)
    corpus = write_corpus(folder / "corpus", (300, 200, 451), seed=3)
    texts = [(corpus / f"doc{i}.txt").read_text() for i in range(3)]
    return ropekit.load_model(folder), hf, texts


def test_first_equals_its_definition(tiny):
    model, hf, texts = tiny
    got = scores(model, texts, [64, 128, 200], "first")
    for length in (64, 128, 200):
        assert combine(got[length]).ppl == pytest.approx(first_source(hf, model.tokenizer, texts, length), rel=REL)
        assert aggregate("first", got[length]) == combine(got[length]).ppl


@pytest.mark.parametrize(("length", "stride"), [(128, 128), (96, 96), (128, 50), (64, 16)])
def test_strided_equals_the_transformers_guide(tiny, length, stride):
    model, hf, texts = tiny
    for text in texts:
        (score,) = scores(model, [text], [length], "strided", stride)[length]
        guide = guide_source(hf, model.tokenizer, text, length, stride)
        if stride == length:
            assert score.ppl == pytest.approx(guide, rel=REL)
        else:  # the guide weights each later window by one label fewer than its loss averaged
            assert score.ppl == pytest.approx(guide_source(hf, model.tokenizer, text, length, stride, weight_fix=True))
            assert abs(score.ppl / guide - 1) < 1 / stride


def test_strided_skips_a_last_window_with_nothing_to_predict(tiny):
    """301 tokens, windows of 100 every 100: the guide's fourth window is token 300 alone, no label
    left after the shift, and its loss (a mean over nothing) makes the guide's figure NaN."""
    model, hf, texts = tiny
    ids = document_ids(model.tokenizer, texts[0], "strided")
    plan = plan_document(model, len(ids), [100], mode="strided", stride=100)
    assert len(ids) == 301 and [(p.begin, p.end) for p in plan.passes] == [(0, 100), (100, 200), (200, 300)]
    assert score_plan(model, torch.tensor(ids), plan)[100].n_tokens == 3 * 99
    assert math.isnan(guide_source(hf, model.tokenizer, texts[0], 100, 100))


def test_yarn_equals_the_yarn_repository(tiny):
    model, hf, texts = tiny
    got = scores(model, texts, [64, 128, 200], "yarn")  # one pass at 200 serves all three
    for length in (64, 128, 200):
        losses, figure = yarn_source(hf, model.tokenizer, texts, length)
        assert [s.n_tokens for s in got[length]] == [length - 1] * 3
        assert [s.nll for s in got[length]] == pytest.approx(losses, rel=REL)
        assert aggregate("yarn", got[length]) == pytest.approx(figure, rel=REL)


@pytest.mark.parametrize("length", [64, 100, 256])
def test_rolling_equals_lm_evaluation_harness(tiny, length):
    model, hf, texts = tiny
    (got,) = scores(model, texts, [length], "rolling").values()
    loglikelihoods = rolling_source(hf, model.tokenizer, texts, length)
    words = [len(model.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    assert [s.n_tokens for s in got] == words  # every text token predicted once (256: one window for doc1)
    assert [s.nll_sum for s in got] == pytest.approx([-ll for ll in loglikelihoods], rel=REL)
    ours, theirs = text_metrics(got, texts), lm_eval_metrics(loglikelihoods, texts)
    assert ours == pytest.approx(theirs, rel=REL)
    assert aggregate("rolling", got) == combine(got).ppl


def test_rolling_windows_read_the_length_and_no_more(tiny):
    """A window reads L tokens and predicts the one after its last: a rope whose frequencies depend
    on the length (longrope at its original length, dynamic) sees what lm-eval's model sees."""
    model, _, texts = tiny
    ids = document_ids(model.tokenizer, texts[0], "rolling")
    plan = plan_document(model, len(ids), [64], mode="rolling")
    assert [(p.begin, p.end, p.serves[0][1:]) for p in plan.passes] == [
        (0, 64, (1, 65)),
        (64, 128, (65, 129)),
        (128, 192, (129, 193)),
        (192, 256, (193, 257)),
        (236, 300, (257, 301)),  # the last, shorter run reads back a full window
    ]
    assert plan.tokens == 5 * 64


def test_document_ids_per_mode():
    class Words:
        bos_token_id, eos_token_id = 7, 9

        def encode(self, text, add_special_tokens=True):
            return [7] * add_special_tokens + [len(w) for w in text.split()]

    tokenizer = Words()
    assert (
        document_ids(tokenizer, "a bb ccc", "first") == document_ids(tokenizer, "a bb ccc", "strided") == [7, 1, 2, 3]
    )
    assert document_ids(tokenizer, "a bb ccc", "yarn") == document_ids(tokenizer, "a bb ccc", "rolling") == [7, 1, 2, 3]
    tokenizer.bos_token_id = None  # yarn adds no start token; lm-eval prefixes EOS
    assert document_ids(tokenizer, "a bb ccc", "yarn") == [1, 2, 3]
    assert document_ids(tokenizer, "a bb ccc", "rolling") == [9, 1, 2, 3]
    tokenizer.eos_token_id = None
    with pytest.raises(ValueError, match="neither"):
        prefix_id(tokenizer, "rolling")
    with pytest.raises(ValueError, match="mode='last' is not allowed"):
        document_ids(tokenizer, "a", "last")


def test_yarn_weighs_documents_and_the_others_tokens():
    from ropekit.eval.perplexity import Score

    docs = [Score(10.0, 10), Score(60.0, 20)]  # mean NLL 1 and 3
    assert aggregate("yarn", docs) == pytest.approx(math.exp(2.0))
    for mode in ("first", "strided", "rolling"):
        assert aggregate(mode, docs) == pytest.approx(math.exp(70 / 30))


# --- the embedded SmolLM2 (no BOS from encode; BOS <|im_start|> for yarn and lm-eval's prefix) ---


@pytest.fixture(scope="module")
def smollm2():
    from ropekit.data import shakespeare
    from ropekit.models import CheckpointError, embedded_path
    from tests.models.test_embedded import hf_model

    try:
        embedded_path("smollm2-135m")
    except CheckpointError as err:
        pytest.skip(str(err))
    model = ropekit.load_model("smollm2-135m")
    plays = {d.name: d.text for d in shakespeare().documents}
    texts = [plays[name][5000:6200] for name in ("Hamlet", "Macbeth")]  # ~300 tokens each
    return model, hf_model("smollm2-135m"), texts


@pytest.mark.slow
def test_smollm2_yarn_and_rolling_equal_their_sources(smollm2):
    model, hf, texts = smollm2
    assert model.tokenizer.encode("the") == model.tokenizer.encode("the", add_special_tokens=False)
    got = scores(model, texts, [256], "yarn")[256]
    losses, figure = yarn_source(hf, model.tokenizer, texts, 256)
    assert [s.nll for s in got] == pytest.approx(losses, rel=REL)
    assert aggregate("yarn", got) == pytest.approx(figure, rel=REL)
    got = scores(model, texts, [256], "rolling")[256]
    assert all(s.n_tokens > 256 for s in got)  # two windows each, the second a shorter run
    loglikelihoods = rolling_source(hf, model.tokenizer, texts, 256)
    assert [s.nll_sum for s in got] == pytest.approx([-ll for ll in loglikelihoods], rel=REL)
    assert text_metrics(got, texts) == pytest.approx(lm_eval_metrics(loglikelihoods, texts), rel=REL)
