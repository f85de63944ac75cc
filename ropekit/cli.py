"""The ``ropekit`` command: a thin layer over the library. Errors in what the user typed are
one line naming the problem (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .rope import RopeConfigError, RopeSpec, frequency_table, named_ropes, spec_frequencies

# The embedded default model's geometry (SmolLM2-135M: head_dim 64, rope_theta 1e5, trained at 8192).
DEFAULT_GEOMETRY = {"head_dim": 64, "rope_theta": 100_000.0, "max_position_embeddings": 8192}
INSPECT_DEFAULT = ["default", "linear", "dynamic", "yarn", "longrope", "llama3"]


def _inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="per-dimension frequencies, wavelengths and scale of rope configs",
        description=(
            "Print, for each rope config, every rotary pair's inverse frequency, wavelength in tokens, "
            "stretch against the default rope of the same theta, and turns over the trained context; "
            "optionally plot them all. ROPE is TYPE[:FACTOR] (e.g. yarn:4), a JSON rope_scaling object, or "
            "the path of a model's config.json, each optionally prefixed NAME=."
        ),
        epilog='example: ropekit inspect default yarn:4 \'pi4={"rope_type":"linear","factor":4}\' --plot rope.png',
    )
    p.add_argument("ropes", nargs="*", metavar="ROPE", help=f"rope configs (default: {' '.join(INSPECT_DEFAULT)})")
    p.add_argument(
        "--head-dim", type=int, default=DEFAULT_GEOMETRY["head_dim"], help="attention head size (%(default)s)"
    )
    p.add_argument("--rope-theta", type=float, default=DEFAULT_GEOMETRY["rope_theta"], help="base theta (%(default)g)")
    p.add_argument(
        "--max-position-embeddings",
        type=int,
        default=DEFAULT_GEOMETRY["max_position_embeddings"],
        help="the trained context length (%(default)s)",
    )
    p.add_argument(
        "--partial-rotary-factor", type=float, default=1.0, help="fraction of the head rotated (%(default)s)"
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="evaluated length, for dynamic and longrope (default: the trained length)",
    )
    p.add_argument(
        "--plot", metavar="FILE", help="save a figure of wavelength and scale per dimension (.png/.svg/.pdf)"
    )
    p.add_argument("--csv", metavar="FILE", help="write the whole table as CSV")
    p.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    geometry = {
        "head_dim": args.head_dim,
        "rope_theta": args.rope_theta,
        "max_position_embeddings": args.max_position_embeddings,
        "partial_rotary_factor": args.partial_rotary_factor,
    }
    if args.seq_len is not None and args.seq_len < 1:
        raise RopeConfigError(f"--seq-len {args.seq_len} is not allowed; expected a positive integer")
    specs: dict[str, RopeSpec] = {}
    for text in args.ropes or INSPECT_DEFAULT:
        for name, spec in named_ropes(text, **geometry).items():
            if name in specs:
                raise RopeConfigError(f"rope name {name!r} is given twice; name them apart with NAME=...")
            specs[name] = spec
    table = frequency_table(specs, args.seq_len)
    for name, spec in specs.items():
        _, scale = spec_frequencies(spec, args.seq_len)
        print(f"{name}: {spec.to_dict() if spec.rope_type != 'longrope' else _short(spec)}")
        print(
            f"  head_dim={spec.head_dim} rotary_dim={spec.rotary_dim} trained={spec.original_length} "
            f"attention_scale={scale:.6g}"
        )
        rows = table[table["rope"] == name][["dim", "inv_freq", "wavelength", "scale", "rotations"]]
        print(
            rows.to_string(
                index=False,
                formatters={
                    "inv_freq": "{:.6e}".format,
                    "wavelength": "{:,.1f}".format,
                    "scale": "{:.4f}".format,
                    "rotations": "{:,.3f}".format,
                },
            )
        )
        print()
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.plot:
        from .report import plot_frequencies

        lengths = {s.original_length for s in specs.values()}
        fig = plot_frequencies(
            table,
            original_length=lengths.pop() if len(lengths) == 1 else None,
            title=f"RoPE per dimension (seq_len={args.seq_len or 'trained'})",
        )
        fig.savefig(args.plot, dpi=130)
        print(f"wrote {args.plot}")
    return 0


def _short(spec: RopeSpec) -> str:
    d = spec.to_dict()
    for key in ("short_factor", "long_factor"):
        values = d[key]
        d[key] = f"[{values[0]:g} .. {values[-1]:g}] ({len(values)})"
    return str(d)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ropekit", description="Long-context RoPE scaling toolkit.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('ropekit').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _inspect_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (RopeConfigError, OSError) as err:
        print(f"ropekit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
