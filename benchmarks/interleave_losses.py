"""One loss, PML's and ours, alternating in one process: forward and backward apart.

Fresh processes differ by 10-20% on sub-millisecond calls (memory layout, page faults), more
than the effects looked for when profiling; alternating the two libraries call by call in one
process removes that. Same inputs and constructor arguments as ``bench_losses.py``.

Usage::

    python benchmarks/interleave_losses.py NCALoss --sizes 256,1024 --runs 300
    python benchmarks/interleave_losses.py NCALoss --sizes 256 --profile 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.bench_losses import CASES, find_class, make_inputs  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", choices=sorted(c for c, v in CASES.items() if v.kind == "loss"))
    p.add_argument("--sizes", default="256,1024", help="comma-separated N (256,1024)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--runs", type=int, default=300, help="timed calls per library (300)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", type=int, default=0, help="also print the top K torch ops")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def one_call(module, emb, labels) -> tuple[float, float]:
    """Seconds of forward and of backward for one call on a fresh leaf."""
    x = emb.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    loss = module(x, labels)
    t1 = time.perf_counter()
    loss.backward()
    return t1 - t0, time.perf_counter() - t1


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    case = CASES[args.case]
    for n in (int(s) for s in args.sizes.split(",")):
        emb, labels = make_inputs(case, n, args.dim, args.per_class, 0, "cpu")
        modules = {}
        for impl in ("pml", "ours"):
            torch.manual_seed(0)  # learnable weights start equal
            modules[impl] = find_class(impl, case)(**case.arguments(n, args.dim, args.per_class))
        times = {impl: [] for impl in modules}
        for _ in range(5):  # warm-up
            for m in modules.values():
                one_call(m, emb, labels)
        for _ in range(args.runs):
            for impl, m in modules.items():
                times[impl].append(one_call(m, emb, labels))
        for impl, ts in times.items():
            fwd = statistics.median(f for f, _ in ts) * 1e3
            bwd = statistics.median(b for _, b in ts) * 1e3
            total = statistics.median(f + b for f, b in ts) * 1e3
            print(
                f"{args.case} N={n} {impl:4s}: forward {fwd:.3f} backward {bwd:.3f} "
                f"total {total:.3f} ms (median of {args.runs})"
            )
        if args.profile:
            for impl, m in modules.items():
                with torch.profiler.profile() as prof:
                    for _ in range(10):
                        one_call(m, emb, labels)
                table = prof.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=args.profile
                )
                print(f"{impl}, 10 calls:\n{table}")


if __name__ == "__main__":
    main()
