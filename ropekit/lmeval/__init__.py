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
"""

from __future__ import annotations

import json
import logging
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
from ..eval.generate import greedy_generate
from ..models import load_model

# model_args this backend reads; lm-eval itself adds batch_size, max_batch_size and device (and
# trust_remote_code); RULER's data builders read tokenizer (a name AutoTokenizer loads) from model_args.
MODEL_ARGS = ("pretrained", "revision", "rope_scaling", "layer_mix", "dtype", "device", "max_length", "tokenizer")
HARNESS_ARGS = ("batch_size", "max_batch_size", "trust_remote_code")

logger = logging.getLogger(__name__)


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
        unknown = sorted(set(kwargs) - set(MODEL_ARGS) - set(HARNESS_ARGS))
        if unknown:
            raise ValueError(f"ropekit model_args: unknown key {unknown[0]!r}; the keys are {', '.join(MODEL_ARGS)}")
        if pretrained is None:
            raise ValueError("ropekit model_args: pretrained= is required (an embedded name, a GGUF file, a folder)")
        super().__init__()
        if isinstance(pretrained, torch.nn.Module):  # an already loaded ropekit model
            given = sorted(k for k in ("revision", "rope_scaling", "layer_mix", "dtype") if kwargs.get(k) is not None)
            if given:
                raise ValueError(f"ropekit model_args: {given[0]}= needs pretrained= by name; this model is loaded")
            self.model = pretrained
        else:
            self.model = load_model(
                pretrained,
                revision=kwargs.get("revision"),
                rope_scaling=rope_argument(kwargs.get("rope_scaling")),
                layer_mix=kwargs.get("layer_mix"),
                dtype=kwargs.get("dtype"),
                device=harness_device(kwargs.get("device")),
            )
        self.tokenizer = self.model.tokenizer
        max_length = kwargs.get("max_length")
        self._max_length = int(max_length) if max_length else self.model.config.max_position_embeddings
        self._pretrained = str(pretrained) if not isinstance(pretrained, torch.nn.Module) else self.model.source
        self._settings = {k: kwargs[k] for k in ("rope_scaling", "layer_mix", "dtype") if k in kwargs}

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
        eos_ids = {self.eot_token_id}
        checkpoint_eos = self.model.config.checkpoint.get("eos_token_id")  # generate stops on the config's too
        eos_ids.update(
            checkpoint_eos if isinstance(checkpoint_eos, list) else [checkpoint_eos] * (checkpoint_eos is not None)
        )
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
