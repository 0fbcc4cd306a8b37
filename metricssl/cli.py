"""The ``metricssl`` command.

    metricssl demo [--dataset digits|fashion-mnist] [--out DIR] [--epochs N] [--json]

Bad arguments exit with status 2 and a one-line reason; ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

DEMO_EXAMPLES = """examples:
  metricssl demo                            # sklearn digits, about a minute on a CPU
  metricssl demo --dataset fashion-mnist    # the same path on Fashion-MNIST
  metricssl demo --no-plots --json          # numbers only, as one JSON object
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metricssl",
        description="Metric learning and self-supervised learning on PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train, index, search, evaluate and plot on a small data set",
        description="Train an embedding with a PML-style loss and miner, build a FAISS index, "
        "show queries with their neighbours, evaluate against raw pixels, and write a UMAP "
        "picture and a retrieval grid.",
        epilog=DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    demo.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--out", default="metricssl-demo", help="folder for the pictures")
    demo.add_argument("--epochs", type=positive_int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-plots", action="store_true", help="skip the UMAP and grid pictures")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_demo_command(args) -> int:
    from .demo import run_demo

    result = run_demo(
        dataset=args.dataset,
        out=args.out,
        epochs=args.epochs,
        seed=args.seed,
        data_dir=args.data_dir,
        plots=not args.no_plots,
        progress=not args.json,
        echo=(lambda *_: None) if args.json else print,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"demo": run_demo_command}[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"metricssl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
