"""``python -m ropekit.lmeval ARGS``: lm-eval's own command line (``lm_eval ARGS``) with the ``ropekit`` model
registered first; lm-eval 0.4.13 has no way to discover a model from another package.

lm-eval's CLI catches nothing: a backend's error is a traceback. So the ``ropekit`` model's model_args are
checked here (:func:`ropekit.lmeval.check_model_args`) before lm-eval starts, and a bad one is one line on
stderr, ``error: ropekit model_args: ...``, exit status 2: no traceback, before tasks or weights load. The
same :class:`ropekit.lmeval.ModelArgsError` raised later, while the model loads, is printed the same way;
lm-eval's own errors are left as lm-eval shows them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lm_eval._cli.harness import HarnessCLI
from lm_eval.config.evaluate_config import EvaluatorConfig
from lm_eval.utils import setup_logging, simple_parse_args_string

from ropekit.lmeval import ModelArgsError, check_model_args  # also registers the "ropekit" model


def ropekit_model_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The model_args lm-eval's ``run`` gives the ``ropekit`` model (the command line's over ``--config``'s
    YAML, as ``EvaluatorConfig.from_cli`` takes them); ``None`` for another command or model."""
    config: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            config = EvaluatorConfig.load_yaml_config(args.config)
        except (OSError, TypeError, ValueError):
            return None  # lm-eval reports its own config file
    if getattr(args, "command", None) != "run" or (getattr(args, "model", None) or config.get("model")) != "ropekit":
        return None
    model_args = getattr(args, "model_args", None) or config.get("model_args") or {}
    return simple_parse_args_string(model_args) if isinstance(model_args, str) else dict(model_args)


def main() -> int:
    """lm-eval's ``cli_evaluate`` (lm_eval/__main__.py), the ropekit model's model_args checked first."""
    setup_logging()
    parser = HarnessCLI()
    args = parser.parse_args()
    try:
        if (model_args := ropekit_model_args(args)) is not None:
            check_model_args(model_args)
        parser.execute(args)
    except ModelArgsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
