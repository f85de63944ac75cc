"""Files ropekit keeps for later runs: where they live, what names them, and how they are written.

Every file or folder that another process or a later run reads (results, token caches, converted
weights, tokenizers) is written through :func:`atomic_write` or :func:`atomic_folder`, so a reader
sees the old version or the whole new one, and a kill at any moment leaves no half-written file.
Append-only CSV record files (a sweep's results) are read here too, a torn last line never taken
as data, so the sweep that writes them and the report that reads them share one reader. What
ropekit says about such files without stopping (a cache rebuilt, a torn line dropped) is a
:class:`Notice`. This module imports nothing of ropekit, so every subpackage may use it (ARCHITECTURE.md, layers).

Nothing ropekit reads or writes in a results directory DIR goes through a symbolic link inside it
(issue 28: a link at ``DIR/.lock`` had the lock's truncate and write land on the file it pointed
to): :func:`no_links` refuses one at each entry point, before anything is written, and
:func:`open_here` opens a file of DIR without following one (``O_NOFOLLOW``), in case one appears
later. DIR itself may be a link: the user named it.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import hashlib
import io
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Notice(UserWarning):
    """Something ropekit tells the user and goes on (a warning category: the CLI prints it as one
    line, ``warnings.filterwarnings("ignore", category=Notice)`` silences it)."""


class LinkError(RuntimeError):
    """A symbolic link inside a results directory where ropekit would read or write (:func:`no_links`)."""


def _link_error(path: Path, folder: Path, instead: str = "") -> LinkError:
    try:
        target = os.readlink(path)
    except OSError:  # removed meanwhile, or not a link after all: say so without a target
        target = "?"
    return LinkError(
        f"{path} is a symbolic link (to {target}); ropekit reads and writes nothing through links in {folder}: "
        f"remove it{f', or {instead}' if instead else ''}"
    )


def no_links(folder: Path, *names: str, instead: str = "") -> None:
    """Refuse (:class:`LinkError`, naming it and where it points, ``instead`` the way out besides removing it)
    a symbolic link at any of ``names`` in ``folder`` (what ropekit reads or writes there), or one inside
    those of them that are folders (ropekit's own: every entry is its) that leads out of ``folder`` (the
    links submitit makes in ``DIR/slurm`` lead to its own files there). What does not exist is no link;
    ``folder`` itself may be one (the user named it)."""
    folder = Path(folder)
    home = Path(os.path.realpath(folder))

    def check(path: Path, top: bool) -> None:
        try:
            mode = path.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISLNK(mode):
            if top or not Path(os.path.realpath(path)).is_relative_to(home):
                raise _link_error(path, folder, instead)
            return  # within DIR: nothing is reached through it that is not checked or written there anyway
        if stat.S_ISDIR(mode):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # removed meanwhile (a merged shard)
                for entry in os.scandir(path):
                    check(Path(entry.path), False)

    for name in names:
        check(folder / name, True)


def open_here(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of a file in a results directory that refuses to follow a link at ``path`` (``O_NOFOLLOW``;
    :class:`LinkError`): what :func:`no_links` checked may have changed since."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as err:
        if err.errno == errno.ELOOP and os.path.islink(path):
            raise _link_error(Path(path), Path(path).parent) from None
        raise


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


TEMPORARY_AGE = 24 * 3600  # seconds after which any temporary is abandoned, whoever made it


def _temporary_prefix(path: Path) -> str:
    """Names a temporary beside ``path`` after its maker (host and pid), so a later writer can tell
    one abandoned by a killed process from one still being filled."""
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}-"


def clean_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries of :func:`atomic_write` and :func:`atomic_folder` that a killed
    process left in ``folder``: those made on this host by a process that no longer runs, and any
    older than a day. Returns what was removed."""
    mine = re.compile(rf"\.{re.escape(socket.gethostname())}-(\d+)-[\w]+\.tmp$")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                continue
            match = mine.search(entry.name)
            with contextlib.suppress(FileNotFoundError):
                old = time.time() - entry.stat(follow_symlinks=False).st_mtime > TEMPORARY_AGE
                if old or (match and not running(int(match.group(1)))):
                    shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def running(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8, newlines unchanged): a temporary file in the
    same folder, fsynced, then renamed over ``path``. On an error (a full disk) the temporary is
    removed and the error names ``path``; temporaries killed writers left beside it are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # as open() would have made it, not mkstemp's 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` to fill, renamed to ``path`` when the block ends.

    On any error, the rename's included (it fails when another process put its folder there
    first), the temporary folder is removed and the error raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(path.parent)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp"))
    try:
        tmp.chmod(0o777 & ~_umask())
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
        warnings.warn(f"{path}: {dropped} line(s) with a wrong number of fields ignored", Notice, stacklevel=3)
    return header, rows, whole


def open_records(path: Path, key: str = "cell") -> io.StringIO:
    """An append-only CSV file (a sweep's ``results.csv``) opened for reading as one row per
    ``key`` (its last) without a torn or malformed line: what readers of such a file (pandas
    included) parse instead of the file itself."""
    header, rows, _ = read_csv(path)
    if key in header:
        rows = list({r[key]: r for r in rows}.values())  # last row per key, where it first ran
    return io.StringIO(csv_text(header, rows))


def append_lines(path: Path, columns: list[str], *rows: dict[str, Any]) -> None:
    """Records as one line each, appended to the CSV file ``path`` (opened without following a link) in a
    single write, on disk before returning. A write cut short (a full disk) leaves a torn line, which the
    next open cuts off; a failure names the file."""
    data = csv_text(columns, list(rows), header=False).encode("utf-8")
    try:
        fd = open_here(path, os.O_WRONLY | os.O_APPEND)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "the line was written only in part")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
