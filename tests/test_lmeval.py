"""ropekit as an lm-evaluation-harness backend (ropekit/lmeval.py), proven against lm-eval's own HF backend
(``HFLM``) on the same weights: a tiny random Llama written by transformers, with a word-level tokenizer, and
local tasks (YAML + jsonl in tmp_path) run through ``lm_eval.simple_evaluate``."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys

import pytest
import torch

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed: pip install 'ropekit[lm-eval]'"
)

import ropekit  # noqa: E402
from ropekit.lmeval import ModelArgsError, RopekitLM  # noqa: E402

from .models.tiny import FAMILY_CONFIGS, WORDS, add_tokenizer, make_checkpoint  # noqa: E402

MAX_LENGTH = 24  # short, so the rolling task's documents span several windows and contexts get truncated

ROLLING = """
task: rk_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""

CHOICE = """
task: rk_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

GENERATE = """
task: rk_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: [" of", " by"]
  max_gen_toks: 10
  do_sample: false
metric_list:
  - metric: exact_match
"""
TASKS = ["rk_rolling", "rk_choice", "rk_generate"]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny checkpoint (with its tokenizer) and a folder of two local tasks."""
    root = tmp_path_factory.mktemp("lmeval")
    checkpoint = root / "llama"
    make_checkpoint(checkpoint, FAMILY_CONFIGS["llama"])
    add_tokenizer(checkpoint)
    tasks = root / "tasks"
    tasks.mkdir()
    rng = random.Random(0)
    # lengths around and past MAX_LENGTH: one window, exactly full, several windows
    texts = [words(rng, n) for n in (5, 23, 24, 61)]
    (tasks / "rolling.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    docs = [
        {"question": words(rng, q), "choices": [words(rng, rng.randint(1, 4)) for _ in range(3)], "answer": i % 3}
        for i, q in enumerate((3, 8, 30))  # the last one longer than MAX_LENGTH: truncated from the left
    ]
    (tasks / "choice.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "rk_rolling.yaml").write_text(ROLLING.format(data=tasks / "rolling.jsonl"))
    (tasks / "rk_choice.yaml").write_text(CHOICE.format(data=tasks / "choice.jsonl"))
    # contexts shorter and longer than max_length - max_gen_toks (left truncated to 14 tokens)
    prompts = [{"question": words(rng, n), "answer": words(rng, 2)} for n in (2, 5, 9, 13, 40)]
    (tasks / "generate.jsonl").write_text("".join(json.dumps(d) + "\n" for d in prompts))
    (tasks / "rk_generate.yaml").write_text(GENERATE.format(data=tasks / "generate.jsonl"))
    return checkpoint, tasks


def evaluate(lm, tasks, names):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    return lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, log_samples=True, bootstrap_iters=0)


def responses(result, task) -> list[list[float]]:
    """Each document's raw responses in document order: log-likelihoods (and greedy flags) per request."""
    samples = sorted(result["samples"][task], key=lambda s: s["doc_id"])
    return [[r[0] for r in s["resps"]] for s in samples]


@pytest.fixture(scope="module")
def hf_results(setup):
    from lm_eval.models.huggingface import HFLM

    checkpoint, tasks = setup
    hf = HFLM(pretrained=str(checkpoint), dtype="float32", device="cpu", batch_size=1, max_length=MAX_LENGTH)
    return evaluate(hf, tasks, TASKS)


def ropekit_lm(checkpoint, **args) -> RopekitLM:
    return RopekitLM.create_from_arg_string(
        ",".join(f"{k}={v}" for k, v in {"pretrained": checkpoint, "dtype": "float32", **args}.items()),
        {"batch_size": 1, "device": "cpu"},
    )


def flat(values) -> list[float]:
    out = []
    for v in values:
        out.extend(flat(v) if isinstance(v, (list, tuple)) else [float(v)])
    return out


def test_loglikelihoods_equal_lm_evals_hf_backend(setup, hf_results):
    checkpoint, tasks = setup
    ours = evaluate(ropekit_lm(checkpoint, max_length=MAX_LENGTH), tasks, TASKS)
    for task in ("rk_rolling", "rk_choice"):
        mine, theirs = flat(responses(ours, task)), flat(responses(hf_results, task))
        assert len(mine) == len(theirs) > 0
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-5), task
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ours["results"]["rk_rolling"][metric] == pytest.approx(
            hf_results["results"]["rk_rolling"][metric], rel=1e-5
        )
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["rk_choice"][metric] == hf_results["results"]["rk_choice"][metric]
    # generation: the same text, so the same tokens, for every prompt (and some must be non-empty)
    generated = [r[0] for r in responses(ours, "rk_generate")]
    assert generated == [r[0] for r in responses(hf_results, "rk_generate")]
    assert sum(len(g.split()) for g in generated) >= 5, generated


def test_rolling_windows_cover_the_text_once(setup):
    """With max_length past the text, lm-eval's rolling windows are one forward over the prefix and the
    text's tokens (HFLM 0.4.13 encodes the text with the tokenizer's defaults, so a BOS follows the prefix):
    the log-likelihood is minus token_nll's sum over them."""
    checkpoint, _ = setup
    lm = ropekit_lm(checkpoint, max_length=512)
    text = words(random.Random(1), 40)
    (total,) = lm.loglikelihood_rolling([type("R", (), {"args": (text,)})()])
    ids = [lm.prefix_token_id, *lm.tok_encode(text)]
    assert total == pytest.approx(-float(ropekit.token_nll(lm.model, ids).double().sum()), rel=1e-6)


def test_a_scaled_rope_runs_and_differs(setup, hf_results):
    checkpoint, tasks = setup
    ours = evaluate(ropekit_lm(checkpoint, max_length=MAX_LENGTH, rope_scaling="yarn:2"), tasks, ["rk_rolling"])
    mine, theirs = flat(responses(ours, "rk_rolling")), flat(responses(hf_results, "rk_rolling"))
    assert all(math.isfinite(x) for x in mine)
    assert max(abs(a - b) for a, b in zip(mine, theirs, strict=True)) > 1e-3


def test_model_args_through_the_registry(setup):
    from lm_eval.api.registry import get_model

    checkpoint, _ = setup
    assert get_model("ropekit") is RopekitLM
    assert get_model("hf").__name__ == "HFLM"  # the built-in models are still found
    lm = RopekitLM.create_from_arg_obj(
        {"pretrained": str(checkpoint), "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "dtype": "float32"},
        {"batch_size": None, "device": None},
    )
    assert lm.max_length == 512 and lm.model.dtype == torch.float32


def test_an_unknown_model_arg_is_one_clear_error(setup):
    checkpoint, _ = setup
    with pytest.raises(ValueError, match=r"unknown key 'rope'; the keys are pretrained, .*rope_scaling, layer_mix"):
        ropekit_lm(checkpoint, rope="yarn:2")


# Each bad model_arg of the fault trials (issue 28, item 8), with what its one line must name.
BAD_MODEL_ARGS = {
    "unknown key": ("{ok},bogus=1", "unknown key 'bogus'; the keys are pretrained, revision, rope_scaling"),
    "rope type": ("{ok},rope_scaling=foo:2", "rope_scaling: rope 'foo:2' is not understood; expected TYPE[:FACTOR]"),
    "missing path": ("pretrained={missing}", "pretrained: model '{missing}' is not found: expected an embedded name"),
    "max_length text": ("{ok},max_length=abc", "max_length='abc' is not allowed; expected a positive integer"),
    "max_length 0": ("{ok},max_length=0", "max_length=0 is not allowed; expected a positive integer"),
    "max_length -5": ("{ok},max_length=-5", "max_length=-5 is not allowed; expected a positive integer"),
    "dtype": ("{ok},dtype=float13", "dtype='float13' is not supported; expected auto or one of float32"),
    "layer_mix": ("{ok},layer_mix=XYZ", "layer_mix: layer mix 'XYZ' is not understood; expected native"),
    "pickle weights": ("pretrained={pickle}", "pretrained: no *.safetensors weights in {pickle} (found pytorch_model"),
    "negative factor": ("{ok},rope_scaling=yarn:-4", "(rope_type 'yarn'): factor=-4.0 is not allowed; expected"),
    "no pretrained": ("dtype=float32,max_length=64", "pretrained= is required (an embedded name, a .gguf file"),
}


@pytest.fixture(scope="module")
def bad_paths(setup, tmp_path_factory):
    """The tiny checkpoint, a path that does not exist, and a folder of pickle weights only."""
    checkpoint, tasks = setup
    pickle = tmp_path_factory.mktemp("pickle") / "model"
    pickle.mkdir()
    shutil.copy(checkpoint / "config.json", pickle / "config.json")
    (pickle / "pytorch_model.bin").write_bytes(b"not unpickled")
    return {"ok": f"pretrained={checkpoint}", "missing": str(checkpoint.parent / "absent"), "pickle": str(pickle)}


def cli_args(model_args: str, tasks) -> list[str]:
    return ["--model", "ropekit", "--model_args", model_args, "--tasks", "rk_rolling", "--include_path", str(tasks)]


def assert_one_error_line(stderr: str, expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ropekit model_args: "), stderr[-3000:]
    assert expected in lines[0] and "Traceback" not in stderr


@pytest.mark.parametrize("case", BAD_MODEL_ARGS, ids=list(BAD_MODEL_ARGS))
def test_a_bad_model_arg_is_one_line_on_the_command_line(setup, bad_paths, case, monkeypatch, capsys):
    """``python -m ropekit.lmeval``'s main, in process: one ``error:`` line naming the key and what it takes,
    exit status 2, before lm-eval loads a task (its logging setup left out: it would bind pytest's stderr)."""
    from ropekit.lmeval import __main__ as cli

    _, tasks = setup
    model_args, expected = (text.format(**bad_paths) for text in BAD_MODEL_ARGS[case])
    monkeypatch.setattr(sys, "argv", ["ropekit.lmeval", *cli_args(model_args, tasks)])
    monkeypatch.setattr(cli, "setup_logging", lambda: None)
    assert cli.main() == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, expected)


def test_a_bad_model_arg_from_a_config_file_is_one_line(setup, tmp_path, monkeypatch, capsys):
    """lm-eval's ``--config`` YAML may name the model and its model_args: they are checked the same way."""
    from ropekit.lmeval import __main__ as cli

    checkpoint, tasks = setup
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"model": "ropekit", "model_args": f"pretrained={checkpoint},max_length=0"}))
    monkeypatch.setattr(sys, "argv", ["ropekit.lmeval", "run", "--config", str(config), "--tasks", "rk_rolling"])
    monkeypatch.setattr(cli, "setup_logging", lambda: None)
    assert cli.main() == 2
    assert_one_error_line(capsys.readouterr().err, "max_length=0 is not allowed")


def test_the_command_line_prints_no_traceback(setup, bad_paths):
    """The real process: its whole stderr is the one line, exit status 2."""
    _, tasks = setup
    command = [sys.executable, "-m", "ropekit.lmeval", *cli_args(f"{bad_paths['ok']},max_length=-5", tasks)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert_one_error_line(run.stderr, "max_length=-5 is not allowed; expected a positive integer")


def test_a_python_caller_gets_the_line_as_a_value_error(setup):
    """``simple_evaluate`` raises the same line as a :class:`ModelArgsError` (a ``ValueError``), not a SystemExit."""
    checkpoint, _ = setup
    with pytest.raises(ModelArgsError, match=r"^ropekit model_args: max_length=0 is not allowed") as caught:
        lm_eval.simple_evaluate(model="ropekit", model_args=f"pretrained={checkpoint},max_length=0", tasks=["x"])
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ModelArgsError, match="dtype='float13' is not supported"):
        model_args = {"pretrained": str(checkpoint), "dtype": "float13"}
        lm_eval.simple_evaluate(model="ropekit", model_args=model_args, tasks=["x"])


def test_weights_that_fail_to_load_are_one_line_too(setup, tmp_path):
    """A truncated safetensors file passes the up-front checks (its header is read only as the weights load),
    and is refused as a bad ``pretrained`` in one line."""
    checkpoint, _ = setup
    shutil.copytree(checkpoint, tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelArgsError, match=r"^ropekit model_args: pretrained: .*model.safetensors is truncated"):
        RopekitLM(pretrained=str(tmp_path / "model"), dtype="float32")


def test_max_length_as_model_args_give_it():
    from ropekit.lmeval import positive_length

    assert positive_length(None) is None
    assert positive_length(4096) == positive_length("4096") == positive_length(4096.0) == 4096
    for bad in (0, -5, "abc", 1.5, True, "0"):
        with pytest.raises(ModelArgsError, match="expected a positive integer"):
            positive_length(bad)


def test_the_documented_command_line(setup):
    """``python -m ropekit.lmeval`` is lm-eval's own CLI with the ropekit model registered."""
    checkpoint, tasks = setup
    args = f"pretrained={checkpoint},rope_scaling=yarn:2,layer_mix=native,dtype=float32,max_length={MAX_LENGTH}"
    command = [sys.executable, "-m", "ropekit.lmeval", "--model", "ropekit", "--model_args", args]
    command += ["--tasks", "rk_rolling", "--include_path", str(tasks), "--device", "cpu"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "word_perplexity" in run.stdout and "rope_scaling': 'yarn:2'" in run.stdout


@pytest.mark.slow
def test_the_embedded_smollm2_equals_hflm_on_the_same_gguf(setup):
    """SmolLM2-135M from its GGUF on both sides (HFLM through transformers' gguf_file), float32."""
    from lm_eval.models.huggingface import HFLM

    from ropekit.models import embedded_path

    _, tasks = setup
    path = embedded_path("smollm2-135m")
    hf = HFLM(
        pretrained=str(path.parent), gguf_file=path.name, dtype="float32", device="cpu", batch_size=1, max_length=48
    )
    theirs = evaluate(hf, tasks, TASKS)
    ours = evaluate(ropekit_lm("smollm2-135m", max_length=48), tasks, TASKS)
    for task in ("rk_rolling", "rk_choice"):
        mine, reference = flat(responses(ours, task)), flat(responses(theirs, task))
        assert len(mine) == len(reference) > 0
        assert mine == pytest.approx(reference, rel=1e-5, abs=1e-6), task  # seen: 1.1e-6 relative at most
    assert [r[0] for r in responses(ours, "rk_generate")] == [r[0] for r in responses(theirs, "rk_generate")]


def test_rope_scaling_as_model_args_give_it():
    from ropekit.lmeval import rope_argument

    assert rope_argument("native") is None and rope_argument(None) is None
    assert rope_argument("yarn:4") == "yarn:4"
    assert rope_argument('{"rope_type": "linear", "factor": 2}') == {"rope_type": "linear", "factor": 2}
    with pytest.raises(ValueError, match="is not a JSON object"):
        rope_argument('{"rope_type": linear}')


def test_a_loaded_model_and_sampling_are_refused_clearly(setup):
    checkpoint, _ = setup
    model = ropekit.load_model(checkpoint, dtype="float32")
    with pytest.raises(ValueError, match="rope_scaling= needs pretrained= by name"):
        RopekitLM(pretrained=model, rope_scaling="yarn:2")
    lm = RopekitLM(pretrained=model, max_length=MAX_LENGTH)
    request = type("R", (), {"args": ("the of", {"until": ["and"], "do_sample": True, "temperature": 0.7})})()
    with pytest.raises(ValueError, match="greedily only"):
        lm.generate_until([request])
