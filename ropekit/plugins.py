"""A registry of records by name, extended by installed packages: the one home of how rope types,
trial tasks, executors and model families are registered and found (``ropekit/rope/registry.py``,
``ropekit/tasks/registry.py``, ``ropekit/sweep/executors/registry.py``, ``ropekit/models/families.py``).

ropekit's own records are registered when their modules are imported (``builtins``, once, in order);
an installed package names a record in the registry's entry-point group and is loaded the first time
a name is looked up that is not registered yet, or when all are listed. A plugin that fails to load
is reported in one line and skipped: one broken package must not stop ropekit. This module imports
nothing of ropekit but ``cache.py``, so every layer may use it.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from .cache import Notice

Record = TypeVar("Record")


class Registry(Mapping[str, Record]):
    """Records of type ``kind`` by their ``name``; ``group`` the entry-point group of plugins;
    ``builtins`` the modules (absolute names) that register ropekit's own, imported on first use;
    ``on_register`` what else registering a record does. Read as a mapping, it holds the installed
    plugins' records too."""

    def __init__(
        self,
        what: str,
        kind: type,
        group: str,
        builtins: Sequence[str] = (),
        on_register: Callable[[Record], None] | None = None,
    ):
        self.what, self.kind, self.group, self.builtins = what, kind, group, tuple(builtins)
        self.on_register = on_register
        self.records: dict[str, Record] = {}
        self._builtins_loaded = self._plugins_loaded = False

    def register(self, record: Record, *, replace: bool = False) -> Record:
        """Add ``record``; a name already registered to another record is refused unless ``replace``."""
        self._load_builtins()
        name = record.name
        if name in self.records and not replace and self.records[name] != record:
            raise ValueError(f"{self.what} {name!r} is already registered; pass replace=True to replace it")
        self.records[name] = record
        if self.on_register is not None:
            self.on_register(record)
        return record

    def get(self, name: str, default: Record | None = None) -> Record | None:  # type: ignore[override]
        """The record named ``name``, looking in installed plugins when it is not registered yet."""
        self._load_builtins()
        if name not in self.records:
            self._load_plugins()
        return self.records.get(name, default)

    def all(self) -> dict[str, Record]:
        """Every record, installed plugins included, by name (ropekit's own first)."""
        self._load_builtins()
        self._load_plugins()
        return dict(self.records)

    def __getitem__(self, name: str) -> Record:
        if (record := self.get(name)) is None:
            raise KeyError(name)
        return record

    def __iter__(self) -> Iterator[str]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self.all())

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True  # before the imports: their own register calls come back here
        for module in self.builtins:
            importlib.import_module(module)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for point in entry_points(group=self.group):
            if point.name in self.records:
                continue
            try:
                record = point.load()
                if not isinstance(record, self.kind) or record.name != point.name:
                    raise ValueError(f"expected a {self.kind.__name__} named {point.name!r}, got {record!r}")
                self.register(record)
            except Exception as err:  # a plugin's own import error is its business; say which and go on
                warnings.warn(
                    f"{self.what} plugin {point.name!r} ({point.value}) was not loaded: {err}", Notice, stacklevel=3
                )
