"""Training-step speed of each method with the model contiguous (NCHW) and channels-last (NHWC).

The Trainer's ``memory_format="auto"`` picks channels-last for a named backbone on the CPU;
this measures what that choice is worth. One Trainer per layout is built from the same seed,
and the two train ``--steps`` steps in turn, ``--rounds`` times, in one process (fresh
processes differ by several per cent, more than some of the effects measured). Recorded per
method and layout: the median images per second over the rounds (augmentation included, as
in training), and the ratio channels-last / contiguous.

Usage::

    python benchmarks/bench_memory_format.py --threads 2
    python benchmarks/bench_memory_format.py --methods pirl,npid --rounds 5 --steps 20
    python benchmarks/bench_memory_format.py --smoke                # seconds, on digits
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from benchmarks._harness import RESULTS_DIR, format_table, machine_info, write_json  # noqa: E402
from benchmarks.bench_ssl import method_list  # noqa: E402
from metricssl.ssl import METHODS, Trainer  # noqa: E402

LAYOUTS = ("contiguous", "channels_last")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--steps", type=int, default=20, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per layout")
    p.add_argument("--batch-size", type=int, default=None, help="default: the method's")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--name", default="bench_memory_format", help="results/<name>.json")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--smoke", action="store_true", help="digits, tiny model, 2 steps, 1 round")
    args = p.parse_args(argv)
    if args.smoke:
        args.dataset, args.steps, args.rounds = "digits", 2, 1
        args.batch_size = args.batch_size or 32
        args.name = args.name if args.name != "bench_memory_format" else "bench_memory_format_smoke"
    args.methods = method_list(p, args.methods)
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be at least 1")
    return args


def time_method(args, method: str, runs_dir: Path) -> dict:
    """Median images/s per layout, the two trainers alternating round by round."""
    trainers = {
        layout: Trainer(
            method=method,
            dataset=args.dataset,
            data_dir=args.data_dir,
            backbone=args.backbone,
            batch_size=args.batch_size,
            epochs=args.rounds + 1,
            steps_per_epoch=args.steps,
            memory_format=layout,
            out=runs_dir / f"{method}_{layout}",
            resume=False,
            progress=False,
            val_fraction=0.0,
        )
        for layout in LAYOUTS
    }
    speeds: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    quiet = tqdm(disable=True)
    for epoch in range(args.rounds + 1):  # round 0 warms up (allocator, oneDNN kernels)
        for layout, trainer in trainers.items():
            row = trainer._train_epoch(epoch, quiet)
            if epoch:
                speeds[layout].append(row["images_per_second"])
    medians = {layout: statistics.median(v) for layout, v in speeds.items()}
    return {
        "images_per_second": medians,
        "per_round": speeds,
        "speedup": medians["channels_last"] / medians["contiguous"],
        "batch_size": trainers["contiguous"].batch_size,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as runs:
        for method in tqdm(args.methods, desc="methods"):
            results[method] = time_method(args, method, Path(runs))
    rows = [
        [
            m,
            f"{r['images_per_second']['contiguous']:.0f}",
            f"{r['images_per_second']['channels_last']:.0f}",
            f"{r['speedup']:.2f}x",
        ]
        for m, r in results.items()
    ]
    print(format_table(["method", "NCHW img/s", "NHWC img/s", "speed-up"], rows))
    payload = {
        "benchmark": "bench_memory_format",
        "machine": machine_info("cpu", args.threads),
        "arguments": vars(args),
        "results": results,
    }
    print(f"wrote {write_json(args.name, payload, args.results_dir)}")


if __name__ == "__main__":
    main()
