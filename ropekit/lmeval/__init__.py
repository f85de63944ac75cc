"""ropekit as an lm-evaluation-harness model backend: any task, on ropekit's decoder, with any rope and layer mix.

``import ropekit.lmeval`` registers the model ``ropekit`` in lm-eval's registry (the ``lm-eval`` extra:
``pip install 'ropekit[lm-eval]'``). lm-eval 0.4.13 discovers no models from other packages (no entry
point group; ``--include_path`` is for tasks), so its command line is run through this module, which
registers the backend and then hands the arguments to lm-eval's own CLI unchanged::

    python -m ropekit.lmeval --model ropekit \\
        --model_args pretrained=smollm2-135m,rope_scaling=yarn:4,layer_mix=native,dtype=float32,max_length=32768 \\
        --tasks wikitext

From Python, import this module and pass ``model="ropekit"`` (or a :class:`RopekitLM`) to
``lm_eval.simple_evaluate``.

What each request runs through, and why the numbers equal lm-eval's ``HFLM`` on the same weights:

* ``loglikelihood``: lm-eval's own split of context and continuation (``TemplateLM``), the same left
  truncation to ``max_length + 1`` tokens, then :func:`ropekit.score_answer`: one forward, only the
  continuation's positions projected onto the vocabulary.
* ``loglikelihood_rolling``: lm-eval's ``get_rolling_token_windows`` and ``make_disjoint_window`` with
  ``max_length``, each window scored by :func:`ropekit.token_nll` (chunked head, no ``[T, vocab]`` logits).
* ``generate_until``: greedy decoding with a KV cache (``ropekit/eval/generate.py``), stopping where
  lm-eval's ``HFLM`` stops (EOS, a stop sequence seen in the decoded tail, ``max_gen_toks``) and cut as it cuts.

Requests run one sequence at a time (``batch_size`` is accepted and ignored): memory is that of one
sequence at ``max_length``, which is what ropekit's decoder keeps small.

Bad model_args are refused by :func:`check_model_args` before any weights load, as a
:class:`ModelArgsError` (a ``ValueError``) whose message is one line naming the key and what it takes;
``python -m ropekit.lmeval`` checks them before lm-eval starts and prints that line (``error: ...``, exit
status 2) instead of a traceback (``__main__.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

try:
    import lm_eval.models  # noqa: F401  # the built-in models first: get_model imports them only into an empty registry
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
    from lm_eval.models.utils_hf import MultiTokenEOSCriteria
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ropekit.lmeval needs lm-evaluation-harness: pip install 'ropekit[lm-eval]' (lm-eval==0.4.13)"
    ) from error

from ..eval import score_answer, token_nll
from ..eval.generate import greedy_generate, stop_ids
from ..models import (
    Checkpoint,
    CheckpointError,
    ModelConfig,
    check_weights,
    load_model,
    model_config,
    parse_layer_mix,
    read_model_config,
    resolve_dtype,
)
from ..rope import RopeConfigError

# model_args this backend reads; lm-eval itself adds batch_size, max_batch_size and device (and
# trust_remote_code); RULER's data builders read tokenizer (a name AutoTokenizer loads) from model_args.
MODEL_ARGS = ("pretrained", "revision", "rope_scaling", "layer_mix", "dtype", "device", "max_length", "tokenizer")
HARNESS_ARGS = ("batch_size", "max_batch_size", "trust_remote_code")

logger = logging.getLogger(__name__)


class ModelArgsError(ValueError):
    """A model_arg the backend cannot use; the message is one line naming the key and what it takes (what
    ``python -m ropekit.lmeval`` prints, without a traceback)."""


@dataclass(frozen=True)
class ModelArgs:
    """model_args checked: the checkpoint and its resolved plan (``config``; ``None`` for an already loaded
    model, which is ``pretrained``), what ``load_model`` takes besides, and ``max_length`` (``None``: the
    trained length)."""

    pretrained: Checkpoint | torch.nn.Module
    config: ModelConfig | None
    dtype: Any
    device: Any
    max_length: int | None
    settings: dict[str, Any]


def refuse(key: str, error: Exception | str) -> ModelArgsError:
    """The one line of a bad model_arg: ropekit's own message, after the key where it does not start with it."""
    message = str(error)
    return ModelArgsError(f"ropekit model_args: {message if message.startswith(key) else f'{key}: {message}'}")


def positive_length(value: Any) -> int | None:
    """``max_length`` as model_args gives it (an int, or its digits as text), ``None`` when not given."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise refuse(
            "max_length",
            f"max_length={value!r} is not allowed; expected a positive integer (tokens), or leave it out for the "
            "checkpoint's trained length",
        )
    return value


def check_model_args(args: Mapping[str, Any]) -> ModelArgs:
    """Every model_arg checked, before any weights load: the keys, ``max_length``, ``dtype``, ``layer_mix``,
    the checkpoint ``pretrained`` names (found, its config readable, every weight there in the shape it implies, read
    from the files' headers: ``check_weights``) and the rope
    and layer mix resolved against it, as ``load_model`` will resolve them. Raises :class:`ModelArgsError`."""
    unknown = sorted(set(args) - set(MODEL_ARGS) - set(HARNESS_ARGS))
    if unknown:
        raise ModelArgsError(f"ropekit model_args: unknown key {unknown[0]!r}; the keys are {', '.join(MODEL_ARGS)}")
    pretrained = args.get("pretrained")
    if pretrained is None or pretrained == "":
        raise ModelArgsError(
            "ropekit model_args: pretrained= is required (an embedded name, a .gguf file, a folder with config.json "
            "and *.safetensors, or a hub id org/name)"
        )
    max_length = positive_length(args.get("max_length"))
    dtype = args.get("dtype")
    try:
        resolve_dtype(dtype)
    except ValueError as error:
        raise refuse("dtype", error) from None
    if (device := args.get("device")) is not None:
        try:
            torch.device(str(device))
        except RuntimeError as error:
            raise refuse("device", f"device={device!r} is not a torch device: {error}") from None
    settings = {k: args[k] for k in ("rope_scaling", "layer_mix", "dtype") if k in args}
    if isinstance(pretrained, torch.nn.Module):  # an already loaded ropekit model
        given = sorted(k for k in ("revision", "rope_scaling", "layer_mix", "dtype") if args.get(k) is not None)
        if given:
            raise ModelArgsError(f"ropekit model_args: {given[0]}= needs pretrained= by name; this model is loaded")
        return ModelArgs(pretrained, None, None, device, max_length, settings)
    layer_mix = args.get("layer_mix")
    if layer_mix is not None:
        layer_mix = str(layer_mix)
        try:
            parse_layer_mix(layer_mix)
        except ValueError as error:
            raise refuse("layer_mix", error) from None
    try:
        rope = rope_argument(args.get("rope_scaling"))
    except ValueError as error:
        raise refuse("rope_scaling", error) from None
    try:
        name = pretrained if isinstance(pretrained, Checkpoint) else str(pretrained)
        checkpoint, raw = read_model_config(name, revision=args.get("revision"))
        check_weights(checkpoint, model_config(raw))  # a family ropekit runs; every weight there, from the headers
    except ValueError as error:
        raise refuse("pretrained", error) from None
    try:
        config = model_config(raw, rope_scaling=rope, layer_mix=layer_mix)
    except RopeConfigError as error:
        raise refuse("rope_scaling", error) from None
    except ValueError as error:  # the layer mix on this model's layers
        raise refuse("layer_mix" if layer_mix is not None else "rope_scaling", error) from None
    return ModelArgs(checkpoint, config, dtype, device, max_length, settings)


def rope_argument(value: Any) -> Any:
    """``rope_scaling`` as model_args gives it: a dict (JSON model_args), a JSON object as text, ``native``
    or empty for the checkpoint's own rope, or what :func:`ropekit.load_model` takes (``yarn:4``, a path)."""
    if value is None or isinstance(value, dict):
        return value
    text = str(value).strip()
    if text in ("", "native", "none", "None"):
        return None
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"rope_scaling={text!r} is not a JSON object: {error}") from None
    return text


def harness_device(device: Any) -> Any:
    """lm-eval's CLI asks for ``cuda:0`` unless told otherwise; like HFLM, run on the CPU (saying so) where
    torch sees no CUDA device."""
    if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("device=%s asked for, but torch sees no CUDA device: running on the CPU", device)
        return "cpu"
    return device


@register_model("ropekit")
class RopekitLM(TemplateLM):
    """An lm-eval ``LM`` over :func:`ropekit.load_model`. ``pretrained``: anything ``load_model`` takes (an
    embedded name, a GGUF file, a transformers folder, a hub id); ``rope_scaling``, ``layer_mix``, ``dtype``,
    ``device``, ``revision`` as there; ``max_length``: the longest sequence a request is given (rolling
    windows, truncation of long contexts), by default the checkpoint's trained length."""

    def __init__(self, pretrained: Any = None, **kwargs: Any):
        args = check_model_args({"pretrained": pretrained, **kwargs})
        super().__init__()
        if args.config is None:
            self.model = args.pretrained
        else:
            try:
                self.model = load_model(
                    args.pretrained, config=args.config, dtype=args.dtype, device=harness_device(args.device)
                )
            except CheckpointError as error:  # weights that disagree with their config, truncated files
                raise refuse("pretrained", error) from None
        self.tokenizer = self.model.tokenizer
        self._max_length = args.max_length or self.model.config.max_position_embeddings
        self._pretrained = str(pretrained) if args.config is not None else self.model.source
        self._settings = args.settings

    # What lm-eval's TemplateLM and HFLM read, with HFLM's choices for a causal model.
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return 256  # HFLM's default

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """HFLM's ``tok_encode``: the tokenizer's default special tokens, none when the text already starts
        with the BOS text."""
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            special = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def get_model_info(self) -> dict:
        return {"model": "ropekit", "pretrained": self._pretrained, **{k: str(v) for k, v in self._settings.items()}}

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """Each ``(strings, context_ids, continuation_ids)``: the continuation's log-probability and whether
        greedy decoding gives it, read from the last ``max_length + 1`` tokens as HFLM reads them."""
        out = []
        for strings, context, continuation in requests:
            ids = (context + continuation)[-(self.max_length + 1) :]
            prompt = ids[: len(ids) - len(continuation)]
            score = score_answer(self.model, prompt, continuation)
            result = (score.logprob, score.exact)
            if strings is not None:
                self.cache_hook.add_partial("loglikelihood", strings, result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each whole text, in lm-eval's disjoint windows of ``max_length`` tokens."""
        out = []
        for request in requests:
            (text,) = request.args
            windows = map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text),  # as HFLM 0.4.13: the tokenizer's defaults
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            )
            total = 0.0
            for context, predicted in windows:
                # reads context + predicted less its last token, predicts the last len(predicted) tokens
                ids = (context + predicted)[:-1]
                nll = token_nll(self.model, ids, next_id=predicted[-1])[-len(predicted) :]
                total -= float(nll.double().sum())
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, as HFLM makes them: the context's last ``max_length - max_gen_toks`` tokens,
        at most ``max_gen_toks`` new ones, ending at EOS or once a stop sequence shows in the decoded tail
        (lm-eval's own ``MultiTokenEOSCriteria``), the text cut at the first stop sequence. Sampling is refused."""
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        eos_ids = stop_ids(self.model)  # the tokenizer's EOS and the config's: generate stops on both
        out = []
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            if kwargs.get("do_sample") or kwargs.get("temperature", 0.0) > 0:
                raise ValueError(f"ropekit generates greedily only; the task asks for sampling ({gen_kwargs})")
            if max_gen_toks >= self.max_length:
                raise ValueError(
                    f"max_gen_toks={max_gen_toks} leaves no room for a context in max_length={self.max_length}"
                )
            prompt = self.tok_encode(context)[-(self.max_length - max_gen_toks) :]
            criteria = [MultiTokenEOSCriteria(s, self.tokenizer, len(prompt), 1) for s in until]

            def stop(new: list[int], prompt=prompt, criteria=criteria) -> bool:
                ids = torch.tensor([prompt + new])
                return any(c(ids, None) for c in criteria)

            tokens = greedy_generate(self.model, prompt, max_new_tokens=max_gen_toks, eos_ids=eos_ids, stop=stop)
            text = postprocess_generated_text(self.tok_decode(tokens), stop=until, think_end_token=None)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out
