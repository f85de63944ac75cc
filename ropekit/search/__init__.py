"""LongRoPE's evolutionary factor search (ARCHITECTURE.md)."""
