"""metricssl against pytorch-metric-learning (PML): losses, miners, regularizers side by side.

Workload (the same inputs for both libraries):

- N embeddings of width D=128, float32, drawn around N/8 class centres: exactly 8 embeddings
  per class, shuffled (what an m-per-class sampler with m=8 gives), default constructor
  arguments for every class;
- ``NTXentLoss[ssl]`` is the self-supervised form: N instances with two noisy views each
  (2N embeddings), labels = instance ids, so its N=256 row is SimCLR with B=256;
  ``VICRegLoss`` gets the same two views, the second as ``ref_emb`` (no labels);
- regularizers take that N x D matrix as the weights they regularise;
- losses and regularizers: forward + backward; miners: forward (they run without gradients).

For each case and N, each library runs in its own fresh process: one warm-up, then the
median of ``--repeats`` timed runs; peak memory is the process's peak RSS above a baseline
process that did the same imports and built the same inputs. Agreement: relative error of
our loss value and gradient against PML's; for miners, whether the mined pairs/triplets are
the same set. A PML case whose estimated memory exceeds ``--mem-limit-gb`` is skipped and
reported with the estimate; one that runs out of memory or time is reported as such.

Classes that metricssl does not have yet are reported as "n/a".

Usage::

    python benchmarks/bench_losses.py                   # N in 256, 1024, 4096
    python benchmarks/bench_losses.py --quick           # N=256, 2 repeats, 20 s limit
    python benchmarks/bench_losses.py --only TripletMarginLoss --sizes 256,1024
    python benchmarks/bench_losses.py --list
"""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (  # noqa: E402
    GiB,
    NotAvailable,
    Runner,
    Workload,
    format_table,
    geometric_mean,
    load_outputs,
    machine_info,
    median_measurement,
    memory_limit_bytes,
    write_json,
)

TARGET = "benchmarks.bench_losses:make_workload"
DEFAULT_SIZES = (256, 1024, 4096)
INT32_MAX = 2**31 - 1
# Above this many mined indices only counts and a fingerprint are compared, not the sets.
MAX_SAVED_KEYS = 5_000_000


# -- PML's memory, estimated from how it computes (bytes) ----------------------------------
# ne: embeddings in the batch, m: embeddings per class, d: width.


def _pairs(ne, m):
    pos = ne * (m - 1)
    return pos, ne * (ne - m)


def est_matrix(ne, m, d):
    """A few N x N float matrices plus every pair listed as int64 indices."""
    pos, neg = _pairs(ne, m)
    return 48 * ne * ne + 32 * (pos + neg)


def est_all_triplets(ne, m, d):
    """Every triplet as int64 indices and several float per-triplet tensors; below INT32_MAX
    elements PML also builds the N x N x N uint8 cube."""
    triplets = ne * (m - 1) * (ne - m)
    cube = ne**3 if ne**3 < INT32_MAX else 0
    return 80 * triplets + cube + est_matrix(ne, m, d)


def est_angular(ne, m, d):
    """All triplets, plus the anchor/positive/negative/centre embeddings of each."""
    triplets = ne * (m - 1) * (ne - m)
    # six float (triplets x d) tensors: the three gathers, the centres, two differences
    return est_all_triplets(ne, m, d) + 24 * triplets * d


def est_pos_by_neg(bytes_per_element):
    """Losses that build a (positive pairs) x (negative pairs) matrix."""

    def estimate(ne, m, d):
        pos, neg = _pairs(ne, m)
        return bytes_per_element * pos * neg + est_matrix(ne, m, d)

    return estimate


def est_smooth_ap(ne, m, d):
    """PML's SmoothAP and PNP build a few N x N x N float tensors (and their gradients)."""
    return 16 * ne**3 + est_matrix(ne, m, d)


def est_snr(ne, m, d):
    """PML's SNRDistance builds an N x N x D difference tensor (and its gradient)."""
    return 16 * ne * ne * d + est_matrix(ne, m, d)


# -- cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    cls: str
    kind: str  # "loss", "miner" or "regularizer"
    estimate: Callable[[int, int, int], float] = est_matrix
    kwargs: dict = field(default_factory=dict)
    ssl: bool = False
    random: bool = False  # samples at random: indices are not expected to agree
    # Arguments that depend on the workload, from (N, D, per class): e.g. num_classes.
    sized_kwargs: Callable[[int, int, int], dict] | None = None
    # The batch must come grouped by class (SmoothAPLoss: PML reads classes from positions).
    grouped: bool = False
    use_labels: bool = True  # False: the loss is called without labels (ManifoldLoss)
    # The second view is passed as ref_emb, without labels (VICRegLoss); needs ssl=True.
    views_as_ref: bool = False

    def arguments(self, n: int, dim: int, m: int) -> dict:
        extra = self.sized_kwargs(n, dim, m) if self.sized_kwargs else {}
        return {**self.kwargs, **extra}


def _p2s_grad(n: int, dim: int, m: int) -> dict:
    return {"descriptors_dim": dim, "num_classes": max(1, n // m)}


def _manifold(n: int, dim: int, m: int) -> dict:
    return {"l": dim}


def _sparse_centers(n: int, dim: int, m: int) -> dict:
    return {"num_classes": max(1, n // m), "centers_per_class": m}


def classes_and_width(n: int, dim: int, m: int) -> dict:
    """Classification and proxy losses: one class per label, embedding_size = D."""
    return {"num_classes": max(1, n // m), "embedding_size": dim}


def _cases():
    loss, miner = "loss", "miner"
    cases = [
        Case("ContrastiveLoss", "ContrastiveLoss", loss),
        Case("TripletMarginLoss", "TripletMarginLoss", loss, est_all_triplets),
        Case("NTXentLoss", "NTXentLoss", loss, est_pos_by_neg(20)),
        Case("NTXentLoss[ssl]", "NTXentLoss", loss, est_pos_by_neg(20), ssl=True),
        Case("SupConLoss", "SupConLoss", loss),
        Case("MultiSimilarityLoss", "MultiSimilarityLoss", loss),
        Case("CircleLoss", "CircleLoss", loss),
        Case("LiftedStructureLoss", "LiftedStructureLoss", loss, est_pos_by_neg(28)),
        Case("GeneralizedLiftedStructureLoss", "GeneralizedLiftedStructureLoss", loss),
        Case("NPairsLoss", "NPairsLoss", loss),
        Case("MarginLoss", "MarginLoss", loss, est_all_triplets),
        Case(
            "SignalToNoiseRatioContrastiveLoss", "SignalToNoiseRatioContrastiveLoss", loss, est_snr
        ),
        Case("TupletMarginLoss", "TupletMarginLoss", loss, est_pos_by_neg(28)),
        Case("AngularLoss", "AngularLoss", loss, est_angular),
        Case("DynamicSoftMarginLoss", "DynamicSoftMarginLoss", loss, est_all_triplets),
        Case("InstanceLoss", "InstanceLoss", loss),
        Case("IntraPairVarianceLoss", "IntraPairVarianceLoss", loss),
        Case("ThresholdConsistentMarginLoss", "ThresholdConsistentMarginLoss", loss),
        Case("NCALoss", "NCALoss", loss),
        Case("FastAPLoss", "FastAPLoss", loss),
        Case("SmoothAPLoss", "SmoothAPLoss", loss, est_smooth_ap, grouped=True),
        Case("PNPLoss", "PNPLoss", loss, est_smooth_ap),
        Case("RankedListLoss", "RankedListLoss", loss, kwargs={"margin": 0.4, "Tn": 4}),
        Case("HistogramLoss", "HistogramLoss", loss, est_all_triplets),
        Case("VICRegLoss", "VICRegLoss", loss, ssl=True, views_as_ref=True),
        Case(
            "ManifoldLoss",
            "ManifoldLoss",
            loss,
            kwargs={"K": 50},
            sized_kwargs=_manifold,
            use_labels=False,
        ),
    ]
    for name in (
        "ArcFaceLoss",
        "CosFaceLoss",
        "SphereFaceLoss",
        "LargeMarginSoftmaxLoss",
        "NormalizedSoftmaxLoss",
        "SubCenterArcFaceLoss",
        "ProxyNCALoss",
        "ProxyAnchorLoss",
        "SoftTripleLoss",
    ):
        cases.append(Case(name, name, loss, sized_kwargs=classes_and_width))
    cases.append(Case("P2SGradLoss", "P2SGradLoss", loss, sized_kwargs=_p2s_grad))
    # Regularizers get the N x D matrix as the weights they regularise (N/8 classes of 8
    # centres for SparseCenters).
    for name, sized in (
        ("LpRegularizer", None),
        ("CenterInvariantRegularizer", None),
        ("RegularFaceRegularizer", None),
        ("ZeroMeanRegularizer", None),
        ("SparseCentersRegularizer", _sparse_centers),
    ):
        cases.append(Case(name, name, "regularizer", sized_kwargs=sized))
    for kind in ("all", "semihard", "hard"):
        cases.append(
            Case(
                f"TripletMarginMiner[{kind}]",
                "TripletMarginMiner",
                miner,
                est_all_triplets,
                {"type_of_triplets": kind},
            )
        )
    cases += [
        Case("BatchHardMiner", "BatchHardMiner", miner),
        Case("BatchEasyHardMiner", "BatchEasyHardMiner", miner),
        Case("MultiSimilarityMiner", "MultiSimilarityMiner", miner),
        Case("PairMarginMiner", "PairMarginMiner", miner),
        Case("AngularMiner", "AngularMiner", miner, est_angular),
        Case("HDCMiner", "HDCMiner", miner),
        Case("DistanceWeightedMiner", "DistanceWeightedMiner", miner, random=True),
        Case("UniformHistogramMiner", "UniformHistogramMiner", miner, random=True),
    ]
    return {c.name: c for c in cases}


CASES = _cases()


def embeddings_count(case: Case, n: int) -> int:
    return 2 * n if case.ssl else n


def per_class(case: Case, m: int, n: int) -> int:
    if case.grouped:  # sqrt(N) classes of sqrt(N): the layout PML's SmoothAPLoss handles
        return max(1, math.isqrt(n))
    return 2 if case.ssl else m


# -- finding the classes ---------------------------------------------------------------------


def find_class(impl: str, case: Case):
    """The class named ``case.cls`` in PML or in metricssl (None if metricssl lacks it).

    metricssl is searched in the package namespace first, then in every module of
    ``metricssl.losses`` / ``miners`` / ``regularizers`` (classes may not be exported yet).
    """
    sub = {"loss": "losses", "miner": "miners", "regularizer": "regularizers"}[case.kind]
    if impl == "pml":
        return getattr(importlib.import_module(f"pytorch_metric_learning.{sub}"), case.cls)
    pkg = importlib.import_module(f"metricssl.{sub}")
    found = getattr(pkg, case.cls, None)
    if found is not None:
        return found
    for info in pkgutil.iter_modules(pkg.__path__):
        try:
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        except Exception:  # noqa: BLE001 - a module being written may not import yet
            continue
        found = getattr(module, case.cls, None)
        if isinstance(found, type):
            return found
    return None


# -- the workload (runs inside the measuring subprocess) -------------------------------------


def make_inputs(case: Case, n: int, dim: int, m: int, seed: int, device: str):
    import torch

    g = torch.Generator().manual_seed(seed)
    if case.ssl:
        base = torch.randn(n, dim, generator=g)
        views = [base + 0.5 * torch.randn(n, dim, generator=g) for _ in range(2)]
        emb, labels = torch.cat(views), torch.arange(n).repeat(2)
    else:
        num_classes = max(1, n // m)
        if case.grouped:
            labels = torch.arange(n) // m
        else:
            labels = torch.randperm(n, generator=g) % num_classes
        centres = torch.randn(num_classes, dim, generator=g)
        emb = centres[labels] + torch.randn(n, dim, generator=g)
    return emb.to(device), labels.to(device)


def call_loss(case: Case, module, embeddings, labels):
    """A loss or regularizer called the way its case lays out the inputs."""
    if case.kind == "regularizer":
        return module(embeddings)
    if case.views_as_ref:
        half = len(embeddings) // 2
        return module(embeddings[:half], ref_emb=embeddings[half:])
    return module(embeddings, labels if case.use_labels else None)


def _fingerprint(keys):
    """An order-free hash of a multiset of int64 keys (splitmix-style mixing, summed)."""
    import numpy as np

    k = keys.astype(np.uint64)
    for shift, mult in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53)):
        k ^= k >> np.uint64(shift)
        k *= np.uint64(mult)  # wraps modulo 2**64, as intended
    k ^= k >> np.uint64(33)
    return k.sum(dtype=np.uint64)


def summarize_indices(indices, n_ref: int) -> dict:
    """Mined tuples as int64 keys (per part), their counts and fingerprints."""
    import numpy as np

    t = [x.long().cpu().numpy() for x in indices]
    parts = (
        {"triplets": (t[0] * n_ref + t[1]) * n_ref + t[2]}
        if len(t) == 3
        else {"pos": t[0] * n_ref + t[1], "neg": t[2] * n_ref + t[3]}
    )
    out = {}
    total = sum(len(k) for k in parts.values())
    for name, keys in parts.items():
        out[f"{name}_count"] = np.int64(len(keys))
        out[f"{name}_hash"] = _fingerprint(keys)
        if total <= MAX_SAVED_KEYS:
            out[f"{name}_keys"] = keys
    return out


def make_workload(args: dict) -> Workload:
    import torch

    case = CASES[args["case"]]
    cls = find_class(args["impl"], case)
    if cls is None:
        raise NotAvailable(f"metricssl has no {case.cls} yet")
    device, seed = args["device"], args["seed"]
    emb, labels = make_inputs(case, args["n"], args["dim"], args["per_class"], seed, device)
    # Seeded, so that learnable weights (proxies, class centres) start equal in both libraries.
    torch.manual_seed(seed)
    module = cls(**case.arguments(args["n"], args["dim"], args["per_class"])).to(device)

    if case.kind != "miner":  # losses and regularizers: forward + backward
        leaf = emb.clone().requires_grad_(True)

        def run():
            torch.manual_seed(seed)
            leaf.grad = None
            module.zero_grad(set_to_none=True)
            if torch.is_tensor(getattr(module, "hist_", None)):
                # PML's DynamicSoftMarginLoss keeps its histogram attached to the last graph.
                module.hist_ = module.hist_.detach()
            loss = call_loss(case, module, leaf, labels)
            loss.backward()
            return loss.detach()

        def collect(out):
            return {"value": out.double().cpu().numpy(), "grad": leaf.grad.float().cpu().numpy()}

    else:

        def run():
            torch.manual_seed(seed)
            return module(emb, labels)

        def collect(out):
            return summarize_indices(out, len(emb))

    wl = Workload(run=run, collect=collect)
    if device == "cuda":
        state = {}

        def reset_peak():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            state["base"] = torch.cuda.memory_allocated()

        wl.sync = torch.cuda.synchronize
        wl.reset_peak = reset_peak
        wl.peak_bytes = lambda: torch.cuda.max_memory_allocated() - state["base"]
    return wl


# -- comparison and reporting -----------------------------------------------------------------


def compare(case: Case, ours, theirs) -> dict:
    """Agreement of our outputs with PML's."""
    a, b = load_outputs(ours), load_outputs(theirs)
    if a is None or b is None:
        return {}
    if case.kind != "miner":
        import numpy as np

        va, vb = float(a["value"]), float(b["value"])
        scale = max(float(np.abs(b["grad"]).max()), 1e-12)
        return {
            "value_ours": va,
            "value_pml": vb,
            "value_rel_err": abs(va - vb) / max(abs(vb), 1e-12),
            "grad_rel_err": float(np.abs(a["grad"] - b["grad"]).max()) / scale,
        }
    parts = [k[: -len("_count")] for k in a if k.endswith("_count")]
    counts = {p: (int(a[f"{p}_count"]), int(b[f"{p}_count"])) for p in parts}
    same = all(counts[p][0] == counts[p][1] and a[f"{p}_hash"] == b[f"{p}_hash"] for p in parts)
    result = {"counts_ours_pml": counts, "same_indices": bool(same)}
    if not same and all(f"{p}_keys" in a and f"{p}_keys" in b for p in parts):
        import numpy as np

        inter = union = 0
        for p in parts:
            ka, kb = np.unique(a[f"{p}_keys"]), np.unique(b[f"{p}_keys"])
            inter += len(np.intersect1d(ka, kb, assume_unique=True))
            union += len(np.union1d(ka, kb))
        result["jaccard"] = inter / union if union else 1.0
    return result


def _status_text(m: dict) -> str:
    return {"n/a": "n/a", "skipped": "skip"}.get(m["status"], m["status"])


def _ms(m: dict) -> str:
    if m["status"] != "ok":
        return _status_text(m)
    t = m["time_s"] * 1000
    return f"{t:.3g}" if t < 1000 else f"{t:.0f}"


def _mb(m: dict) -> str:
    if m["status"] == "skipped":
        return f"~{m['estimate_gb']:.0f}GB"
    if m["status"] != "ok" or m["peak_mb"] is None:
        return ""
    return f"{m['peak_mb']:.0f}"


def _agreement(case: Case, row: dict) -> tuple[str, str]:
    agree = row.get("agreement") or {}
    if not agree:
        return "", ""
    if case.kind != "miner":
        return f"{agree['value_rel_err']:.1e}", f"{agree['grad_rel_err']:.1e}"
    if agree["same_indices"]:
        return "", "same (same seed)" if case.random else "same"
    if case.random:  # a sampling miner need not draw the same way as PML
        counts = agree["counts_ours_pml"].values()
        ours, pml = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return "", f"random: {ours} vs {pml} mined"
    return "", f"J={agree['jaccard']:.3f}" if "jaccard" in agree else "differ"


HEADERS = [
    "case",
    "N",
    "PML ms",
    "ours ms",
    "speed-up",
    "PML MB",
    "ours MB",
    "rel err",
    "grad err / indices",
]


def table_row(row: dict) -> list:
    case = CASES[row["case"]]
    pml, ours = row["pml"], row["ours"]
    speed = f"{row['speedup']:.1f}x" if row.get("speedup") else ""
    value_err, grad_or_idx = _agreement(case, row)
    return [
        row["case"],
        row["n"],
        _ms(pml),
        _ms(ours),
        speed,
        _mb(pml),
        _mb(ours),
        value_err,
        grad_or_idx,
    ]


def summary(rows: list[dict], sizes) -> dict:
    out = {}
    for n in sizes:
        entry = {}
        for label, kinds in (
            ("all", ("loss", "miner", "regularizer")),
            ("losses", ("loss",)),
            ("miners", ("miner",)),
            ("regularizers", ("regularizer",)),
        ):
            ups = [
                r["speedup"]
                for r in rows
                if r["n"] == n and r.get("speedup") and CASES[r["case"]].kind in kinds
            ]
            gm = geometric_mean(ups)
            entry[label] = {"geomean_speedup": gm, "cases": len(ups)}
        out[str(n)] = entry
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help="comma-separated N (default 256,1024,4096)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="case name or part of one (repeatable, or comma-separated)",
    )
    p.add_argument("--quick", action="store_true", help="N=256, 2 repeats, 20 s time limit")
    p.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up (5)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="fresh processes per library, alternating; the median process is reported (1)",
    )
    p.add_argument("--time-limit", type=float, default=None, help="seconds per run (60)")
    p.add_argument(
        "--mem-limit-gb",
        type=float,
        default=None,
        help="skip/stop a run needing more (default: min(16, 80%% of available memory))",
    )
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--per-class", type=int, default=8, help="embeddings per class")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results/<OUT>.json (bench_losses[_quick])")
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="do not run PML for cases metricssl does not implement yet",
    )
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def select_cases(only: list[str]) -> list[Case]:
    tokens = [t.strip() for item in only for t in item.split(",") if t.strip()]
    if not tokens:
        return list(CASES.values())
    chosen = []
    for token in tokens:
        exact = [c for c in CASES.values() if c.name.lower() == token.lower()]
        matches = exact or [c for c in CASES.values() if token.lower() in c.name.lower()]
        if not matches:
            sys.exit(f"--only {token!r} matches no case; see --list")
        chosen += [c for c in matches if c not in chosen]
    return chosen


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for c in CASES.values():
            print(f"{c.name:36s} {c.kind}")
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or ([256] if args.quick else list(DEFAULT_SIZES))
    repeats = args.repeats or (2 if args.quick else 5)
    time_limit = args.time_limit or (20.0 if args.quick else 60.0)
    mem_limit = memory_limit_bytes(args.mem_limit_gb)
    out_name = args.out or ("bench_losses_quick" if args.quick else "bench_losses")
    cases = select_cases(args.only)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: CUDA is not available")

    machine = machine_info(args.device, args.threads)
    config = {
        "sizes": sizes,
        "dim": args.dim,
        "per_class": args.per_class,
        "layout": f"N embeddings around N/{args.per_class} class centres, exactly "
        f"{args.per_class} per class, shuffled; NTXentLoss[ssl]: N instances x 2 views",
        "dtype": "float32",
        "repeats": repeats,
        "rounds": args.rounds,
        "time_limit_s": time_limit,
        "mem_limit_gb": round(mem_limit / GiB, 1),
        "device": args.device,
        "seed": args.seed,
        "losses": "forward + backward (regularizers too)",
        "miners": "forward",
    }
    print(
        f"{machine['cpu_model']} ({machine['cpus_usable']} cpus), torch {machine['torch']}, "
        f"PML {machine['pytorch_metric_learning']}, device {args.device}; "
        f"D={args.dim}, {args.per_class}/class, median of {repeats} x {args.rounds} process(es), "
        f"limits {time_limit:.0f} s / {mem_limit / GiB:.1f} GB",
        flush=True,
    )
    print(" | ".join(HEADERS), flush=True)

    rows = []
    payload = {"benchmark": "bench_losses", "machine": machine, "config": config, "results": rows}
    with Runner(
        repeats=repeats,
        time_limit_s=time_limit,
        mem_limit_bytes=int(mem_limit),
        threads=args.threads,
        verbose=args.verbose,
    ) as runner:
        for case in cases:
            for n in sizes:
                rows.append(run_case(runner, case, n, args, mem_limit))
                print(" | ".join(str(c) for c in table_row(rows[-1])), flush=True)
                write_json(out_name, payload)  # partial results survive an interrupted run
    payload["summary"] = summary(rows, sizes)
    path = write_json(out_name, payload)

    print()
    print(format_table(HEADERS, [table_row(r) for r in rows]))
    print()
    for n in sizes:
        parts = []
        for label, s in payload["summary"][str(n)].items():
            if s["geomean_speedup"]:
                parts.append(f"{label} {s['geomean_speedup']:.1f}x ({s['cases']} cases)")
        marker = "  <--" if n == 1024 else ""
        print(f"geometric-mean speed-up at N={n}: " + (", ".join(parts) or "n/a") + marker)
    print(f"\nwrote {path}")


def run_case(runner: Runner, case: Case, n: int, args, mem_limit: float) -> dict:
    ne = embeddings_count(case, n)
    m = per_class(case, args.per_class, n)
    row = {
        "case": case.name,
        "class": case.cls,
        "kind": case.kind,
        "n": n,
        "embeddings": ne,
        "kwargs": case.kwargs,
    }
    common = {
        "case": case.name,
        "n": n,
        "dim": args.dim,
        "per_class": m,
        "device": args.device,
        "seed": args.seed,
    }
    missing = find_class("ours", case) is None
    runnable = []
    for impl in ("pml", "ours"):
        if missing and (impl == "ours" or args.skip_missing):
            row[impl] = {"status": "n/a", "detail": f"metricssl has no {case.cls} yet"}
            continue
        if impl == "pml":
            estimate = case.estimate(ne, m, args.dim)
            if estimate > mem_limit:
                row[impl] = {
                    "status": "skipped",
                    "estimate_gb": estimate / GiB,
                    "detail": f"PML would need ~{estimate / GiB:.0f} GB "
                    f"(limit {mem_limit / GiB:.1f} GB)",
                }
                continue
        runnable.append(impl)
    rounds = {impl: [] for impl in runnable}
    for r in range(args.rounds):
        # Alternate which library goes first, so neither always meets a warmer machine.
        for impl in runnable if r % 2 == 0 else runnable[::-1]:
            key = (impl, ne, case.ssl, args.device)
            rounds[impl].append(runner.measure(TARGET, {**common, "impl": impl}, baseline_key=key))
    for impl, measurements in rounds.items():
        measurement = median_measurement(measurements)
        row[impl] = measurement.to_json()
        row[f"_{impl}"] = measurement
    ours, pml = row.pop("_ours", None), row.pop("_pml", None)
    if ours is not None and pml is not None and ours.ok and pml.ok:
        row["speedup"] = pml.time_s / ours.time_s if ours.time_s > 0 else math.inf
        row["agreement"] = compare(case, ours, pml)
    return row


if __name__ == "__main__":
    main()
