"""The dtype a model runs in: the names users type, and ``"auto"``, bf16 where the hardware is fast.

In bf16 the matmuls and attention run in bf16; norms, softmax statistics (inside the SDPA kernel),
the rope tables and the cross-entropy stay float32 (ropekit/models/decoder.py, ropekit/eval/nll.py).
A CPU multiplies bf16 fast only with native bf16 dot products: on the 2-core x86 machines of this
project, with ``avx512_bf16``, a 2048^3 matmul ran ~4x faster than fp32; CPUs without it emulate
bf16 and ran ~200x slower. So ``"auto"`` reads the CPU's flags, never assumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ModelConfigError

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class Precision:
    """The dtype a model runs in and why it was chosen (recorded in a sweep's meta.json)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cpu_flags() -> frozenset[str]:
    """The first processor's flags in ``CPUINFO`` (none where there is no such file)."""
    return frozenset(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The first processor's model name in ``CPUINFO`` (empty where there is no such file or line)."""
    return _cpuinfo("model name")


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


def resolve_dtype(dtype: Any, device: Any = "cpu") -> Precision:
    """What ``load_model(dtype=..., device=...)`` runs in. ``None``: float32 on CPU, bfloat16 on
    CUDA. ``"auto"``: bfloat16 on CUDA and on a CPU whose flags show fast bf16, else float32.
    Otherwise a torch dtype or one of the names of ``DTYPES``."""
    import torch

    device = torch.device(device or "cpu")
    if dtype is None:
        return Precision(torch.float32 if device.type == "cpu" else torch.bfloat16, f"default on {device.type}")
    if dtype == "auto":
        if device.type == "cuda":
            return Precision(torch.bfloat16, "cuda")
        if device.type != "cpu":
            return Precision(torch.float32, f"no bf16 detection for {device.type}")
        if fast := [flag for flag in FAST_BF16 if flag in cpu_flags()]:
            return Precision(torch.bfloat16, f"cpu has {fast[0]}")
        return Precision(torch.float32, f"cpu lacks {' and '.join(FAST_BF16)}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ModelConfigError(f"dtype={dtype!r} is not supported; expected auto or one of {', '.join(DTYPES)}")
        dtype = getattr(torch, DTYPES[dtype])
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ModelConfigError(f"dtype={dtype} is not supported; expected float32, bfloat16 or float16")
    return Precision(dtype, "asked for")
