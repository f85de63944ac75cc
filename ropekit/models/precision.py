"""The dtype a model runs in: the names users type, and ``"auto"``, bf16 where this machine runs it
clearly faster than fp32.

In bf16 the matmuls and attention run in bf16; norms, softmax statistics (inside the SDPA kernel),
the rope tables and the cross-entropy stay float32 (ropekit/models/decoder.py, ropekit/eval/nll.py).
A CPU multiplies bf16 fast only with native bf16 dot products, and having them is not enough: on the
AMD EPYC machines of this project (``avx512_bf16``) a 2048^3 matmul ran ~4x faster in bf16, on an
Intel Xeon with the same flag (no AMX) at 0.5-0.75x fp32 (issue 33); CPUs without them emulate bf16
and ran ~200x slower. So ``"auto"`` on a CPU needs the flags (without them nothing is timed), then
times bf16 against fp32 here (``measure_bf16``: a few hundred milliseconds at a model's shapes),
cached per machine beside the cost model's rates (``machine_bf16``), and takes bf16 only where it is
``BF16_SPEEDUP`` times faster. A probe on a busy machine is used once and not cached.

``"auto"`` resolves once per process (``auto_cpu``): whatever another process writes to the cache
later, a running sweep never changes dtype. The local executor hands its resolution to its workers;
a DIR resumed where ``"auto"`` resolves otherwise is refused (ropekit/sweep/meta.py, ``check_dtype``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import Notice, atomic_write, cache_dir
from .config import ModelConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

# The names users type, each as torch names its dtype (no torch import: a spec is checked without it).
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
# x86 flags of native bf16 dot products: AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4) and AMX.
FAST_BF16 = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
# bf16 only where clearly faster: it moves a perplexity by up to 0.1-0.5 % (BENCHMARKS.md), worth it
# for a large gain, not for one within the probe's noise.
BF16_SPEEDUP = 1.2
# The probe: the README's main job's model (SmolLM2-135M: hidden 576, MLP 1536, 9 heads of 64) on
# 1024 tokens, an MLP projection and a causal attention, each dtype's best of PROBE_REPEATS, the
# dtypes alternating. Its speedup weighs the two as a pass of that model at 4096 tokens does: 34 % of
# its FLOPs are attention's (ropekit/sweep/cost.py, token_flops: 12 % at 1024 tokens, 68 % at 16384).
PROBE_TOKENS, PROBE_HIDDEN, PROBE_MLP, PROBE_HEADS, PROBE_HEAD_DIM = 1024, 576, 1536, 9, 64
PROBE_REPEATS = 4
ATTENTION_SHARE = 0.34
PROBE_VERSION = "1"  # part of the cache key: a change to the probe invalidates old files
# A measurement taken while other processes used more than this many cores on average is not cached:
# a machine busy once (a test suite, another sweep) would otherwise decide every later run.
BUSY_CORES = 0.25


@dataclass(frozen=True)
class Precision:
    """The dtype a model runs in and why it was chosen (recorded in a sweep's meta.json)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


# --- this machine ---------------------------------------------------------------------------------


def cpu_flags() -> frozenset[str]:
    """The first processor's flags in ``CPUINFO`` (none where there is no such file)."""
    return frozenset(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The first processor's model name in ``CPUINFO`` (empty where there is no such file or line)."""
    return _cpuinfo("model name")


def cpu_flags_digest() -> str:
    """A digest of ``cpu_flags``: part of the keys of what is measured per machine."""
    return hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpuinfo(key: str) -> str:
    """The value of ``key`` for the first processor in ``CPUINFO``."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def cpu_sample() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds all processes spent busy or lost to the hypervisor, CPU seconds this
    process spent), from /proc/stat and this process's own accounting; NaNs where there is no /proc/stat."""
    own = time.process_time()
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(x) for x in fields]
        # user nice system irq softirq, and steal: a virtual machine's cores that another one ran on
        busy = sum(ticks[i] for i in (0, 1, 2, 5, 6, 7) if i < len(ticks)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = math.nan
    return time.perf_counter(), busy, own


def others_busy(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Cores other processes kept busy on average between two ``cpu_sample``s (0 for a window too short
    to tell, or without /proc/stat)."""
    wall = after[0] - before[0]
    others = (after[1] - before[1]) - (after[2] - before[2])
    if wall < 0.05 or not math.isfinite(others):
        return 0.0
    return max(0.0, others / wall)


def cached_measurement(path: Path, key: dict[str, Any], measure, *, load, dump, what: str) -> tuple[Any, float]:
    """A measurement of this machine kept as JSON at ``path`` under ``key``: read back (``load(record)``)
    where the file parses and its key matches, else ``measure()`` and written (``dump(value)``: the record's
    fields) unless other processes kept more than ``BUSY_CORES`` busy meanwhile: then it is used once, not
    cached, with a note saying so (``what``: what was measured). Returns it and the cores others kept busy
    (0 when read back, or measured quietly). The bf16 probe and the cost model's rates are kept so."""
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return load(stored), 0.0
    except (OSError, ValueError, KeyError, TypeError):
        pass
    before = cpu_sample()
    value = measure()
    if (busy := others_busy(before, cpu_sample())) > BUSY_CORES:
        warnings.warn(
            f"other processes kept {busy:.1f} cores busy while {what}: used for this run and not cached, so the "
            "next run measures again",
            Notice,
            stacklevel=3,
        )
        return value, busy
    record = {"key": key, **dump(value), "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        atomic_write(path, json.dumps(record, indent=1) + "\n")
    except OSError as err:  # a cache, not a result: the measurement is in hand
        warnings.warn(f"could not cache what was measured ({what}: {err}); going on without", Notice, stacklevel=3)
    return value, 0.0


# --- is bf16 faster here? -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bf16Probe:
    """The probe's FLOP/s in each dtype, its matmul's and its attention's, with ``threads`` threads,
    and the cores other processes kept busy meanwhile."""

    matmul_fp32: float
    matmul_bf16: float
    attention_fp32: float
    attention_bf16: float
    threads: int
    busy: float = 0.0

    @property
    def speedup(self) -> float:
        """fp32's seconds over bf16's for work ``ATTENTION_SHARE`` attention, the rest matmuls."""
        a, m = ATTENTION_SHARE, 1 - ATTENTION_SHARE
        return (m / self.matmul_fp32 + a / self.attention_fp32) / (m / self.matmul_bf16 + a / self.attention_bf16)

    def text(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return (
            f"bf16 measured at {self.speedup:.2f}x fp32 here, in GFLOP/s bf16 against fp32: matmul "
            f"{self.matmul_bf16 / 1e9:.0f} against {self.matmul_fp32 / 1e9:.0f}, attention "
            f"{self.attention_bf16 / 1e9:.0f} against {self.attention_fp32 / 1e9:.0f}, {threads}"
        )


def measure_bf16(threads: int | None = None) -> Bf16Probe:
    """Time the probe (``PROBE_*``) in fp32 and bf16 with ``threads`` CPU threads (torch's current
    number by default): a few hundred milliseconds where bf16 is native; see ``machine_bf16`` for the
    cached figures."""
    import torch
    import torch.nn.functional as F

    before = torch.get_num_threads()
    threads = threads or before
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    T, H, hd = PROBE_TOKENS, PROBE_HEADS, PROBE_HEAD_DIM
    x, w = torch.randn(T, PROBE_HIDDEN, generator=gen), torch.randn(PROBE_HIDDEN, PROBE_MLP, generator=gen)
    q, k, v = (torch.randn(1, H, T, hd, generator=gen) for _ in range(3))
    kernels = {  # (kernel, dtype) -> (its run, its FLOPs)
        (kernel, dtype): (run, flops)
        for dtype in (torch.float32, torch.bfloat16)
        for kernel, run, flops in (
            ("matmul", functools.partial(torch.mm, x.to(dtype), w.to(dtype)), 2 * T * PROBE_HIDDEN * PROBE_MLP),
            (
                "attention",
                functools.partial(
                    F.scaled_dot_product_attention, q.to(dtype), k.to(dtype), v.to(dtype), is_causal=True
                ),
                4 * H * hd * T * (T + 1) / 2,
            ),
        )
    }
    best = dict.fromkeys(kernels, math.inf)
    try:
        with torch.inference_mode():
            for repeat in range(PROBE_REPEATS + 1):  # the first a warm-up: first touch, kernel selection
                for name, (run, _) in kernels.items():
                    start = time.perf_counter()
                    run()
                    if repeat:
                        best[name] = min(best[name], time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    rate = {name: flops / best[name] for name, (_, flops) in kernels.items()}
    return Bf16Probe(
        rate["matmul", torch.float32],
        rate["matmul", torch.bfloat16],
        rate["attention", torch.float32],
        rate["attention", torch.bfloat16],
        threads,
    )


def bf16_key() -> dict[str, Any]:
    """What decides the probe: the CPU (model name, a digest of its flags, the cores this process may
    use) and torch's version."""
    import torch

    return {
        "version": PROBE_VERSION,
        "processor": cpu_model(),
        "cpu_flags_sha256": cpu_flags_digest(),
        "cores": cores(),
        "torch": torch.__version__,
    }


def bf16_path(key: dict[str, Any]) -> Path:
    """Where the probe of ``key`` is cached, beside the cost model's rates:
    ``<ropekit cache>/rates/bf16-<digest of the key>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "rates" / f"bf16-{digest}.json"


def machine_bf16(*, measure: Callable[[], Bf16Probe] | None = None) -> Bf16Probe:
    """This machine's probe (``bf16_key``), measured once and cached as JSON (``bf16_path``) by
    ``cached_measurement``: measured again for another machine, and not cached when timed while other
    processes kept the cores busy (then its ``busy`` says so). ``measure``: ``measure_bf16`` by default."""
    key = bf16_key()
    probe, busy = cached_measurement(
        bf16_path(key),
        key,
        measure or measure_bf16,
        load=lambda stored: Bf16Probe(**stored["probe"]),
        dump=lambda probe: {"probe": asdict(probe)},
        what="bf16 was timed against fp32",
    )
    return dataclasses.replace(probe, busy=round(busy, 2)) if busy else probe


def choose(probe: Bf16Probe) -> Precision:
    """bf16 where the probe ran it ``BF16_SPEEDUP`` times as fast as fp32, else fp32; the reason gives
    both figures."""
    import torch

    busy = f"; timed while others kept {probe.busy:.1f} cores busy, not cached" if probe.busy else ""
    if probe.speedup >= BF16_SPEEDUP:
        return Precision(torch.bfloat16, f"{probe.text()}{busy}")
    return Precision(torch.float32, f"{probe.text()}; under {BF16_SPEEDUP}x{busy}")


@functools.cache
def auto_cpu() -> Precision:
    """What ``"auto"`` is on this CPU, once per process (``choose(machine_bf16())``): the cache may change
    under a running process, its dtype does not."""
    return choose(machine_bf16())


def resolve_dtype(dtype: Any, device: Any = "cpu") -> Precision:
    """What ``load_model(dtype=..., device=...)`` runs in. ``None``: float32 on CPU, bfloat16 on
    CUDA. ``"auto"``: bfloat16 on CUDA, and on a CPU with native bf16 (``FAST_BF16``) where it is
    measured clearly faster than fp32 (``auto_cpu``), else float32. A ``Precision`` (resolved before)
    as it is. Otherwise a torch dtype or one of the names of ``DTYPES``."""
    import torch

    if isinstance(dtype, Precision):
        return dtype
    device = torch.device(device or "cpu")
    if dtype is None:
        return Precision(torch.float32 if device.type == "cpu" else torch.bfloat16, f"default on {device.type}")
    if dtype == "auto":
        if device.type == "cuda":
            return Precision(torch.bfloat16, "cuda")
        if device.type != "cpu":
            return Precision(torch.float32, f"no bf16 detection for {device.type}")
        if not any(flag in cpu_flags() for flag in FAST_BF16):
            return Precision(torch.float32, f"cpu lacks {' and '.join(FAST_BF16)}")
        return auto_cpu()
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ModelConfigError(f"dtype={dtype!r} is not supported; expected auto or one of {', '.join(DTYPES)}")
        dtype = getattr(torch, DTYPES[dtype])
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ModelConfigError(f"dtype={dtype} is not supported; expected float32, bfloat16 or float16")
    return Precision(dtype, "asked for")
