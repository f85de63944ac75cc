"""Write the GGUF fixtures in this folder with llama.cpp's own converter (run by hand, not by the tests).

For each architecture below: a tiny random checkpoint written by transformers (``tests/models/tiny.py``'s
config of that family, shrunk to ``SHAPE``), its weights rounded to float16 so that both files hold the same
numbers, saved as ``ARCH/`` (config.json, model.safetensors), and ``ARCH.gguf`` written from that folder by
llama.cpp's ``convert_hf_to_gguf.py --outtype f16`` (2-D weights in float16, norms in float32, as it writes them).
``tests/models/test_gguf_llama_cpp.py`` loads each GGUF file in ropekit and compares it with transformers' forward
of the folder.

The converter is not on PyPI by itself: it ships in llama-cpp-python's source distribution (0.3.36 wrote these
files; its vendored gguf-py is 0.19.0, the ``gguf`` ropekit installs)::

    pip download llama-cpp-python==0.3.36 --no-binary :all: --no-deps -d /tmp/lcp
    tar xzf /tmp/lcp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcp
    .venv/bin/python tests/models/gguf/make.py /tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp [ARCH ...]

Two things are changed in the converter, neither touching a weight or a model key: every model writes its
vocabulary as a GPT-2-style token list (``_set_vocab_gpt2``), and its pre-tokenizer check returns "default",
since the tiny word-level tokenizer is none of the real ones it recognises (and needs no sentencepiece).
"""

from __future__ import annotations

import runpy
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

import torch  # noqa: E402

from tests.models.tiny import FAMILY_CONFIGS, add_tokenizer, make_checkpoint  # noqa: E402

SHAPE = {
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "max_position_embeddings": 128,
}
# fixture -> the family config it is written from (tests/models/tiny.py's, or LLAMA3), and what else it sets
ARCHITECTURES = {
    "olmo2": ("olmo2", {}),
    "olmo3": ("olmo3", {}),  # llama.cpp writes OLMo 3 as "olmo2" with a sliding window and its pattern
    "olmoe": ("olmoe", {}),
    "granite": ("granite", {}),
    "cohere2": ("cohere2", {"rotary_pct": 1.0}),  # Command R7B's config.json has it; the converter reads it
    "glm4": ("glm4", {}),
    "smollm3": ("smollm3", {"use_sliding_window": False}),  # as SmolLM3-3B; llama.cpp's smollm3 has no window
    "ministral3": ("ministral3", {"sliding_window": None}),  # as Ministral 3's; llama.cpp's mistral3 has no window
    # Llama 3's rope, which llama.cpp writes as per-frequency factors (rope_freqs); heads 64 wide, so that 3 of its
    # frequencies fall between the bands
    "llama3": ("llama3", {"head_dim": 64}),
    "exaone4": ("exaone4", {}),
    # Gemma: the tokenizer's 55 tokens, as llama.cpp's Gemma converters cut the embedding to the tokenizer's size;
    # q.k scaled by head_dim, as llama.cpp takes it for every Gemma 2 and 3 but the 27B
    "gemma2": ("gemma2", {"vocab_size": 55, "query_pre_attn_scalar": 32, "head_dim": 32}),
    # Gemma 3 as its 4B and larger: 5 local : 1 global layers (llama.cpp writes no pattern: it takes that one), a
    # linear rope (factor 8) on global layers
    "gemma3": (
        "gemma3",
        {
            "vocab_size": 55,
            "query_pre_attn_scalar": 32,
            "head_dim": 32,
            "num_hidden_layers": 6,
            "layer_types": None,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        },
    ),
    "gemma4": ("gemma4", {"vocab_size": 55, "vocab_size_per_layer_input": 55}),
    # DeepSeek V3's router in llama.cpp's own keys (leading dense blocks, shared experts, the weights' scale and norm);
    # GLM-4.5 with its q/k/v biases; dots.llm1 in one group of experts, as published (llama.cpp writes no groups)
    "glm4moe": ("glm4_moe", {"n_group": 1, "topk_group": 1}),
    "dots1": ("dots1", {"n_group": 1, "topk_group": 1}),
    "qwen2moe": ("qwen2_moe", {"mlp_only_layers": []}),  # llama.cpp's Qwen-MoE has experts on every layer
    "gpt-oss": ("gpt_oss", {}),  # unquantised experts: gate and up split apart, each expert's rows (out, in)
    "exaone-moe": ("exaone_moe", {}),
    # ERNIE 4.5's experts to the last layer (llama.cpp writes no last one), as its published models have them
    "ernie4_5-moe": ("ernie4_5_moe", {"moe_layer_end_index": -1}),
    # its xIELU weights written as metadata; its llama3 rope (as rope_freqs) trained at 32 tokens, heads 64 wide so that
    # frequencies fall between the bands, as the llama3 fixture's
    "apertus": (
        "apertus",
        {
            "head_dim": 64,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 12_000_000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        },
    ),
    "arcee": ("arcee", {}),
    # HunYuan's MoE with the per-layer lists its published config.json has (which the converter reads); its plain rope
    # (the converter takes an NTK-alpha rope only at Hunyuan-A13B's own alpha, head and lengths)
    "hunyuan-moe": ("hunyuan_v1_moe", {"moe_intermediate_size": [48] * 4, "num_shared_expert": [1] * 4}),
    "hunyuan-dense": ("hunyuan_v1_dense", {"rope_scaling": None}),  # its plain rope, as the MoE's
    "seed_oss": ("seed_oss", {}),  # q/k/v biases, none on o
    "ernie4_5": ("ernie4_5", {}),  # every projection's bias, pairs interleaved
    # Gated DeltaNet beside gated attention: llama.cpp splits Qwen3-Next's grouped projections and writes the decay as
    # -exp(A_log); Qwen3.5's value heads reordered (4 value heads to 2 key heads here). Qwen3-Next with experts on every
    # layer, as llama.cpp's Qwen-MoE has them
    "qwen3next": ("qwen3_next", {"mlp_only_layers": []}),
    "qwen35": ("qwen3_5", {}),
    "qwen35moe": ("qwen3_5_moe", {}),
    # LFM2's short convolutions (llama.cpp tells the convolution layers by their KV heads, 0) and its MLP width, written
    # already adjusted; LFM2-MoE with its published routed_scaling_factor of 1 (llama.cpp writes none)
    "lfm2": ("lfm2", {"conv_bias": False}),  # as published (the converter squeezes a bias as it does the weight)
    "lfm2moe": ("lfm2_moe", {"routed_scaling_factor": 1.0}),
}


LLAMA3 = {  # Llama 3.2's rope, trained at 32 tokens
    "model_type": "llama",
    "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    },
}


def write_checkpoint(folder: Path, family: str, extra: dict) -> None:
    config = LLAMA3 if family == "llama3" else FAMILY_CONFIGS[family]
    model = make_checkpoint(folder, {**config, **SHAPE, **extra})
    if family in ("gemma2", "gemma3", "qwen3_next", "qwen3_5", "qwen3_5_moe"):  # llama.cpp stores their norms as 1 + w
        # (but the DeltaNet's gated one), adding the 1 in the checkpoint's
        # dtype: w rounded so that 1 + w is exact in float16, and both files hold the same norms
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.copy_((1 + param).half().float() - 1)
    if family in ("qwen3_next", "qwen3_5", "qwen3_5_moe"):  # llama.cpp writes the decay rate as -exp(A_log) in the
        # checkpoint's float16: A_log takes the float16 values whose exp in float16 gives them back through a float32
        # log (0, 1.763, 2.693: of 5633 from -4 to 3, only these), so that both files hold the same decay rates
        round_trip = torch.tensor([0.0, 1.7626953125, 2.693359375])
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("A_log"):
                    param.copy_(round_trip[torch.arange(param.numel()) % 3])
    model.half().save_pretrained(folder)  # the float16 the GGUF file holds, so both files hold the same weights
    add_tokenizer(folder)
    (folder / "generation_config.json").unlink(missing_ok=True)


# written without their multi-token-prediction layers, which the tiny checkpoints have none of (--no-mtp)
NO_MTP = ("qwen3next", "qwen35", "qwen35moe")


def convert(llama_cpp: Path, folder: Path, out: Path, flags: tuple[str, ...] = ()) -> None:
    sys.path[:0] = [str(llama_cpp), str(llama_cpp / "gguf-py")]
    import conversion
    from conversion import base

    def gpt2_vocab(self):
        self._set_vocab_gpt2()

    def patched(cls: type) -> None:
        for c in cls.__mro__:
            if "set_vocab" in vars(c):
                c.set_vocab = gpt2_vocab
            for inner in vars(c).values():  # Mistral3Model converts through a nested Ministral3Model
                if isinstance(inner, type) and issubclass(inner, base.ModelBase) and inner is not c:
                    patched(inner)

    resolve = conversion.get_model_class

    def get_model_class(name: str, mmproj: bool = False) -> type:
        cls = resolve(name, mmproj)
        patched(cls)
        return cls

    conversion.get_model_class = get_model_class
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "default"
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", str(folder), "--outtype", "f16", "--outfile", str(out), *flags]
    try:
        runpy.run_path(str(llama_cpp / "convert_hf_to_gguf.py"), run_name="__main__")
    except SystemExit as done:
        if done.code:
            raise
    finally:
        sys.argv = argv


def main() -> None:
    llama_cpp, only = Path(sys.argv[1]), sys.argv[2:]  # the fixtures to write (all where none is named)
    for arch, (family, extra) in ARCHITECTURES.items():
        if only and arch not in only:
            continue
        folder = HERE / arch
        shutil.rmtree(folder, ignore_errors=True)
        write_checkpoint(folder, family, extra)
        convert(llama_cpp, folder, HERE / f"{arch}.gguf", ("--no-mtp",) if arch in NO_MTP else ())
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)  # the tests tokenise nothing: ids are drawn at random


if __name__ == "__main__":
    main()
