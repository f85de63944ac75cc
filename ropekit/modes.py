"""The perplexity task's name and modes, as data every layer reads: what each averages and which passes it shares.

One home for what a mode means outside the code that scores it (``ropekit/eval/perplexity.py``, which
has each mode's source): the sweep plans by it, the report weighs its paired differences by it. No
import of ropekit or torch, so the report and the spec parser may use it.
"""

from __future__ import annotations

PERPLEXITY = "perplexity"  # the perplexity task's name, in a spec's ``tasks`` and results.csv's ``task``
MODES = ("first", "strided", "yarn", "rolling")
# How each mode's source weighs documents in a cell's figure (``ropekit.eval.perplexity.aggregate``).
WEIGHTING = {"first": "tokens", "strided": "tokens", "yarn": "documents", "rolling": "tokens"}
# Modes whose passes serve several lengths and ropes (the first L ids of a longer pass are a prefix).
SHARED = ("first", "yarn")
# Modes that score every document whole, at every length.
WHOLE_DOCUMENTS = ("strided", "rolling")
# Predictions per block of ``Score.blocks``. Token losses are correlated over a sentence or two (tens
# of tokens), and a block bootstrap needs blocks long enough to be nearly independent; 64 still gives
# 32 blocks at 2048 tokens and 128 at 8192 (the n**(1/3) rule of thumb gives 13-50 for 2k-128k
# tokens: 64 errs on the side of independence).
BLOCK = 64
