"""An installed distribution for plugin tests: a module and its dist-info naming one entry point, in a
folder that a subprocess puts on its PYTHONPATH (as pip would install it into site-packages)."""

from __future__ import annotations

from pathlib import Path


def install_plugin(site: Path, module: str, source: str, group: str, name: str, record: str = "RECORD") -> None:
    """``site/module.py`` holding ``source``, and ``module``'s dist-info naming ``module:record`` as the
    entry point ``name`` of ``group``."""
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}:{record}\n")
