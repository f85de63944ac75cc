"""``python -m ropekit.lmeval ARGS``: lm-eval's own command line (``lm_eval ARGS``) with the ``ropekit`` model
registered first; lm-eval 0.4.13 has no way to discover a model from another package."""

from lm_eval.__main__ import cli_evaluate

import ropekit.lmeval  # noqa: F401  # registers the "ropekit" model

if __name__ == "__main__":
    cli_evaluate()
