"""Training from a folder of image files against the same images in memory (issue 19, item 6).

Fashion-MNIST is written out once as PNG files in class folders, ``TREE/train/<label>/<index>.png``
and ``TREE/test/<label>/<index>.png`` (70,000 files under ``--cache-dir``; later runs reuse
them). Then the same recipe trains twice: SimCLR with the Trainer's defaults for ``simclr``
(optimizer, learning rate, batch size, warm-up, augmentation, model; ``--epochs`` and the seed
the same for both)

- ``memory``: from the in-memory built-in dataset ``"fashion-mnist"`` (uint8 tensors, batches
  gathered by indexing, no worker);
- ``folder``: from ``TREE/train`` (``Trainer(dataset=TREE/train, mode="L", num_workers=2)``),
  the PNGs decoded in ``--num-workers`` DataLoader worker processes. ``mode="L"`` reads them
  as one grey channel, the pixels of the in-memory images (a folder's files are read as RGB
  otherwise).

Each case runs in a fresh process (``benchmarks/_harness.py``): a warm-up run (the whole
training, from scratch), then the timed run (the same again). Recorded per case:

- **images/s**: the Trainer's own training throughput of the timed run (images trained /
  seconds of its training loop; its per-epoch kNN evaluation is not counted), over
  ``--steps`` steps per epoch (default: a full epoch, 210 steps of 256);
- **peak RSS**: the training process's peak RSS above that of a process which made the same
  imports (so the in-memory images count), and for ``folder`` the largest DataLoader worker's
  peak RSS (it includes the pages a forked worker shares with the training process);
- **run s**: the timed run's wall time (building the Trainer, training, its per-epoch kNN
  evaluation);
- **held-out kNN**: the Trainer's weighted-kNN accuracy on its held-out 10% of the training
  images after the last epoch; **test P@1**: the 10,000 test images (from ``TREE/test`` for
  ``folder``) as queries against the 60,000 training images, on the backbone's features, as
  ``bench_ssl.py`` scores.

The folder's images sit in class order and the in-memory ones in Fashion-MNIST's order, so the
two runs draw different batches and hold out different images from one seed: their P@1 agree
within run-to-run noise, not to the last digit.

The issue's targets: ``folder`` images/s within 1.5x of ``memory``, peak memory bounded, the
same P@1 within noise. On a 2-core machine the workers decode on the cores the training
uses (``--num-workers 2`` is the default for that reason).

Usage::

    python benchmarks/bench_data.py                  # 70,000 PNGs, one epoch per case
    python benchmarks/bench_data.py --steps 50       # 50 steps per case instead of an epoch
    python benchmarks/bench_data.py --quick          # 6,000 + 1,000 images, 20 steps
    python benchmarks/bench_data.py --quick --in-process   # no subprocess, no warm-up run
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (  # noqa: E402
    RESULTS_DIR,
    GiB,
    Runner,
    Workload,
    format_table,
    load_outputs,
    machine_info,
    write_json,
)

TARGET = "benchmarks.bench_data:make_workload"
CASES = ("memory", "folder")
METHOD = "simclr"
FULL = {"train": 60_000, "test": 10_000}
QUICK = {"train": 6_000, "test": 1_000, "steps": 20}
# Written last into a finished tree: a tree without it is incomplete and written again.
COMPLETE = "complete.json"
# The target for the folder path's throughput.
TARGET_SLOWDOWN = 1.5


def default_cache_dir() -> Path:
    from metricssl.data import cache_root

    return cache_root() / "fashion-mnist-png"


# -- the PNG tree ----------------------------------------------------------------------------


def png_tree(
    cache_dir: str | os.PathLike,
    n_train: int = FULL["train"],
    n_test: int = FULL["test"],
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """The first ``n_train`` training and ``n_test`` test images of Fashion-MNIST as PNG files,
    ``TREE/<split>/<label>/<index>.png``; written once, reused while complete.

    The tree is written under a temporary name and renamed into place when every file is
    there, so an interrupted run leaves no half tree that a later run would take as whole.

    Example:
        >>> tree = png_tree("/tmp/pngs", n_train=20, n_test=10, progress=False)  # doctest: +SKIP
        >>> sorted(p.name for p in tree.iterdir())  # doctest: +SKIP
        ['complete.json', 'test', 'train']
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from metricssl.data import load_fashion_mnist

    counts = {"train": n_train, "test": n_test}
    tree = Path(cache_dir) / f"train{n_train}-test{n_test}"
    if _complete(tree, counts):
        return tree
    partial = tree.with_name(tree.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what a killed run left
    with tqdm(
        total=n_train + n_test, unit="img", desc=f"PNG files -> {tree}", disable=not progress
    ) as bar:
        for split, n in counts.items():
            images, labels = load_fashion_mnist(data_dir, split, progress=progress)
            if not 1 <= n <= len(images):
                raise ValueError(f"{split}: 1 to {len(images)} images, got {n}")
            for label in labels[:n].unique().tolist():
                (partial / split / str(label)).mkdir(parents=True)
            for index in range(n):
                path = partial / split / str(int(labels[index])) / f"{index:05d}.png"
                Image.fromarray(images[index, 0].numpy()).save(path)
                bar.update()
    (partial / COMPLETE).write_text(json.dumps(counts))
    shutil.rmtree(tree, ignore_errors=True)  # one without its completion mark
    os.replace(partial, tree)
    return tree


def _complete(tree: Path, counts: dict) -> bool:
    try:
        return json.loads((tree / COMPLETE).read_text()) == counts
    except (OSError, ValueError):
        return False


# -- one case (in a worker process of the harness, or in this process) ----------------------


def make_workload(args: dict) -> Workload:
    """One case: ``run`` trains the recipe from scratch, ``collect`` scores the result.

    ``args``: ``case`` (``memory``/``folder``), ``tree``, ``n_train``, ``n_test``, ``epochs``,
    ``steps`` (None: full epochs), ``batch_size`` (None: the method's), ``num_workers``,
    ``seed``, ``device``, ``data_dir``. Building it only imports (the harness's memory baseline).
    """
    from metricssl.data import load_fashion_mnist, resolve_data
    from metricssl.eval import evaluate
    from metricssl.ssl import Trainer, embed_dataset

    case = args["case"]
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    folder = case == "folder"
    workers = args["num_workers"] if folder else 0
    mode = "L" if folder else None  # the files' one grey channel (they are read as RGB else)
    tree = Path(args["tree"])

    def source(split: str, n: int):
        """What the Trainer (train) and the scoring (both splits) read for this case."""
        if folder:
            return str(tree / split)
        if split == "train" and n == FULL["train"]:
            return "fashion-mnist"  # the built-in dataset itself
        images, labels = load_fashion_mnist(args["data_dir"], split, progress=False)
        return images[:n], labels[:n]

    def run() -> dict:
        with tempfile.TemporaryDirectory(prefix="bench_data-") as out:
            trainer = Trainer(
                method=METHOD,
                dataset=source("train", args["n_train"]),
                data_dir=args["data_dir"],
                mode=mode,
                num_workers=workers,
                epochs=args["epochs"],
                steps_per_epoch=args["steps"],
                batch_size=args["batch_size"],
                seed=args["seed"],
                device=args["device"],
                out=out,
                resume=False,
                progress=False,
            )
            trainer.fit()
        history = trainer.history
        seconds = sum(row["epoch_seconds"] for row in history)
        images = sum(row["epoch_seconds"] * row["images_per_second"] for row in history)
        result = {
            "method": trainer.method,
            "images_per_second": images / seconds,
            "train_seconds": seconds,
            "steps": trainer.step,
            "batch_size": trainer.batch_size,
            "loss": history[-1]["loss"],
            "knn_accuracy": history[-1].get("knn_accuracy", math.nan),
            "device": trainer.device,
        }
        del trainer, history
        # The DataLoader workers exit (and are reaped) with their loaders, before collect
        # reads the workers' peak memory.
        gc.collect()
        return result

    def scored(split: str, n: int, method, device):
        data = resolve_data(
            source(split, n), args["data_dir"], split, num_workers=workers, mode=mode
        )
        return embed_dataset(method, data, 512, device), data.labels

    def collect(result: dict) -> dict:
        # Reaped DataLoader workers only: the scoring below starts new ones.
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        method, device = result["method"], result["device"]
        test, test_labels = scored("test", args["n_test"], method, device)
        train, train_labels = scored("train", args["n_train"], method, device)
        scores = evaluate(
            test, test_labels, train, train_labels, metrics=("precision_at_1",), k=1, progress=False
        )
        plain = {k: v for k, v in result.items() if k not in ("method", "device")}
        return {
            **plain,
            "workers_peak_rss_bytes": children if folder else 0,
            "test_p_at_1": scores["precision_at_1"],
        }

    return Workload(run=run, collect=collect)


def run_in_process(args: dict) -> dict:
    """The case once in this process: no warm-up run, no memory figure (smoke runs)."""
    workload = make_workload(args)
    t0 = time.perf_counter()
    out = workload.run()
    wall = time.perf_counter() - t0
    row = {"status": "ok", "run_s": wall, **workload.collect(out)}
    return {**row, "peak_mb": None, "workers_peak_rss_bytes": None}


def run_in_worker(runner: Runner, args: dict) -> dict:
    """The case in a fresh process: a warm-up run, then the timed run."""
    m = runner.measure(TARGET, args, baseline_key="imports")
    row = {"status": m.status, "detail": m.detail, "run_s": m.time_s, "peak_mb": m.peak_mb}
    outputs = load_outputs(m) if m.ok else None
    if outputs is not None:
        row.update({k: v.item() for k, v in outputs.items()})
    return row


# -- command line ----------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", type=Path, default=None, help="where the PNG trees are kept")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX files")
    p.add_argument("--train-images", type=_positive, default=None, help="default 60,000")
    p.add_argument("--test-images", type=_positive, default=None, help="default 10,000")
    p.add_argument("--epochs", type=_positive, default=1)
    p.add_argument("--steps", type=_positive, default=None, help="steps per epoch (default all)")
    p.add_argument("--batch-size", type=_positive, default=None, help="default: simclr's")
    p.add_argument("--num-workers", type=int, default=2, help="the folder's decoding workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=_positive, default=None, help="torch threads per case")
    p.add_argument("--time-limit", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--mem-limit-gb", type=float, default=8.0)
    p.add_argument("--quick", action="store_true", help="6,000 + 1,000 images, 20 steps")
    p.add_argument("--in-process", action="store_true", help="no subprocess, no warm-up run")
    p.add_argument("--name", default=None, help="results/<name>.json (default bench_data)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.num_workers < 0:
        p.error("--num-workers must be >= 0")
    if args.quick:
        args.train_images = args.train_images or QUICK["train"]
        args.test_images = args.test_images or QUICK["test"]
        args.steps = args.steps or QUICK["steps"]
    args.train_images = args.train_images or FULL["train"]
    args.test_images = args.test_images or FULL["test"]
    if args.train_images > FULL["train"] or args.test_images > FULL["test"]:
        p.error(f"Fashion-MNIST has {FULL['train']} training and {FULL['test']} test images")
    args.name = args.name or ("bench_data_quick" if args.quick else "bench_data")
    args.cache_dir = args.cache_dir or default_cache_dir()
    return args


HEADERS = [
    "case",
    "workers",
    "steps",
    "img/s",
    "memory/folder",
    "run s",
    "peak RSS MB",
    "worker peak MB",
    "held-out kNN",
    "test P@1",
]


def table_row(case: str, row: dict, reference: dict | None) -> list:
    if row["status"] != "ok":
        return [case, "", "", row["status"], row.get("detail", "")[:60]]
    ratio = ""
    if reference and reference.get("images_per_second"):
        ratio = f"{reference['images_per_second'] / row['images_per_second']:.2f}x"
    workers = row.get("workers_peak_rss_bytes") or 0
    return [
        case,
        row["num_workers"],
        row["steps"],
        f"{row['images_per_second']:.0f}",
        ratio,
        f"{row['run_s']:.1f}",
        "" if row["peak_mb"] is None else f"{row['peak_mb']:.0f}",
        f"{workers / 2**20:.0f}" if workers else "",
        f"{row['knn_accuracy']:.4f}",
        f"{row['test_p_at_1']:.4f}",
    ]


def main(argv=None) -> dict:
    args = parse_args(argv)
    tree = png_tree(
        args.cache_dir, args.train_images, args.test_images, args.data_dir, not args.no_progress
    )
    common = {
        "tree": str(tree),
        "n_train": args.train_images,
        "n_test": args.test_images,
        "epochs": args.epochs,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "data_dir": args.data_dir,
    }
    import torch

    if args.threads and args.in_process:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    results: dict[str, dict] = {}
    payload = {
        "benchmark": "bench_data",
        "machine": machine_info(device, args.threads),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "recipe": f"{METHOD}, the Trainer's defaults; epochs {args.epochs}, seed {args.seed}",
        "tree": str(tree),
        "results": results,
    }
    runner = None
    if not args.in_process:
        runner = Runner(
            repeats=1,
            time_limit_s=args.time_limit,
            mem_limit_bytes=int(args.mem_limit_gb * GiB),
            threads=args.threads,
        )
    try:
        for case in CASES:
            workers = args.num_workers if case == "folder" else 0
            case_args = {**common, "case": case, "num_workers": workers}
            print(f"[{case}] training ...", flush=True)
            row = run_in_process(case_args) if runner is None else run_in_worker(runner, case_args)
            results[case] = {"num_workers": workers, **row}
            write_json(args.name, payload, args.results_dir)  # partial results survive
    finally:
        if runner is not None:
            runner.close()
    memory, folder = results["memory"], results["folder"]
    if memory["status"] == folder["status"] == "ok":
        slowdown = memory["images_per_second"] / folder["images_per_second"]
        payload["folder_slowdown"] = slowdown
        payload["within_target"] = slowdown <= TARGET_SLOWDOWN
        payload["p_at_1_difference"] = folder["test_p_at_1"] - memory["test_p_at_1"]
    path = write_json(args.name, payload, args.results_dir)
    print(format_table(HEADERS, [table_row(c, results[c], memory) for c in CASES]))
    if "folder_slowdown" in payload:
        verdict = "within" if payload["within_target"] else "outside"
        print(
            f"images/s memory/folder = {payload['folder_slowdown']:.2f}x ({verdict} the "
            f"{TARGET_SLOWDOWN}x target); test P@1 folder - memory = "
            f"{payload['p_at_1_difference']:+.4f}"
        )
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
