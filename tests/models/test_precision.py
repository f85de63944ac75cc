"""The dtype a model runs in: "auto" detection on a faked /proc/cpuinfo, and which operations of a
bf16 forward run in bf16 and which in float32."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import ropekit
from ropekit.models import ModelConfigError, cpu_flags, precision, reconfigure, resolve_dtype
from ropekit.rope.rotary import rope_table
from tests.models.test_parity import random_ids
from tests.models.tiny import FAMILY_CONFIGS, make_checkpoint

# Two processors of the kind these machines have, trimmed; the first line of flags is what counts.
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni {extra}
"""


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Fake /proc/cpuinfo: call with the extra flags the CPU should report."""

    def fake(extra: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(extra=extra))
        monkeypatch.setattr(precision, "CPUINFO", path)

    return fake


@pytest.mark.parametrize(
    ("flags", "dtype", "reason"),
    [
        ("avx512_bf16 amx_tile", torch.bfloat16, "cpu has avx512_bf16"),
        ("amx_bf16 amx_tile", torch.bfloat16, "cpu has amx_bf16"),
        ("avx512_fp16", torch.float32, "cpu lacks avx512_bf16 and amx_bf16"),
    ],
)
def test_auto_on_the_cpu_follows_its_flags(cpuinfo, flags, dtype, reason):
    cpuinfo(flags)
    assert resolve_dtype("auto", "cpu") == precision.Precision(dtype, reason)


def test_auto_without_cpuinfo_is_float32(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "absent")
    assert cpu_flags() == frozenset()
    assert resolve_dtype("auto").dtype == torch.float32


def test_auto_resolves_per_device(cpuinfo):
    cpuinfo("")  # a CPU without fast bf16 does not matter to a GPU
    assert resolve_dtype("auto", "cuda") == precision.Precision(torch.bfloat16, "cuda")
    assert resolve_dtype("auto", "cuda:1").dtype == torch.bfloat16
    assert resolve_dtype("auto", "cpu").dtype == torch.float32
    assert resolve_dtype(None, "cpu") == precision.Precision(torch.float32, "default on cpu")
    assert resolve_dtype(None, "cuda") == precision.Precision(torch.bfloat16, "default on cuda")
    assert resolve_dtype("bf16", "cpu") == precision.Precision(torch.bfloat16, "asked for")
    assert resolve_dtype(torch.float32, "cuda").name == "float32"
    with pytest.raises(ModelConfigError, match="dtype='fp8' is not supported; expected auto or one of"):
        resolve_dtype("fp8")


@pytest.mark.parametrize(("flags", "dtype"), [("avx512_bf16", torch.bfloat16), ("", torch.float32)])
def test_load_model_auto_records_the_choice(cpuinfo, tmp_path, flags, dtype):
    cpuinfo(flags)
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path, dtype="auto")
    assert model.dtype == dtype and model.precision.dtype == dtype
    assert model.precision.reason.startswith("cpu has" if flags else "cpu lacks")
    assert ropekit.load_model(tmp_path, dtype="float32").precision.reason == "asked for"  # fp32 stays selectable
    assert reconfigure(model, layer_mix="all-global").precision == model.precision


class DtypeLog(TorchDispatchMode):
    """Each operation run under it (by name, ``add_`` as ``add``) with the floating dtypes it was given."""

    def __init__(self):
        super().__init__()
        self.ops: dict[str, set[torch.dtype]] = defaultdict(set)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        self.ops[func.__name__.split(".")[0].rstrip("_")] |= {t.dtype for t in tensors}
        return func(*args, **kwargs)


# The statistics of the norms (pow, mean, rsqrt), the rope tables (cos, sin) and the cross-entropy
# (its log-softmax) in float32; the projections, the LM head and attention in bf16 (torch's CPU
# flash kernel keeps its softmax statistics in float32 for bf16 inputs: accum_t = opmath_type).
FLOAT32 = {"pow", "mean", "rsqrt", "cos", "sin", "log_softmax"}
BFLOAT16 = {"embedding", "linear", "mm", "scaled_dot_product_attention"}


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_bf16_forward_keeps_statistics_in_float32(family, tmp_path):
    """A property, not a tolerance: on tiny models a norm or softmax in bf16 moves the NLL less than
    bf16 noise does (test_parity's bf16 test would not see it), so the dtypes are checked directly."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    model = ropekit.load_model(tmp_path, dtype="bfloat16")
    ids = random_ids(model.config.vocab_size, 100)
    rope_table.cache_clear()  # computed under the log, not read from the cache
    with DtypeLog() as log:
        nll = ropekit.token_nll(model, ids)
    assert nll.dtype == torch.float32 and torch.isfinite(nll).all()
    # (an operation never run shows as an empty set of dtypes, so each was seen too)
    assert {op: log.ops[op] for op in FLOAT32} == dict.fromkeys(FLOAT32, {torch.float32})
    assert {op: log.ops[op] for op in BFLOAT16} == dict.fromkeys(BFLOAT16, {torch.bfloat16})
