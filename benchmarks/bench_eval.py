"""metricssl's AccuracyCalculator against PML's, side by side in one run, with the floor.

Cases (labels: 10 classes unless said):

- ``fmnist_float``: Fashion-MNIST pixels as floats (x / 255, 784 dims), the 10,000 test images
  query the 60,000 training images, ``k="max_bin_count"``, metrics precision_at_1,
  r_precision, mean_average_precision_at_r;
- ``embeddings_64d``: what an encoder gives: 64-d L2-normalised embeddings (10 class centres
  plus noise), 10,000 queries against 60,000 references, same k and metrics;
- ``test_vs_self``: the Fashion-MNIST test images query themselves (each query left out of its
  own ranking), ``k=None`` (full ranking), the five deterministic retrieval metrics (those
  three plus mean_average_precision and mean_reciprocal_rank);
- ``large`` (only with ``--large``): 2,000 random queries against 1,000,000 random references of
  width 128 in 100 classes, ``k=10`` — bounded memory at scale (PML runs too unless its
  estimated memory exceeds the limit).

The floor is what any exact method must at least do on the same data: the chunked matrix
product of queries and references plus an unsorted ``torch.topk`` of the same k (k + 1 when
the queries search themselves), chunks within the package's memory budget. Each case reports
our time as a multiple of it.

Without Debian's ``dataset-fashion-mnist`` (or another copy metricssl.data can find), a synthetic
stand-in of the same shape is used (10 Gaussian classes) and the JSON says so.

Each implementation runs in its own fresh process (benchmarks/_harness.py): a warm-up, then the
median of ``--repeats`` timed runs; peak memory is the process's peak RSS above a baseline
process that loaded the same data. Agreement: the largest absolute difference between the two
libraries' metric values.

Usage::

    python benchmarks/bench_eval.py                 # the three 10k-query cases, full size
    python benchmarks/bench_eval.py --quick         # 1,000 queries / 6,000 references, 1 repeat
    python benchmarks/bench_eval.py --only embeddings_64d --threads 2
    python benchmarks/bench_eval.py --large         # also the 1M-reference case
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (  # noqa: E402
    GiB,
    Runner,
    Workload,
    format_table,
    load_outputs,
    machine_info,
    memory_limit_bytes,
    write_json,
)

TARGET = "benchmarks.bench_eval:make_workload"
AT_R = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
FULL = AT_R + ("mean_average_precision", "mean_reciprocal_rank")


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    metrics: tuple[str, ...]
    k: int | str | None
    self_query: bool  # queries search themselves (reference=None)
    large: bool = False


CASES = {
    c.name: c
    for c in (
        Case(
            "fmnist_float",
            "FMNIST x/255 test -> train, k=max_bin_count",
            AT_R,
            "max_bin_count",
            False,
        ),
        Case(
            "embeddings_64d",
            "64-d unit embeddings 10k -> 60k, k=max_bin_count",
            AT_R,
            "max_bin_count",
            False,
        ),
        Case(
            "test_vs_self", "FMNIST x/255 test -> itself, k=None (full ranking)", FULL, None, True
        ),
        Case("large", "2k queries -> 1M refs x 128, k=10", FULL, 10, False, large=True),
    )
}
SIZES = {
    "fmnist_float": (10_000, 60_000),
    "embeddings_64d": (10_000, 60_000),
    "test_vs_self": (10_000, 10_000),
    "large": (2_000, 1_000_000),
}
# Noise of the synthetic embeddings: unit class centres in 64 dims plus Gaussian noise of this
# standard deviation per dimension, then normalised: P@1 ~0.9, R-precision ~0.5, MAP@R ~0.37, like a
# mid-training encoder (not a separable toy, whose top-R holds almost only one class).
EMBEDDING_NOISE = 0.25


# -- data (runs inside the measuring subprocess) ---------------------------------------------


def load_data(case: Case, n_query: int | None, n_ref: int | None, seed: int):
    """(query, query_labels, reference, reference_labels, source) as CPU tensors."""
    import torch

    if case.large:
        g = torch.Generator().manual_seed(seed)
        n_ref = n_ref or 1_000_000
        n_query = n_query or 2_000
        centres = torch.randn(100, 128, generator=g)
        ref_labels = torch.randint(0, 100, (n_ref,), generator=g)
        # Built in place, block by block: the baseline's peak memory stays near the data size,
        # so the measured peak above it is the evaluation's own.
        reference = torch.randn(n_ref, 128, generator=g).mul_(2)
        for start in range(0, n_ref, 65536):
            block = slice(start, start + 65536)
            reference[block] += centres[ref_labels[block]]
        q_labels = torch.randint(0, 100, (n_query,), generator=g)
        query = centres[q_labels] + 2 * torch.randn(n_query, 128, generator=g)
        return query, q_labels, reference, ref_labels, "synthetic: 100 Gaussian classes, d=128"
    if case.name == "embeddings_64d":
        return (*synthetic_embeddings(n_query or 10_000, n_ref or 60_000, seed), "synthetic")
    try:
        from metricssl.data.mnist import load_fashion_mnist

        test_x, test_y = load_fashion_mnist(split="test", progress=False)
        train_x, train_y = load_fashion_mnist(split="train", progress=False)
        source = "Fashion-MNIST pixels / 255 (784 dims, float32)"
    except Exception as exc:  # noqa: BLE001 - no local copy: use a stand-in of the same shape
        g = torch.Generator().manual_seed(seed)
        centres = torch.rand(10, 784, generator=g) * 255
        train_y = torch.randint(0, 10, (60_000,), generator=g)
        test_y = torch.randint(0, 10, (10_000,), generator=g)
        train_x = centres[train_y] + 60 * torch.randn(60_000, 784, generator=g)
        test_x = centres[test_y] + 60 * torch.randn(10_000, 784, generator=g)
        source = f"synthetic stand-in (Fashion-MNIST unavailable: {type(exc).__name__})"
    query = test_x.reshape(test_x.shape[0], -1).float()[:n_query].div_(255)
    q_labels = test_y[:n_query]
    reference = train_x.reshape(train_x.shape[0], -1).float()[:n_ref].div_(255)
    ref_labels = train_y[:n_ref]
    return query, q_labels, reference, ref_labels, source


def synthetic_embeddings(n_query: int, n_ref: int, seed: int, dim: int = 64, classes: int = 10):
    """Unit-norm embeddings around ``classes`` unit centres (:data:`EMBEDDING_NOISE`)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)

    def draw(n):
        labels = torch.randint(0, classes, (n,), generator=g)
        noise = EMBEDDING_NOISE * torch.randn(n, dim, generator=g)
        return F.normalize(centres[labels] + noise, dim=1), labels

    query, q_labels = draw(n_query)
    reference, ref_labels = draw(n_ref)
    return query, q_labels, reference, ref_labels


def floor_k(case: Case, ref_labels) -> int:
    """The k of the floor's top-k: what the exact search must select per query."""
    import torch

    n_ref = len(ref_labels)
    if case.k is None:
        k = n_ref - int(case.self_query)
    elif case.k == "max_bin_count":
        k = int(torch.bincount(ref_labels).max()) - int(case.self_query)
    else:
        k = case.k
    return min(k + int(case.self_query), n_ref)  # the self match is searched and dropped


def floor_workload(query, reference, k: int):
    """The chunked matrix product plus an unsorted top-k of each chunk."""
    import torch

    from metricssl.core.chunking import rows_per_chunk

    rows = rows_per_chunk(4 * reference.shape[0] + 12 * k)

    def run():
        for start in range(0, query.shape[0], rows):
            block = torch.mm(query[start : start + rows], reference.T)
            block.topk(k, dim=1, largest=True, sorted=False)

    return run


def make_workload(args: dict) -> Workload:
    import torch

    case = CASES[args["case"]]
    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    query, q_labels, reference, ref_labels, _ = load_data(
        case, args.get("n_query"), args.get("n_ref"), args["seed"]
    )
    if case.self_query:
        reference, ref_labels = query, q_labels
    if args["impl"] == "floor":
        return Workload(run=floor_workload(query, reference, floor_k(case, ref_labels)))
    if case.self_query:
        reference = ref_labels = None
    if args["impl"] == "pml":
        import logging

        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        logging.getLogger("PML").setLevel(logging.ERROR)
        calc = AccuracyCalculator(include=case.metrics, k=case.k, device=torch.device("cpu"))
    else:
        from metricssl.eval.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=case.metrics, k=case.k, progress=False)

    def run():
        return calc.get_accuracy(query, q_labels, reference, ref_labels)

    def collect(out):
        return {name: float(value) for name, value in out.items()}

    return Workload(run=run, collect=collect)


# -- reporting ---------------------------------------------------------------------------------


def estimate_pml_bytes(case: Case, n_query: int, n_ref: int, dim: int) -> float:
    """PML holds a (queries x k) neighbour table several times over (int64 indices, float
    distances, float labels, bool masks, float64 precisions, cumulative sums)."""
    k = n_ref if case.k is None else (n_ref // 10 if case.k == "max_bin_count" else case.k)
    return 60.0 * n_query * k + 4.0 * dim * (n_query + n_ref)


def compare(ours, theirs) -> dict:
    a, b = load_outputs(ours), load_outputs(theirs)
    if a is None or b is None:
        return {}
    diffs = {name: abs(float(a[name]) - float(b[name])) for name in b if name in a}
    return {
        "ours": {name: float(v) for name, v in a.items()},
        "pml": {name: float(v) for name, v in b.items()},
        "max_abs_diff": max(diffs.values()) if diffs else None,
        "same_to_4_decimals": all(round(float(a[n]), 4) == round(float(b[n]), 4) for n in diffs),
    }


HEADERS = [
    "case",
    "queries",
    "refs",
    "PML s",
    "ours s",
    "floor s",
    "speed-up",
    "ours/floor",
    "PML MB",
    "ours MB",
    "max |diff|",
]


def _seconds(m: dict) -> str:
    return f"{m['time_s']:.2f}" if m.get("status") == "ok" else m.get("status", "")


def _mb(m: dict) -> str:
    if m.get("status") == "skipped":
        return f"~{m['estimate_gb']:.0f}GB"
    ok = m.get("status") == "ok" and m.get("peak_mb") is not None
    return f"{m['peak_mb']:.0f}" if ok else ""


def table_row(row: dict) -> list:
    agree = row.get("agreement") or {}
    diff = agree.get("max_abs_diff")
    return [
        row["case"],
        row["n_query"],
        row["n_ref"],
        _seconds(row["pml"]),
        _seconds(row["ours"]),
        _seconds(row.get("floor", {})),
        f"{row['speedup']:.2f}x" if row.get("speedup") else "",
        f"{row['of_floor']:.2f}x" if row.get("of_floor") else "",
        _mb(row["pml"]),
        _mb(row["ours"]),
        "" if diff is None else f"{diff:.1e}",
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 queries / 6,000 refs, 1 repeat")
    p.add_argument("--only", action="append", default=[], help="case name (repeatable)")
    p.add_argument("--large", action="store_true", help="add the 1M-reference case")
    p.add_argument("--n-query", type=int, default=None, help="use the first N queries")
    p.add_argument("--n-ref", type=int, default=None, help="use the first N references")
    p.add_argument("--repeats", type=int, default=None, help="timed runs after warm-up (3)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per run (300)")
    p.add_argument("--mem-limit-gb", type=float, default=None, help="default: min(16, 80%% free)")
    p.add_argument("--threads", type=int, default=None, help="torch/BLAS threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results/<OUT>.json (bench_eval[_quick])")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    names = [n for item in args.only for n in item.split(",") if n]
    for n in names:
        if n not in CASES:
            sys.exit(f"--only {n!r}: choose from {sorted(CASES)}")
    cases = [CASES[n] for n in names] or [c for c in CASES.values() if not c.large or args.large]
    n_query = args.n_query or (1_000 if args.quick else None)
    n_ref = args.n_ref or (6_000 if args.quick else None)
    repeats = args.repeats or (1 if args.quick else 3)
    time_limit = args.time_limit or (60.0 if args.quick else 300.0)
    mem_limit = memory_limit_bytes(args.mem_limit_gb)
    out_name = args.out or ("bench_eval_quick" if args.quick else "bench_eval")
    machine = machine_info("cpu", args.threads)
    *_, source = load_data(CASES["fmnist_float"], 1, 1, args.seed)
    config = {
        "data": source,
        "n_query": n_query,
        "n_ref": n_ref,
        "repeats": repeats,
        "time_limit_s": time_limit,
        "mem_limit_gb": round(mem_limit / GiB, 1),
        "threads": args.threads,
        "seed": args.seed,
    }
    print(
        f"{machine['cpu_model']} ({machine['cpus_usable']} cpus), torch {machine['torch']}, "
        f"PML {machine['pytorch_metric_learning']}; {source}; median of {repeats}",
        flush=True,
    )
    rows = []
    payload = {"benchmark": "bench_eval", "machine": machine, "config": config, "results": rows}
    with Runner(
        repeats=repeats,
        time_limit_s=time_limit,
        mem_limit_bytes=int(mem_limit),
        threads=args.threads,
        verbose=args.verbose,
    ) as runner:
        for case in cases:
            rows.append(run_case(runner, case, n_query, n_ref, args, mem_limit))
            print(" | ".join(str(c) for c in table_row(rows[-1])), flush=True)
            write_json(out_name, payload)  # partial results survive an interrupted run
    path = write_json(out_name, payload)
    print()
    print(format_table(HEADERS, [table_row(r) for r in rows]))
    for row in rows:
        agree = row.get("agreement")
        if agree:
            values = ", ".join(
                f"{k} {agree['ours'][k]:.4f}/{agree['pml'][k]:.4f}" for k in agree["pml"]
            )
            print(f"{row['case']} (ours/PML): {values}")
    print(f"\nwrote {path}")


def run_case(runner: Runner, case: Case, n_query, n_ref, args, mem_limit: float) -> dict:
    sizes = SIZES[case.name]
    nq = min(n_query or sizes[0], sizes[0])
    nr = nq if case.self_query else min(n_ref or sizes[1], sizes[1])
    row = {
        "case": case.name,
        "description": case.description,
        "metrics": list(case.metrics),
        "k": case.k,
        "n_query": nq,
        "n_ref": nr,
    }
    common = {
        "case": case.name,
        "n_query": nq,
        "n_ref": None if case.self_query else nr,
        "seed": args.seed,
        "threads": args.threads,
    }
    measured = {}
    for impl in ("pml", "ours", "floor"):
        if impl == "pml":
            estimate = estimate_pml_bytes(case, nq, nr, 128 if case.large else 784)
            if estimate > mem_limit:
                row[impl] = {
                    "status": "skipped",
                    "estimate_gb": estimate / GiB,
                    "detail": f"PML would need ~{estimate / GiB:.0f} GB",
                }
                continue
        m = runner.measure(TARGET, {**common, "impl": impl}, baseline_key=(impl, case.name, nq, nr))
        row[impl] = m.to_json()
        measured[impl] = m
    ours, pml, floor = (measured.get(name) for name in ("ours", "pml", "floor"))
    if ours is not None and ours.ok and floor is not None and floor.ok and floor.time_s > 0:
        row["of_floor"] = ours.time_s / floor.time_s
    if ours is not None and pml is not None and ours.ok and pml.ok:
        row["speedup"] = pml.time_s / ours.time_s if ours.time_s > 0 else math.inf
        row["agreement"] = compare(ours, pml)
    return row


if __name__ == "__main__":
    main()
