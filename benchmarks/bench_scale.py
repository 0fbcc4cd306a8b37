"""An IVF-PQ index bigger than its memory budget: build on disk from shards, then search it.

Data: ``--n`` synthetic clustered float32 vectors (default 10M x 128, 5.1 GB) written as a
shard set (``metricssl.index.shards``) of ``--shard-rows`` rows per file; 1,000 queries from
the same distribution. Each phase runs in its own process, so its peak RSS is its own:

1. ``write``  - the shards (generated ``--shard-rows`` rows at a time);
2. ``build``  - :func:`metricssl.index.ondisk.build_ondisk` (train on a sample, add shard by
   shard within ``--memory-budget-mb``, merge the lists on disk); peak RSS, seconds;
3. ``truth``  - exact top-10 of the queries, streamed over the shards (FAISS's
   ``knn_ground_truth``, one shard batch at a time);
4. ``search`` - :func:`~metricssl.index.ondisk.open_ondisk` (lists memory-mapped) at each
   ``--nprobe``: recall@10 against exact search, queries/s, peak RSS;
5. ``embed``  - ``metricssl embed --shards`` of Fashion-MNIST's 60,000 training images under
   torchrun with 1 and 2 processes: images/s (``--skip-embed`` leaves it out).

    python benchmarks/bench_scale.py                          # 10M x 128 (5.1 GB of shards)
    python benchmarks/bench_scale.py --n 200000 --name bench_scale_200k   # quick check

Peak RSS counts the file pages a process has mapped and touched (shards read through
``mmap``, the merged lists), so it includes page cache the kernel can drop; ``--shard-rows``
bounds the shard part of it. Prints a table and writes JSON to
benchmarks/results/``--name``.json; ``--workdir`` (default: a temporary folder, removed at
the end unless ``--keep``) holds the shards and the index.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `metricssl` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import format_table, machine_info, write_json  # noqa: E402

K = 10
QUERIES = 1000
CLUSTERS = 1000
INTRINSIC_DIM = 16


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _centres(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster centres and the basis of the 16-d subspace the spread around them lies in:
    embeddings have a low intrinsic dimension; isotropic noise in 128-d has no near
    neighbours worth the name (every point is about equally far from all of its cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32) * 3
    basis = (rng.standard_normal((INTRINSIC_DIM, dim)) / np.sqrt(dim)).astype(np.float32)
    return centres, basis


def _draw(rng: np.random.Generator, model: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    centres, basis = model
    x = rng.standard_normal((n, INTRINSIC_DIM), dtype=np.float32) @ (basis * 4)
    x += centres[rng.integers(0, len(centres), n)]
    x += rng.standard_normal(x.shape, dtype=np.float32) * 0.05
    return x


def phase_write(args) -> dict:
    from metricssl.index.shards import ShardManifest, part_stem, write_shard

    folder = Path(args.workdir) / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    model = _centres(args.dim, args.seed)
    start = time.perf_counter()
    parts = []
    for chunk, first in enumerate(range(0, args.n, args.shard_rows)):
        rows = min(args.shard_rows, args.n - first)
        rng = np.random.default_rng([args.seed, chunk])
        ids = np.arange(first, first + rows, dtype=np.int64)
        parts.append(write_shard(folder, part_stem(0, chunk), _draw(rng, model, rows), ids))
    ShardManifest(folder, args.dim, "float32", args.n, None, tuple(parts)).write()
    queries = _draw(np.random.default_rng([args.seed, 10**9]), model, QUERIES)
    np.save(Path(args.workdir) / "queries.npy", queries)
    disk = sum(p.stat().st_size for p in folder.iterdir())
    return {"seconds": time.perf_counter() - start, "disk_mb": disk / 2**20, "shards": len(parts)}


def phase_build(args) -> dict:
    from metricssl.index.ondisk import build_ondisk

    imported = _peak_rss_mb()
    start = time.perf_counter()
    meta = build_ondisk(
        Path(args.workdir) / "shards",
        Path(args.workdir) / "index",
        kind="ivf_pq",
        nlist=args.nlist,
        m=args.m,
        nprobe=args.nprobe[0],
        train_size=args.train_size,
        memory_budget_mb=args.memory_budget_mb,
    )
    seconds = time.perf_counter() - start
    index_dir = Path(args.workdir) / "index"
    disk = sum(p.stat().st_size for p in index_dir.iterdir())
    return {
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_imports_mb": imported,
        "index_disk_mb": disk / 2**20,
        "factory": meta["factory"],
        "parts": meta["parts"],
        "ntotal": meta["ntotal"],
    }


def phase_truth(args) -> dict:
    from faiss.contrib.exhaustive_search import knn_ground_truth

    from metricssl.index.shards import ShardManifest

    manifest = ShardManifest.read(Path(args.workdir) / "shards")
    queries = np.load(Path(args.workdir) / "queries.npy")
    start = time.perf_counter()
    # Batches come in manifest order, and the ids are the row numbers: positions are ids.
    batches = (x for _, x in manifest.iter_batches(65536))
    _, truth = knn_ground_truth(queries, batches, K)
    np.save(Path(args.workdir) / "truth.npy", truth)
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb()}


def phase_search(args) -> dict:
    from metricssl.index.ondisk import open_ondisk

    queries = np.load(Path(args.workdir) / "queries.npy")
    truth = np.load(Path(args.workdir) / "truth.npy")
    start = time.perf_counter()
    index = open_ondisk(Path(args.workdir) / "index", progress=False)
    rows = []
    result = {"open_seconds": time.perf_counter() - start}
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        index.search(queries[:10], K)  # warm-up: the touched lists come into the page cache
        start = time.perf_counter()
        _, ids = index.search(queries, K)
        seconds = time.perf_counter() - start
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth)])
        rows.append({"nprobe": nprobe, "recall_at_10": recall, "qps": len(queries) / seconds})
    result.update(rows=rows, peak_rss_mb=_peak_rss_mb())
    return result


def phase_embed(args) -> dict:
    """``metricssl embed --shards`` of Fashion-MNIST's training images under torchrun with 1
    and with 2 processes (one thread each when 2, so the 2 cores are shared, not
    oversubscribed), from a SimCLR checkpoint trained briefly on 512 of them (the weights
    do not change the throughput). Seconds are the command's wall time, process start,
    model load and the manifest included."""
    import os

    from metricssl.data import load_fashion_mnist
    from metricssl.ssl import Trainer

    work = Path(args.workdir)
    images, labels = load_fashion_mnist(split="train", progress=False)
    trainer = Trainer(
        method="simclr",
        dataset=(images[:512], labels[:512]),
        epochs=1,
        out=str(work / "run"),
        progress=False,
        seed=args.seed,
    )
    trainer.fit()
    trainer.close()
    torchrun = Path(sys.executable).with_name("torchrun")
    rows = []
    for processes in (1, 2):
        out = work / f"embeddings-{processes}"
        command = [
            str(torchrun),
            "--nproc-per-node",
            str(processes),
            "--no-python",
            str(Path(sys.executable).with_name("metricssl")),
            "embed",
            "--checkpoint",
            str(trainer.checkpoint_path),
            "--dataset",
            "fashion-mnist",
            "--split",
            "train",
            "--shards",
            str(out),
            "--json",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // processes))}
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        seconds = time.perf_counter() - start
        count = json.loads((out / "manifest.json").read_text())["count"]
        rows.append({"processes": processes, "seconds": seconds, "images_per_s": count / seconds})
    return {"images": len(images), "rows": rows}


PHASES = {
    "write": phase_write,
    "build": phase_build,
    "truth": phase_truth,
    "search": phase_search,
    "embed": phase_embed,
}


def _run_phase(phase: str, argv: list[str]) -> dict:
    """One phase in a fresh process (its own peak RSS); its result comes back as JSON."""
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--phase", phase],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="vectors")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--shard-rows", type=int, default=250_000)
    parser.add_argument("--nlist", type=int, default=None, help="default: n // 2500, <= 4096")
    parser.add_argument("--m", type=int, default=16, help="PQ bytes per vector")
    parser.add_argument("--train-size", type=int, default=None, help="default: 100 * nlist")
    parser.add_argument("--memory-budget-mb", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the shards and the index")
    parser.add_argument("--name", default="bench_scale")
    parser.add_argument(
        "--skip-embed", action="store_true", help="leave out embed throughput, 1 vs 2 processes"
    )
    parser.add_argument("--phase", choices=sorted(PHASES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nlist is None:
        args.nlist = max(16, min(4096, args.n // 2500))
    if args.phase is not None:  # a child process: one phase, one JSON line
        print(json.dumps(PHASES[args.phase](args)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    child_argv = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--keep"]
    child_argv += ["--workdir", str(workdir), "--nlist", str(args.nlist)]
    try:
        results = {}
        phases = ("write", "build", "truth", "search") + (() if args.skip_embed else ("embed",))
        for phase in phases:
            print(f"{phase} ...", file=sys.stderr, flush=True)
            results[phase] = _run_phase(phase, child_argv)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    build = results["build"]
    print(
        f"{args.n:,} x {args.dim} float32 ({results['write']['disk_mb']:.0f} MB of shards, "
        f"{results['write']['shards']} files); {build['factory']}, budget "
        f"{args.memory_budget_mb} MB: build {build['seconds']:.0f} s, peak RSS "
        f"{build['peak_rss_mb']:.0f} MB, index on disk {build['index_disk_mb']:.0f} MB"
    )
    rows = [
        [r["nprobe"], f"{r['recall_at_10']:.4f}", f"{r['qps']:.0f}"]
        for r in results["search"]["rows"]
    ]
    print(format_table(["nprobe", "recall@10 vs exact", "queries/s (mmapped)"], rows))
    if "embed" in results:
        rows = [
            [r["processes"], f"{r['seconds']:.1f}", f"{r['images_per_s']:.0f}"]
            for r in results["embed"]["rows"]
        ]
        print(format_table(["processes", "embed s (60,000 images)", "images/s"], rows))
    settings = {k: v for k, v in vars(args).items() if k not in ("phase", "workdir", "keep")}
    path = write_json(args.name, {"machine": machine_info(), "settings": settings, **results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
