"""What every test shares: ``dtype = "auto"`` decided by a stubbed bf16 probe, never by timing this
machine (ropekit/models/precision.py); tests of the probe itself stub what it measures instead."""

from __future__ import annotations

import pytest

from ropekit.models import precision

# bf16 4x fp32 on both kernels: "auto" on a CPU with native bf16 is bf16, as on this project's AMD EPYC.
FAST_BF16 = precision.Bf16Probe(matmul_fp32=2e11, matmul_bf16=8e11, attention_fp32=1e11, attention_bf16=4e11, threads=2)


@pytest.fixture(autouse=True)
def stubbed_bf16_probe(monkeypatch):
    """``machine_bf16`` returns ``FAST_BF16`` (nothing timed, nothing cached); "auto" resolves afresh in each test."""
    monkeypatch.setattr(precision, "machine_bf16", lambda **kw: FAST_BF16)
    precision.auto_cpu.cache_clear()
    yield
    precision.auto_cpu.cache_clear()
