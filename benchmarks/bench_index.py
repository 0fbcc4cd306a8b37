"""Build time, search time and recall@k of every EmbeddingIndex kind at default settings.

Data: Fashion-MNIST raw pixels (784-d, scaled to [0, 1]; the 60k training images are the
database and the 10k test images the queries) when the IDX files are found, else Gaussian
blobs of the same shape. Recall@k is measured against exact search (``kind="flat"``).

    python benchmarks/bench_index.py                      # full run
    python benchmarks/bench_index.py --smoke              # quick check on a small subset

Prints a table and writes JSON to benchmarks/results/bench_index.json (--smoke:
bench_index_smoke.json, so a smoke run never replaces real figures).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `metricssl` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import format_table, machine_info, write_json  # noqa: E402
from metricssl.data.idx import read_idx  # noqa: E402
from metricssl.index.embedding_index import EmbeddingIndex  # noqa: E402

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
KINDS = ("flat", "ivf_flat", "hnsw", "ivf_pq")


def find_idx(directory: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, h, w) as float32 rows in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def load_data(source: str, directory: str, seed: int) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, database, queries) as float32 arrays."""
    train = find_idx(directory, "train-images-idx3-ubyte")
    test = find_idx(directory, "t10k-images-idx3-ubyte")
    if source in ("auto", "fashion-mnist") and train and test:
        return "fashion-mnist", pixels(read_idx(train)), pixels(read_idx(test))
    if source == "fashion-mnist":
        raise SystemExit(f"no Fashion-MNIST IDX files in {directory}")
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((10, 784)).astype(np.float32) * 4
    labels = rng.integers(0, 10, 70_000)
    x = centers[labels] + rng.standard_normal((70_000, 784), dtype=np.float32)
    return "synthetic-blobs", x[:60_000], x[60_000:]


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist()))
    return hits / exact.size


def file_size(index: EmbeddingIndex) -> int:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "bench.index")
        index.save(path)
        return os.path.getsize(path)


def bench_kind(kind, metric, backend, database, queries, k, truth):
    index = EmbeddingIndex(database.shape[1], kind, metric, backend=backend, progress=False)
    start = time.perf_counter()
    index.train(database)
    index.add(database)
    build_s = time.perf_counter() - start
    index.search(queries[:1], k)  # warm-up: builds search copies (GPU, torch mirror) once
    start = time.perf_counter()
    _, found = index.search(queries, k)
    if torch.is_tensor(found) and found.is_cuda:
        torch.cuda.synchronize()
    search_s = time.perf_counter() - start
    if torch.is_tensor(found):
        found = found.cpu().numpy()
    return (
        index,
        found,
        {
            "kind": kind if backend == "auto" else f"{kind} ({backend})",
            "metric": metric,
            "factory": index.factory,
            "build_s": round(build_s, 4),
            "search_s": round(search_s, 4),
            "queries_per_s": round(len(queries) / search_s, 1),
            f"recall@{k}": None if truth is None else round(recall_at_k(found, truth), 4),
            "file_bytes": file_size(index),
        },
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["auto", "fashion-mnist", "synthetic"], default="auto")
    parser.add_argument("--data-dir", default=FASHION_MNIST_DIR)
    parser.add_argument("--n-database", type=int, default=None, help="rows of the database")
    parser.add_argument("--n-queries", type=int, default=None, help="number of queries")
    parser.add_argument("--metric", choices=["l2", "ip", "cosine"], default="l2")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="5000 x 200: checks it runs")
    parser.add_argument("--out", default=None, help="results/<OUT>.json (bench_index[_smoke])")
    args = parser.parse_args(argv)
    out_name = args.out or ("bench_index_smoke" if args.smoke else "bench_index")
    if args.smoke:
        args.n_database = args.n_database or 5000
        args.n_queries = args.n_queries or 200
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)

    name, database, queries = load_data(args.data, args.data_dir, args.seed)
    database, queries = database[: args.n_database], queries[: args.n_queries]
    print(f"{name}: database {database.shape}, queries {queries.shape}, k={args.k}")

    exact = EmbeddingIndex(database.shape[1], "flat", args.metric, progress=False)
    exact.add(database)
    _, truth = exact.search(queries, args.k)

    runs = [(kind, "auto") for kind in args.kinds]
    if "flat" in args.kinds:
        runs.append(("flat", "faiss"))  # FAISS's IndexFlat beside the k-NN engine ("auto")
    rows = []
    for kind, backend in runs:
        _, _, row = bench_kind(kind, args.metric, backend, database, queries, args.k, truth)
        rows.append(row)
    if torch.cuda.is_available() and "flat" in args.kinds:
        # The k-NN engine on CUDA tensors (no FAISS GPU build needed).
        _, _, row = bench_kind(
            "flat",
            args.metric,
            "auto",
            torch.from_numpy(database).cuda(),
            torch.from_numpy(queries).cuda(),
            args.k,
            truth,
        )
        row["kind"] = "flat (engine, cuda)"
        rows.append(row)

    columns = ["kind", "factory", "build_s", "search_s", "queries_per_s", f"recall@{args.k}"]
    columns.append("file_bytes")
    print(format_table(columns, [[row[c] for c in columns] for row in rows]))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = machine_info(device, args.threads)
    machine.update(faiss=faiss.__version__, faiss_threads=faiss.omp_get_max_threads())
    payload = {
        "benchmark": "bench_index",
        "dataset": name,
        "n_database": int(database.shape[0]),
        "n_queries": int(queries.shape[0]),
        "dim": int(database.shape[1]),
        "k": args.k,
        "metric": args.metric,
        "machine": machine,
        "results": rows,
    }
    print(f"wrote {write_json(out_name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
