"""The names ropekit writes into its files, and which it refuses.

A name given by the user (a rope, a spec, a document, a model) becomes a field of the CSV records,
a heading of the report and, for some, a folder or file name. A record must be one line, so that a
write cut short by a kill is a torn last line that the store cuts off (ropekit/sweep/store.py); a
folder name must stay one folder below where it is made. Names that cannot are refused in one line
that says which characters are allowed. This module imports nothing of ropekit (ARCHITECTURE.md).
"""

from __future__ import annotations

import re
import unicodedata

ROPE_NAME = re.compile(r"[\w.:+-]+")  # letters (any script), digits and . _ : + -
ROPE_NAME_HELP = "letters, digits and . _ : + - (at most 64 characters)"
ROPE_NAME_LENGTH = 64  # so that export's MODEL_MIX_ROPE folder stays within a file name's 255 bytes
FOLDER_HELP = "a name is one folder's name: printable, no / or \\, not . or .., at most 100 characters"


def unprintable(name: str) -> str | None:
    """What makes ``name`` unfit for a record or a heading (a line break, a tab, any other control or
    format character, as named by ``unicodedata``), or None when it is printable text."""
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"):  # spaces (Zs) are text
            label = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(char)
            return label or f"the character U+{ord(char):04X} ({unicodedata.name(char, 'a control character')})"
    return None


def rope_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a rope (None when it can): it is one field of every record of its
    cells, a column of the tables, a part of export's folder name and, on the command line, the
    ``NAME`` of ``--rope NAME=ROPE``."""
    if not ROPE_NAME.fullmatch(name):
        bad = unprintable(name) or next((repr(c) for c in name if not ROPE_NAME.fullmatch(c)), "nothing")
        return f"it holds {bad}" if name else "it is empty"
    if len(name) > ROPE_NAME_LENGTH:
        return f"it has {len(name)} characters"
    return None


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one folder name made below another (None when it can)."""
    if not name:
        return "it is empty"
    if bad := unprintable(name):
        return f"it holds {bad}"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if name in (".", ".."):
        return "it is not a folder of its own"
    if len(name) > 100:
        return f"it has {len(name)} characters"
    return None
