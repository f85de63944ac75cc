"""Files ropekit keeps for later runs: where they live, what names them, and how they are written.

Every file or folder that another process or a later run reads (results, token caches, converted
weights, tokenizers) is written through :func:`atomic_write` or :func:`atomic_folder`, so a reader
sees the old version or the whole new one, and a kill at any moment leaves no half-written file.
Append-only CSV record files (a sweep's results) are read here too, a torn last line never taken
as data, so the sweep that writes them and the report that reads them share one reader. This
module imports nothing of ropekit, so every subpackage may use it (DESIGN.md).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Where ropekit keeps assembled and converted files (``$ROPEKIT_CACHE``, else ~/.cache/ropekit)."""
    return Path(os.environ.get("ROPEKIT_CACHE") or Path.home() / ".cache" / "ropekit")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (or of a folder's safetensors and JSON files), memoised per (path, size, mtime)."""
    path = Path(path).resolve()
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".json")) if path.is_dir() else [path]
    return _sha256(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=32)
def _sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        with open(name, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8, newlines unchanged): a temporary file in the
    same folder, fsynced, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        try:
            tmp.write(data.encode("utf-8") if isinstance(data, str) else data)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` to fill, renamed to ``path`` when the block ends.

    On any error, the rename's included (it fails when another process put its folder there
    first), the temporary folder is removed and the error raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- append-only CSV records (a sweep's results.csv and documents.csv) ----------------------


def csv_text(columns: list[str], rows: list[dict[str, Any]], *, header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]], int]:
    """A CSV file's header, its rows, and the bytes its whole lines take. A last line without its
    newline is a write cut short: it is left out (issue 11: a torn ``nll_sum`` read as a wrong
    number). So is a line whose field count differs from the header's, with a warning."""
    data = path.read_bytes() if path.exists() else b""
    whole = data.rfind(b"\n") + 1
    header, *records = list(csv.reader(io.StringIO(data[:whole].decode("utf-8"), newline=""))) or [[]]
    rows = [dict(zip(header, r, strict=True)) for r in records if len(r) == len(header)]
    if dropped := sum(1 for r in records if r and len(r) != len(header)):
        warnings.warn(f"{path}: {dropped} line(s) with a wrong number of fields ignored", stacklevel=3)
    return header, rows, whole


def open_records(path: Path, key: str = "cell") -> io.StringIO:
    """An append-only CSV file (a sweep's ``results.csv``) opened for reading as one row per
    ``key`` (its last) without a torn or malformed line: what readers of such a file (pandas
    included) parse instead of the file itself."""
    header, rows, _ = read_csv(path)
    if key in header:
        rows = list({r[key]: r for r in rows}.values())  # last row per key, where it first ran
    return io.StringIO(csv_text(header, rows))
