"""Greedy generation with a KV cache (ropekit/eval/generate.py, the cache in ropekit/models/decoder.py),
proven token for token against transformers' ``generate`` and against decoding without a cache."""

from __future__ import annotations

import pytest
import torch

import ropekit
from ropekit.eval.generate import generate_text, greedy_generate, score_and_generate
from ropekit.models import decoder
from ropekit.models.decoder import KVCache, LayerCache
from ropekit.rope import spec_frequencies
from ropekit.rope.presets import preset

from ..models.tiny import FAMILY_CONFIGS, add_tokenizer, decoded_without_a_cache, make_checkpoint

TRAINED = 128  # max_position_embeddings of the checkpoints: prompt + generation run past it
PROMPT, NEW = 100, 40


def hf_greedy(hf, prompt: torch.Tensor, n: int) -> list[int]:
    out = hf.generate(prompt[None], max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert out.shape[1] == prompt.shape[0] + n  # no EOS stop: ropekit is given no eos_ids either
    return out[0, prompt.shape[0] :].tolist()


def prompt_ids(vocab: int, n: int = PROMPT, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3", "gemma3", "exaone4", "phi3"])
def test_each_family_generates_as_transformers(family, tmp_path):
    """Sliding layers (windows 40 to 64, all shorter than the 140 tokens) keep only their window."""
    hf = make_checkpoint(tmp_path, {**FAMILY_CONFIGS[family], "max_position_embeddings": TRAINED})
    model = ropekit.load_model(tmp_path, dtype="float32")
    prompt = prompt_ids(model.config.vocab_size)
    assert greedy_generate(model, prompt, max_new_tokens=NEW) == hf_greedy(hf, prompt, NEW)


@pytest.mark.parametrize("rope_type", ["linear", "dynamic", "yarn", "longrope", "llama3"])
def test_each_rope_generates_as_transformers(rope_type, tmp_path):
    """Past the trained length: dynamic rotates each new token at the length read so far (transformers'
    generate updates its frequencies at each step), longrope switches to its long factors there."""
    geometry = {"head_dim": 16, "rope_theta": 10000.0, "max_position_embeddings": TRAINED}
    rope = {**preset(rope_type, 4.0, **geometry), "rope_theta": 10000.0}
    hf = make_checkpoint(tmp_path, {"model_type": "llama", "max_position_embeddings": TRAINED, "rope_parameters": rope})
    model = ropekit.load_model(tmp_path, dtype="float32")
    assert model.config.layers[0].rope.rope_type == rope_type
    prompt = prompt_ids(model.config.vocab_size)
    assert greedy_generate(model, prompt, max_new_tokens=NEW) == hf_greedy(hf, prompt, NEW)


def test_a_layer_mix_generates_as_decoding_without_a_cache(tmp_path):
    """A mix upstream has no switch for (sliding window 16, NoPE on the global layer, dynamic rope): the
    cached decoding equals the argmax of a full forward over everything so far, step by step."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path, dtype="float32", layer_mix="LLLG@16+nope", rope_scaling="dynamic:2")
    prompt = prompt_ids(model.config.vocab_size, n=30)
    assert greedy_generate(model, prompt, max_new_tokens=25) == decoded_without_a_cache(model, prompt, 25)


# The attention-level ropes with windows shorter than the 30-token prompt, so decoding crosses into their far
# region at once; on a sliding mix (window 20) and a full one.
ATTENTION_LEVEL = ["rerope:12", "leaky_rerope:12,4", "self_extend:3,12"]


@pytest.mark.parametrize("rope", ATTENTION_LEVEL)
@pytest.mark.parametrize("mix", [None, "LG@20"])
def test_attention_level_ropes_generate_as_decoding_without_a_cache(rope, mix, tmp_path):
    """ReRoPE, leaky ReRoPE and Self-Extend through the cache: each cached key keeps its far-region rotation
    beside its own, and a new query scores the keys at least the window behind it with its far rotation."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path, dtype="float32", layer_mix=mix, rope_scaling=rope)
    prompt = prompt_ids(model.config.vocab_size, n=30)
    assert greedy_generate(model, prompt, max_new_tokens=25) == decoded_without_a_cache(model, prompt, 25)


@pytest.mark.parametrize("rope", ATTENTION_LEVEL)
def test_attention_level_ropes_cached_in_pieces_equal_one_forward(rope, tmp_path):
    """Pieces shorter and longer than the window, the first shorter than it (no key is far yet)."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path, dtype="float32", rope_scaling=rope)
    ids = prompt_ids(model.config.vocab_size, n=60)[None]
    cache = KVCache(len(model.config.layers))
    with torch.inference_mode():
        pieces = torch.cat([model(ids[:, a:b], cache=cache) for a, b in ((0, 8), (8, 9), (9, 40), (40, 60))], 1)
        whole = model(ids)
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=1e-5)
    assert all(c.far_keys.shape == c.keys.shape for c in cache.layers)


def test_cached_forward_equals_one_forward(tmp_path):
    """Hidden states of a prompt read in three pieces through the cache equal one forward over it."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    model = ropekit.load_model(tmp_path, dtype="float32")
    ids = prompt_ids(model.config.vocab_size, n=90)[None]
    cache = KVCache(len(model.config.layers))
    with torch.inference_mode():
        pieces = torch.cat([model(ids[:, a:b], cache=cache) for a, b in ((0, 50), (50, 51), (51, 90))], 1)
        whole = model(ids)
    assert cache.length == 90
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=1e-5)
    windows = {layer.window for layer in model.config.layers}
    assert {c.keys.shape[2] for c in cache.layers} == {90 if w is None else w - 1 for w in windows}


def spy(monkeypatch, owner, name: str) -> list:
    """Record each call of ``owner.name`` (its arguments), calling through."""
    calls, original = [], getattr(owner, name)

    def recorded(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def test_decoding_builds_tables_once_and_writes_keys_in_place(tmp_path, monkeypatch):
    """O(1) rope and cache work a token, counted rather than timed: over 60 tokens, Gemma 3's two static ropes
    are built once each (for the prompt and the generation at once), and every layer keeps one key buffer,
    sliding layers included (their 79-token buffer, for a 40-token window, moves its keys to the front once)."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    model = ropekit.load_model(tmp_path, dtype="float32")
    builds = spy(monkeypatch, decoder, "position_table")
    buffers: dict[int, set[int]] = {}
    extend = LayerCache.extend

    def extend_and_record(self, layer, *new):
        out = extend(self, layer, *new)
        buffers.setdefault(id(self), set()).add(self.keys.untyped_storage().data_ptr())
        return out

    monkeypatch.setattr(LayerCache, "extend", extend_and_record)
    assert len(greedy_generate(model, prompt_ids(model.config.vocab_size), max_new_tokens=60)) == 60
    assert [args[0] for args, _ in builds] == [model.config.layers[0].rope, model.config.layers[3].rope]
    assert [len(args[1]) for args, _ in builds] == [PROMPT + 60] * 2  # positions 0 .. prompt + 60 - 1
    assert len(buffers) == len(model.config.layers)
    assert all(len(pointers) == 1 for pointers in buffers.values())


@pytest.mark.parametrize("rope_type", ["dynamic", "longrope"])
def test_decoding_rebuilds_tables_only_when_the_frequencies_change(rope_type, tmp_path, monkeypatch):
    """Across the trained length (128), dynamic's frequencies change at every length past it and longrope's
    once, from short to long factors: the tables are rebuilt exactly then, for the positions still to come."""
    geometry = {"head_dim": 16, "rope_theta": 10000.0, "max_position_embeddings": TRAINED}
    rope = {**preset(rope_type, 4.0, **geometry), "rope_theta": 10000.0}
    make_checkpoint(tmp_path, {"model_type": "llama", "max_position_embeddings": TRAINED, "rope_parameters": rope})
    model = ropekit.load_model(tmp_path, dtype="float32")
    spec = model.config.layers[0].rope
    builds = spy(monkeypatch, decoder, "position_table")
    prompt = prompt_ids(model.config.vocab_size, n=120)
    greedy_generate(model, prompt, max_new_tokens=20)
    frequencies = {n: spec_frequencies(spec, n)[0] for n in range(120, 140)}  # the prompt's, then each fed token's
    changed = [n for n in range(121, 140) if not torch.equal(frequencies[n], frequencies[n - 1])]
    assert len(changed) == {"dynamic": 11, "longrope": 1}[rope_type]  # 129 .. 139; 129 alone
    # (evaluated at, first position, last position): the rest of the sequence, from the token being read
    built = [(kwargs["seq_len"], int(positions[0]), int(positions[-1])) for (_, positions), kwargs in builds]
    assert built == [(120, 0, 139)] + [(n, n - 1, 139) for n in changed]


def test_generation_ends_at_eos_or_when_stop_says(tmp_path):
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path, dtype="float32")
    prompt = prompt_ids(model.config.vocab_size, n=10)
    free = greedy_generate(model, prompt, max_new_tokens=12)
    assert len(free) == 12
    assert greedy_generate(model, prompt, max_new_tokens=12, eos_ids={free[4]}) == free[: free.index(free[4]) + 1]
    assert greedy_generate(model, prompt, max_new_tokens=12, stop=lambda new: len(new) == 3) == free[:3]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_the_embedded_models_generate_as_transformers(name):
    """The embedded GGUFs on both sides, float32: 40 tokens after 600 of Hamlet (past Gemma 3's 512 window)."""
    from transformers import AutoModelForCausalLM

    from ropekit.data import shakespeare
    from ropekit.models import embedded_path

    path = embedded_path(name)
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    model = ropekit.load_model(name, dtype="float32")
    hamlet = next(d.text for d in shakespeare().documents if d.name == "Hamlet")
    prompt = torch.tensor(model.tokenizer.encode(hamlet)[:600])
    assert greedy_generate(model, prompt, max_new_tokens=40) == hf_greedy(hf, prompt, 40)


@pytest.mark.parametrize(("rope", "mix"), [(None, "LG@20"), ("rerope:12", None), ("yarn:2", "LLLG@16+nope")])
def test_one_forward_of_the_prompt_scores_the_answer_and_decodes(rope, mix, tmp_path, monkeypatch):
    """A generating trial's two scores from one forward over its prompt: the teacher-forced answer read from a
    fork of the prompt's cache equals ``score_answer``'s forward over prompt and answer (float32, 1e-5), and the
    decoding after the prompt is ``generate_text``'s, token for token. The sliding layers' buffers (window 16,
    20) are copied into the fork, which moves its keys: the decoding still reads the prompt's."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    add_tokenizer(tmp_path)
    model = ropekit.load_model(tmp_path, dtype="float32", layer_mix=mix, rope_scaling=rope)
    prompt, answer = prompt_ids(model.config.vocab_size, n=60), prompt_ids(model.config.vocab_size, n=19, seed=2)
    expected = ropekit.score_answer(model, prompt, answer), generate_text(model, prompt, 30)
    forward = model.forward
    lengths = []

    def counted(ids, cache=None):
        lengths.append(ids.shape[-1])
        return forward(ids, cache=cache)

    monkeypatch.setattr(model, "forward", counted)
    score, text = score_and_generate(model, prompt, answer, 30)
    assert lengths.count(60) == 1 and max(lengths[1:]) == 18  # the prompt once, then the answer's 18 and tokens
    assert text == expected[1]
    assert (score.exact, score.n_correct, score.n_answer) == (expected[0].exact, expected[0].n_correct, 19)
    assert score.logprob == pytest.approx(expected[0].logprob, rel=1e-5)
