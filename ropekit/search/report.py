"""``ropekit report DIR`` on a search directory: DIR/search-report.md and its two figures,

    figures/search-progress.png  each generation's best score and its survivors' mean (LongRoPE's
                                 population), from DIR/result.json (or, while it runs, the replay)
    figures/search-factors.png   the found factors by dimension against the factors of the presets at
                                 the same scale: ``longrope``'s (YaRN's ramp: where the search starts),
                                 ``yarn``'s and ``llama3``'s (each its frequencies' ratio to the
                                 unscaled ones), on a log axis

Read from the directory alone; no model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..cache import atomic_write, no_links
from .run import search_progress
from .store import read_record


def preset_factors(rope_type: str, scale: float, plan: dict) -> np.ndarray:
    """A preset's per-dimension factor at ``scale``: unscaled frequency / its frequency."""
    from ..rope import rope_frequencies
    from ..rope.presets import preset

    geometry = {
        "head_dim": plan["rotary_dim"],
        "rope_theta": plan["rope_theta"],
        "max_position_embeddings": plan["trained"],
    }
    rope = preset(rope_type, scale, **geometry)
    base, _ = rope_frequencies(None, **geometry)
    scaled, _ = rope_frequencies(rope, **geometry, seq_len=int(plan["length"]))
    return (base.double() / scaled.double()).numpy()


def write_search_report(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out = Path(out)
    no_links(out, "figures", "search-report.md")
    record = read_record(out)
    plan = record["plan"]
    result_path = out / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    if result is not None:
        generations = [(g["generation"], g["best"], g["population"]) for g in result["generations"]]
    else:
        generations = [(g.index, g.best, g.population) for g in search_progress(out).generations]
    figures = out / "figures"
    figures.mkdir(exist_ok=True)

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    if generations:
        index, best, population = zip(*generations, strict=True)
        ax.plot(index, best, marker="o", label="best")
        ax.plot(index, population, marker=".", linestyle="--", label="population (survivors' mean)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("generation")
    ax.set_ylabel(f"{record['spec']['objective']} at {plan['length']} tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figures / "search-progress.png", dpi=120)

    lines = [f"# Search {record['spec'].get('name', '')}: {record['spec']['model']}", ""]
    lines.append(
        f"LongRoPE's {record['spec']['algorithm']} search of the {record['spec']['factors']} factors at scale "
        f"{plan['scale']:g} (trained {plan['trained']}), scored by {record['spec']['objective']} at "
        f"{plan['length']} tokens."
    )
    lines += ["", "![progress](figures/search-progress.png)", ""]
    lines += ["| generation | best | population |", "|---:|---:|---:|"]
    lines += [f"| {i} | {b:.6g} | {p:.6g} |" for i, b, p in generations]
    if result is not None:
        scale, found = plan["scale"], np.array(result["best"]["factors"])
        fig = Figure(figsize=(6, 3.5))
        ax = fig.add_subplot()
        dims = np.arange(found.shape[0])
        ax.plot(dims, found, marker="o", label="found")
        for rope_type in ("longrope", "yarn", "llama3"):
            ax.plot(dims, preset_factors(rope_type, scale, plan), linestyle="--", label=f"{rope_type}:{scale:g}")
        ax.set_yscale("log")
        ax.set_xlabel("dimension pair (fast to slow)")
        ax.set_ylabel("rescale factor")
        ax.legend()
        fig.tight_layout()
        fig.savefig(figures / "search-factors.png", dpi=120)
        lines += [
            "",
            f"Best {result['best']['score']:.6g} (generation {result['best']['generation']}, "
            f"{result['best']['origin']}); the start (YaRN's ramp, ``longrope:{scale:g}``) scored "
            f"{result['start']['score']:.6g}; {result['scored']} candidates scored.",
            "",
            "![factors](figures/search-factors.png)",
            "",
            'The found rope: `rope.json` (`ropekit sweep --rope "found=$(cat rope.json)"`).',
        ]
    path = out / "search-report.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
