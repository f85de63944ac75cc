"""The KV cache a prompt leaves, in bytes a token, on random-weight models of the families' shapes
(benchmarks/family_shapes.py's): every layer's key, value (and far-key) buffers after one cached forward over a
prompt of ``--tokens`` tokens, measured as the tensors' own bytes (``untyped_storage().nbytes()``), beside the
expanded keys and values a head each that a cache of transformers' layout holds.

    PYTHONPATH=. .venv/bin/python benchmarks/kv_cache.py --shapes deepseek-v2-lite-small llama4-scout-small
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import ropekit
from benchmarks.family_shapes import SHAPES
from ropekit.models.decoder import KVCache


def write(shape: str, folder: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(SHAPES[shape])
    model_type = config.pop("model_type")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config)).save_pretrained(folder)


def measure(shape: str, tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        write(shape, Path(folder))
        model = ropekit.load_model(folder, dtype="float32")
    c = model.config
    cache = KVCache(len(c.layers), capacity=tokens)
    ids = torch.randint(3, c.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        model(ids, cache=cache)
    buffers = [t for layer in cache.layers for t in (layer.keys, layer.values, layer.far_keys) if t is not None]
    held = sum(t.untyped_storage().nbytes() for t in buffers)  # the whole buffers, not the views' kept tokens
    heads = [c.num_attention_heads if c.latent else s.kv_heads for s in c.shapes]  # MLA: each head's own
    expanded = sum(tokens * h * (s.head_dim + s.value_dim) * 4 for h, s in zip(heads, c.shapes, strict=True))
    return {"shape": shape, "tokens": tokens, "held": held, "expanded": expanded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["deepseek-v2-lite-small", "llama4-scout-small"])
    parser.add_argument("--tokens", type=int, default=4096)
    args = parser.parse_args()
    print("| shape | prompt tokens | cache bytes a token | all layers' keys and values, a token | ratio |")
    print("|---|---:|---:|---:|---:|")
    for shape in args.shapes:
        r = measure(shape, args.tokens)
        held, full = r["held"] / r["tokens"], r["expanded"] / r["tokens"]
        print(f"| {shape} | {r['tokens']} | {held:,.0f} | {full:,.0f} | {full / held:.1f}x |")


if __name__ == "__main__":
    main()
