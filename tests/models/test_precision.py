"""The dtype a model runs in: "auto" decided by the CPU's flags (a faked /proc/cpuinfo) and a stubbed
bf16 probe, its cache keyed by machine, and which operations of a bf16 forward run in bf16 and which
in float32. Nothing here times anything: every decision is made from figures the test gives."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import ropekit
from ropekit.cache import Notice
from ropekit.models import ModelConfigError, cpu_flags, precision, reconfigure, resolve_dtype
from ropekit.rope.rotary import rope_table
from tests.conftest import FAST_BF16
from tests.models.test_parity import random_ids
from tests.models.tiny import FAMILY_CONFIGS, make_checkpoint

MACHINE_BF16 = precision.machine_bf16  # the real one, before tests/conftest.py stubs it
# The issue-33 Intel Xeon (avx512_bf16, no AMX), 2 threads: bf16 matmuls at 0.58x fp32.
SLOW_BF16 = precision.Bf16Probe(
    matmul_fp32=165e9, matmul_bf16=95e9, attention_fp32=1e11, attention_bf16=9e10, threads=2
)

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


@pytest.fixture
def probe(monkeypatch):
    """Stub this machine's bf16 probe: call with what it finds; returns the calls made."""
    calls = []

    def stub(found: precision.Bf16Probe) -> list:
        def machine_bf16(**kw):
            calls.append(found)
            return found

        monkeypatch.setattr(precision, "machine_bf16", machine_bf16)
        return calls

    return stub


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """The real cache (in the test's folder) over a stubbed measurement: call with what it finds;
    returns the measurements made. The machine is quiet unless a test says otherwise."""
    monkeypatch.setenv("ROPEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "others_busy", lambda before, after: 0.0)
    calls = []

    def stub(found: precision.Bf16Probe):
        def measure():
            calls.append(found)
            return found

        return lambda: MACHINE_BF16(measure=measure)

    return stub, calls


@pytest.mark.parametrize(
    ("flags", "found", "dtype", "reason"),
    [
        (
            "avx512_bf16 amx_tile",
            FAST_BF16,
            torch.bfloat16,
            "bf16 measured at 4.00x fp32 here, in GFLOP/s bf16 against fp32: matmul 800 against 200, attention 400 "
            "against 100, 2 threads",
        ),
        (
            "amx_bf16 amx_tile",
            SLOW_BF16,
            torch.float32,
            "bf16 measured at 0.69x fp32 here, in GFLOP/s bf16 against fp32: matmul 95 against 165, attention 90 "
            "against 100, 2 threads; under 1.2x",
        ),
        ("avx512_fp16", FAST_BF16, torch.float32, "cpu lacks avx512_bf16 and amx_bf16"),
    ],
)
def test_auto_on_the_cpu_needs_the_flags_then_a_clear_speedup(cpuinfo, probe, flags, found, dtype, reason):
    cpuinfo(flags)
    calls = probe(found)
    assert resolve_dtype("auto", "cpu") == precision.Precision(dtype, reason)
    assert len(calls) == (1 if "bf16" in flags else 0)  # without native bf16 nothing is timed (~200x slower)


def test_bf16_only_where_clearly_faster(cpuinfo, probe):
    """The speedup weighs matmul and attention as a pass of the main job's model at 4096 tokens does."""
    cpuinfo("avx512_bf16")
    even = replace(FAST_BF16, matmul_bf16=2e11, attention_bf16=1e11)
    assert even.speedup == pytest.approx(1.0)
    just = replace(even, matmul_bf16=2e11 * 1.2, attention_bf16=1e11 * 1.2)
    assert just.speedup == pytest.approx(1.2) and precision.choose(just).dtype == torch.bfloat16
    below = replace(just, attention_bf16=1e11 * 1.1)
    assert precision.choose(below).dtype == torch.float32 and "under 1.2x" in precision.choose(below).reason
    # the AMD EPYC of BENCHMARKS.md: bf16 matmuls 4x, attention 0.94x; weighed 66 : 34 by FLOPs
    amd = replace(FAST_BF16, attention_bf16=0.94e11)
    assert amd.speedup == pytest.approx((0.66 / 2e11 + 0.34 / 1e11) / (0.66 / 8e11 + 0.34 / 0.94e11))
    assert 1.5 < amd.speedup < 1.6 and precision.choose(amd).dtype == torch.bfloat16
    probe(SLOW_BF16)
    assert resolve_dtype("auto").dtype == torch.float32


def test_auto_resolves_once_per_process(cpuinfo, probe):
    """A worker never flips: the cache rewritten under a running process does not change its dtype."""
    cpuinfo("avx512_bf16")
    calls = probe(FAST_BF16)
    assert resolve_dtype("auto").dtype == torch.bfloat16
    probe(SLOW_BF16)
    assert resolve_dtype("auto").dtype == torch.bfloat16 and len(calls) == 1
    chosen = resolve_dtype("auto")
    assert resolve_dtype(chosen) is chosen  # a resolved precision is passed on as it is
    precision.auto_cpu.cache_clear()  # a new process
    assert resolve_dtype("auto").dtype == torch.float32


def test_the_probe_is_cached_per_machine(cpuinfo, measured, monkeypatch, tmp_path):
    cpuinfo("avx512_bf16")
    stub, calls = measured
    assert stub(FAST_BF16)() == FAST_BF16 and stub(FAST_BF16)() == FAST_BF16 and len(calls) == 1  # read back
    path = precision.bf16_path(precision.bf16_key())
    stored = json.loads(path.read_text())
    assert path.parent == tmp_path / "cache" / "rates" and path.name.startswith("bf16-")
    assert stored["key"]["processor"] == "Intel(R) Xeon(R) Processor" and stored["key"]["torch"] == torch.__version__
    assert stored["key"]["cores"] == precision.cores() and stored["probe"]["matmul_bf16"] == 8e11
    assert stub(SLOW_BF16)() == FAST_BF16  # the same machine: what was measured stands
    path.write_text("{not json")  # a damaged file is measured again, not trusted
    assert stub(SLOW_BF16)() == SLOW_BF16 and json.loads(path.read_text())["probe"]["matmul_bf16"] == 95e9
    for other in (
        lambda: (tmp_path / "cpuinfo").write_text(
            CPUINFO.replace("Xeon(R)", "Xeon(R) Gold").format(extra="avx512_bf16")
        ),
        lambda: monkeypatch.setattr(precision, "cores", lambda: 96),
        lambda: monkeypatch.setattr(torch, "__version__", "2.99.0+cpu"),
    ):
        other()  # another CPU model, core count, torch: another machine, measured again
        before = len(calls)
        assert stub(FAST_BF16)() == FAST_BF16 and len(calls) == before + 1
        assert stub(SLOW_BF16)() == FAST_BF16 and len(calls) == before + 1  # and kept for it


def test_a_probe_on_a_busy_machine_decides_this_run_and_is_not_cached(cpuinfo, measured, monkeypatch, probe):
    cpuinfo("avx512_bf16")
    stub, calls = measured
    monkeypatch.setattr(precision, "others_busy", lambda before, after: 1.3)
    with pytest.warns(Notice, match="other processes kept 1.3 cores busy while bf16 was timed .* not cached"):
        busy = stub(FAST_BF16)()
    assert busy == replace(FAST_BF16, busy=1.3) and not precision.bf16_path(precision.bf16_key()).exists()
    assert precision.choose(busy).reason.endswith("; timed while others kept 1.3 cores busy, not cached")
    monkeypatch.setattr(precision, "others_busy", lambda before, after: 0.0)
    assert stub(SLOW_BF16)() == SLOW_BF16 and len(calls) == 2  # timed again, quiet now: cached
    assert precision.bf16_path(precision.bf16_key()).exists()


def test_the_probe_measures_both_dtypes(monkeypatch):
    """The real probe at a small size (how fast it is depends on the machine: not asserted)."""
    monkeypatch.setattr(precision, "PROBE_TOKENS", 32)
    monkeypatch.setattr(precision, "PROBE_REPEATS", 1)
    before = torch.get_num_threads()
    found = precision.measure_bf16(threads=1)
    assert found.threads == 1 and torch.get_num_threads() == before
    assert all(v > 0 and v < float("inf") for v in (found.matmul_fp32, found.matmul_bf16, found.attention_fp32))
    assert 0 < found.attention_bf16 < float("inf") and found.busy == 0.0


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
    assert model.precision.reason.startswith("bf16 measured at 4.00x" if flags else "cpu lacks")
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
