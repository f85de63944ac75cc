"""The ``ropekit`` command (``python -m ropekit``): ropekit/cli.py's ``main``, imported here so that a
Ctrl-C while numpy, pandas and the report load is one line, as it is once the command runs."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("ropekit: interrupted", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
