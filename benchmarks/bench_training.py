"""A PML training loop, unchanged but for its imports, under PML and under metricssl.

The client pattern of PML's examples (the MNIST notebooks): an embedding network,
``losses.MultiSimilarityLoss`` on the pairs of ``miners.MultiSimilarityMiner``,
``samplers.MPerClassSampler`` (m = 4), batches of 128, Adam, one epoch over the Fashion-MNIST
training images; then the evaluation PML's examples run: ``testers.BaseTester``'s
``get_all_embeddings`` of the training and test sets, and ``AccuracyCalculator`` with
``k="max_bin_count"``, the test images querying the training images. The two libraries run
the same function (:func:`train_epoch`, :func:`embed`); only the modules it is handed differ:
``from pytorch_metric_learning import losses, miners, samplers, testers`` against
``from metricssl import losses, miners, samplers, testers``.

Three phases, each measured per library in its own fresh process (benchmarks/_harness.py): a
warm-up, then the median of ``--repeats`` timed runs, and the peak RSS above a process that
did the same imports and loaded the same data.

- ``train``: one epoch from the same seed (the network's initial weights from
  ``torch.manual_seed``, the sampler's draws from numpy's global generator, which both
  libraries' samplers use by default), so both libraries see the same batches; every run
  starts again from that seed. Agreement: the loss of every step, the first five printed.
- ``embed``: the tester's embeddings of both sets, from the network PML's run trained (both
  libraries embed with the same weights). The network dominates this phase; the libraries
  differ only in the tester's loop around it.
- ``accuracy``: ``AccuracyCalculator.get_accuracy`` (P@1, R-precision, MAP@R) on the
  embeddings PML's tester computed, the same input for both libraries.

"evaluation" in the table is embed + accuracy, what a PML user waits for after each epoch.

With 10 classes, ``MPerClassSampler`` cannot be given ``batch_size=128`` (PML requires
m x classes >= batch_size), so it is built as PML's users build it for such data, without
it: passes of 4 images from each of the 10 classes (40 indices), ``length_before_new_iter``
= the number of training images (rounded down to a multiple of 40), and the DataLoader cuts
them into batches of 128 (8 to 16 images of each class).

Usage::

    python benchmarks/bench_training.py --quick     # 2,000 training / 500 test images, 1 run
    python benchmarks/bench_training.py --threads 2 # 60,000 / 10,000, median of 3 (idle machine)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (  # noqa: E402
    GiB,
    Runner,
    Workload,
    format_table,
    load_outputs,
    machine_info,
    median_measurement,
    memory_limit_bytes,
    write_json,
)

TARGET = "benchmarks.bench_training:make_workload"
PHASES = ("train", "embed", "accuracy")
METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
IMPLS = ("pml", "ours")
# Fashion-MNIST's pixel mean and standard deviation (of x / 255), as a transform would use.
MEAN, STD = 0.2860, 0.3530
FIRST_STEPS = 5
# The order of embed()'s results and accuracy()'s arguments.
EMBEDDING_KEYS = ("train_embeddings", "train_labels", "test_embeddings", "test_labels")


def library(impl: str) -> SimpleNamespace:
    """The modules a PML user imports, from PML (``"pml"``) or from metricssl (``"ours"``)."""
    if impl == "pml":
        from pytorch_metric_learning import losses, miners, samplers, testers
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    elif impl == "ours":
        from metricssl import losses, miners, samplers, testers
        from metricssl.utils.accuracy_calculator import AccuracyCalculator
    else:
        raise ValueError(f"impl must be 'pml' or 'ours', got {impl!r}")
    return SimpleNamespace(
        losses=losses,
        miners=miners,
        samplers=samplers,
        testers=testers,
        AccuracyCalculator=AccuracyCalculator,
    )


def build_model():
    """The embedding network: metricssl's small CNN (2x2 pooled, 512 features) and a linear
    layer to 128 dimensions; the same module for both libraries."""
    from torch import nn

    from metricssl.models import SmallCNN

    return nn.Sequential(
        SmallCNN(in_channels=1, embedding_dim=128, pool_size=2), nn.Linear(512, 128)
    )


def load_data(n_train: int | None, n_test: int | None):
    """The first ``n_train`` training and ``n_test`` test images of Fashion-MNIST, normalised
    float32 (N, 1, 28, 28), as ``TensorDataset``s of (image, label)."""
    from torch.utils.data import TensorDataset

    from metricssl.data import load_fashion_mnist

    def split(name, n):
        images, labels = load_fashion_mnist(split=name, progress=False)
        images = images[:n].float().div_(255).sub_(MEAN).div_(STD)
        return TensorDataset(images, labels[:n])

    return split("train", n_train), split("test", n_test)


def train_epoch(lib, train_set, *, seed: int, batch_size: int = 128, m: int = 4, lr: float = 0.01):
    """One epoch of PML's example loop; returns (loss of every step, trained network)."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)  # both samplers draw from numpy's global generator by default
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # PML's MNIST example: lr 0.01
    loss_func = lib.losses.MultiSimilarityLoss()
    mining_func = lib.miners.MultiSimilarityMiner()
    labels = train_set.tensors[1]
    sampler = lib.samplers.MPerClassSampler(labels, m=m, length_before_new_iter=len(labels))
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    model.train()
    history = []
    for data, target in loader:
        optimizer.zero_grad()
        embeddings = model(data)
        indices_tuple = mining_func(embeddings, target)
        loss = loss_func(embeddings, target, indices_tuple)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, model


def embed(lib, model, train_set, test_set, *, workers: int):
    """PML's example evaluation, first half: the tester's embeddings of both sets."""
    tester = lib.testers.BaseTester(dataloader_num_workers=workers)
    train_embeddings, train_labels = tester.get_all_embeddings(train_set, model)
    test_embeddings, test_labels = tester.get_all_embeddings(test_set, model)
    return train_embeddings, train_labels.squeeze(1), test_embeddings, test_labels.squeeze(1)


def accuracy(lib, train_embeddings, train_labels, test_embeddings, test_labels) -> dict:
    """PML's example evaluation, second half: the test set queries the training set."""
    calculator = lib.AccuracyCalculator(include=METRICS, k="max_bin_count")
    return calculator.get_accuracy(test_embeddings, test_labels, train_embeddings, train_labels)


# -- the measured workloads (run inside the harness's subprocesses) ---------------------------


def make_workload(args: dict) -> Workload:
    """One phase of one library. ``args``: phase, impl, seed, threads, and per phase
    n_train/n_test (train, embed), save_model (train: where to write the trained weights),
    model_path (embed: the weights to embed with; absent: the seeded untrained network),
    workers (embed: the tester's DataLoader workers), embeddings_path (accuracy)."""
    import numpy as np
    import torch

    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    lib = library(args["impl"])
    phase = args["phase"]
    if phase == "accuracy":
        with np.load(args["embeddings_path"]) as f:
            inputs = [torch.from_numpy(f[name]) for name in EMBEDDING_KEYS]

        def run_accuracy():
            return accuracy(lib, *inputs)

        def collect_accuracy(out):
            return {name: float(value) for name, value in out.items()}

        return Workload(run=run_accuracy, collect=collect_accuracy)

    train_set, test_set = load_data(args["n_train"], args["n_test"])
    if phase == "train":

        def run_train():
            return train_epoch(lib, train_set, seed=args["seed"])

        def collect_train(out):
            history, model = out
            if args.get("save_model"):
                torch.save(model.state_dict(), args["save_model"])
            return {"losses": np.asarray(history, dtype=np.float64)}

        return Workload(run=run_train, collect=collect_train)

    if phase != "embed":
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    torch.manual_seed(args["seed"])
    model = build_model()
    if args.get("model_path"):
        model.load_state_dict(torch.load(args["model_path"], weights_only=True))

    def run_embed():
        return embed(lib, model, train_set, test_set, workers=args.get("workers", 2))

    def collect_embed(out):
        return {name: t.cpu().numpy() for name, t in zip(EMBEDDING_KEYS, out)}

    return Workload(run=run_embed, collect=collect_embed)


# -- agreement ---------------------------------------------------------------------------------


def compare_losses(ours: dict | None, pml: dict | None) -> dict:
    """The two loss curves: the first steps, and where they part."""
    if ours is None or pml is None:
        return {}
    a, b = ours["losses"], pml["losses"]
    steps = min(len(a), len(b))
    rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a[:steps], b[:steps])]
    first = rel[:FIRST_STEPS]
    return {
        "steps": [int(len(a)), int(len(b))],
        "first_losses_ours": [float(x) for x in a[:FIRST_STEPS]],
        "first_losses_pml": [float(x) for x in b[:FIRST_STEPS]],
        "first_max_rel_diff": max(first) if first else None,
        "epoch_max_rel_diff": max(rel) if rel else None,
        "final_loss_ours": float(a[-1]) if len(a) else None,
        "final_loss_pml": float(b[-1]) if len(b) else None,
    }


def compare_embeddings(ours: dict | None, pml: dict | None) -> dict:
    if ours is None or pml is None:
        return {}
    import numpy as np

    same_labels = all(np.array_equal(ours[k], pml[k]) for k in ("train_labels", "test_labels"))
    diff = max(
        float(np.abs(ours[k] - pml[k]).max()) for k in ("train_embeddings", "test_embeddings")
    )
    return {"max_abs_diff": diff, "same_labels": same_labels}


def compare_accuracy(ours: dict | None, pml: dict | None) -> dict:
    if ours is None or pml is None:
        return {}
    diffs = [abs(float(ours[k]) - float(pml[k])) for k in pml if k in ours]
    return {
        "ours": {k: float(v) for k, v in ours.items()},
        "pml": {k: float(v) for k, v in pml.items()},
        "max_abs_diff": max(diffs) if diffs else None,
    }


# -- the run -----------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2,000 train / 500 test images, 1 run")
    p.add_argument("--n-train", type=int, default=None, help="first N training images (60000)")
    p.add_argument("--n-test", type=int, default=None, help="first N test images (10000)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs after warm-up (3)")
    p.add_argument(
        "--rounds", type=int, default=1, help="alternating processes per library (median)"
    )
    p.add_argument("--time-limit", type=float, default=None, help="seconds per phase (900)")
    p.add_argument("--mem-limit-gb", type=float, default=None, help="default: min(16, 80%% free)")
    p.add_argument("--threads", type=int, default=None, help="torch/BLAS threads per process")
    p.add_argument("--workers", type=int, default=2, help="tester DataLoader workers (PML's 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results/<OUT>.json (bench_training[_quick])")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    for name, most in (("n_train", 60_000), ("n_test", 10_000)):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= most:
            p.error(f"--{name.replace('_', '-')} must be in [1, {most}], got {value}")
    for name in ("repeats", "rounds", "time_limit", "mem_limit_gb", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    n_train = args.n_train or (2_000 if args.quick else 60_000)
    n_test = args.n_test or (500 if args.quick else 10_000)
    repeats = args.repeats or (1 if args.quick else 3)
    time_limit = args.time_limit or (120.0 if args.quick else 900.0)
    mem_limit = memory_limit_bytes(args.mem_limit_gb)
    out_name = args.out or ("bench_training_quick" if args.quick else "bench_training")
    machine = machine_info("cpu", args.threads)
    config = {
        "data": "Fashion-MNIST, (x / 255 - 0.2860) / 0.3530",
        "n_train": n_train,
        "n_test": n_test,
        "model": "SmallCNN(1, 128, width=32, pool_size=2) + Linear(512, 128)",
        "loop": "MultiSimilarityLoss + MultiSimilarityMiner, MPerClassSampler(m=4), batch 128, "
        "Adam lr 0.01, one epoch",
        "evaluation": f"BaseTester.get_all_embeddings (workers {args.workers}); "
        f"AccuracyCalculator{METRICS}, k=max_bin_count, test -> train",
        "repeats": repeats,
        "rounds": args.rounds,
        "time_limit_s": time_limit,
        "mem_limit_gb": round(mem_limit / GiB, 1),
        "threads": args.threads,
        "seed": args.seed,
    }
    print(
        f"{machine['cpu_model']} ({machine['cpus_usable']} cpus), torch {machine['torch']}, "
        f"PML {machine['pytorch_metric_learning']}; {n_train} train / {n_test} test images; "
        f"median of {repeats}",
        flush=True,
    )
    rows: dict[str, dict] = {}
    payload = {"benchmark": "bench_training", "machine": machine, "config": config, "results": rows}
    common = {"seed": args.seed, "threads": args.threads}
    with Runner(
        repeats=repeats,
        time_limit_s=time_limit,
        mem_limit_bytes=int(mem_limit),
        threads=args.threads,
        verbose=args.verbose,
    ) as runner:
        model_path = str(runner.workdir / "model_pml.pt")
        data_args = {"n_train": n_train, "n_test": n_test}
        phase_args = {
            "train": {**data_args, "save_model": model_path},
            "embed": {**data_args, "workers": args.workers},
        }
        pml_outputs = None  # the .npz PML's last phase saved
        for phase in PHASES:
            if phase == "embed":
                trained = rows["train"]["pml"]["status"] == "ok" and Path(model_path).is_file()
                phase_args["embed"]["model_path"] = model_path if trained else None
            if phase == "accuracy":
                if pml_outputs is None:
                    rows[phase] = {"phase": phase, "detail": "no embeddings from PML's tester"}
                    continue
                phase_args["accuracy"] = {"embeddings_path": pml_outputs}
            rows[phase], pml_outputs = run_phase(
                runner, phase, {**common, **phase_args[phase]}, args.rounds
            )
            if phase == "embed":
                rows[phase]["weights"] = "PML's epoch" if trained else "untrained (no PML epoch)"
            print(" | ".join(str(c) for c in table_row(rows[phase])), flush=True)
            write_json(out_name, payload)  # partial results survive an interrupted run
        rows["evaluation"] = evaluation_row(rows)
    path = write_json(out_name, payload)
    print()
    print(format_table(HEADERS, [table_row(rows[name]) for name in rows]))
    print_agreement(rows)
    print(f"\nwrote {path}")
    return payload


def run_phase(runner: Runner, phase: str, args: dict, rounds: int = 1) -> tuple[dict, str | None]:
    """Both libraries on one phase: (row, the path of PML's saved outputs or None).

    With ``rounds`` > 1 the libraries' processes alternate (PML, ours, PML, ours, ...) and
    each library's figure is the median process: a machine that drifts during the run
    (other tenants, clock) then weighs on both alike, not on whichever runs second.
    """
    row = {"phase": phase}
    runs: dict[str, list] = {impl: [] for impl in IMPLS}
    for _ in range(rounds):
        for impl in IMPLS:
            impl_args = {**args, "phase": phase, "impl": impl}
            if impl != "pml":
                impl_args.pop("save_model", None)  # the evaluation embeds with PML's weights
            runs[impl].append(runner.measure(TARGET, impl_args, baseline_key=(impl, phase)))
    measured = {impl: median_measurement(runs[impl]) for impl in IMPLS}
    for impl in IMPLS:
        row[impl] = measured[impl].to_json()
    ours, pml = measured["ours"], measured["pml"]
    if ours.ok and pml.ok:
        row["speedup"] = pml.time_s / ours.time_s if ours.time_s > 0 else math.inf
    compare = {"train": compare_losses, "embed": compare_embeddings, "accuracy": compare_accuracy}
    row["agreement"] = compare[phase](load_outputs(ours), load_outputs(pml))
    return row, pml.outputs if pml.ok else None


def evaluation_row(rows: dict) -> dict:
    """embed + accuracy per library: a PML user's evaluation."""
    row = {"phase": "evaluation", "detail": "embed + accuracy"}
    for impl in IMPLS:
        parts = [rows.get(p, {}).get(impl, {}) for p in ("embed", "accuracy")]
        if all(part.get("status") == "ok" for part in parts):
            row[impl] = {"status": "ok", "time_s": sum(part["time_s"] for part in parts)}
        else:
            row[impl] = {"status": "incomplete"}
    if all(row[impl]["status"] == "ok" for impl in IMPLS):
        row["speedup"] = row["pml"]["time_s"] / row["ours"]["time_s"]
    return row


HEADERS = ["phase", "PML s", "ours s", "speed-up", "PML MB", "ours MB", "agreement"]


def _seconds(m: dict) -> str:
    return f"{m['time_s']:.2f}" if m.get("status") == "ok" else m.get("status", "")


def _mb(m: dict) -> str:
    return f"{m['peak_mb']:.0f}" if m.get("peak_mb") is not None else ""


def _agreement(row: dict) -> str:
    agree = row.get("agreement") or {}
    if row["phase"] == "train" and agree:
        return (
            f"loss rel. diff: first {FIRST_STEPS} {agree['first_max_rel_diff']:.1e}, "
            f"epoch {agree['epoch_max_rel_diff']:.1e}"
        )
    if agree.get("max_abs_diff") is not None:
        return f"max |diff| {agree['max_abs_diff']:.1e}"
    return row.get("detail", "")


def table_row(row: dict) -> list:
    pml, ours = row.get("pml", {}), row.get("ours", {})
    speedup = row.get("speedup")
    return [
        row["phase"],
        _seconds(pml),
        _seconds(ours),
        f"{speedup:.2f}x" if speedup else "",
        _mb(pml),
        _mb(ours),
        _agreement(row),
    ]


def print_agreement(rows: dict) -> None:
    train = rows.get("train", {}).get("agreement") or {}
    if train:
        print(
            f"first {FIRST_STEPS} losses, PML:  ", [round(x, 6) for x in train["first_losses_pml"]]
        )
        print(
            f"first {FIRST_STEPS} losses, ours: ", [round(x, 6) for x in train["first_losses_ours"]]
        )
    acc = rows.get("accuracy", {}).get("agreement") or {}
    if acc:
        values = ", ".join(f"{k} {acc['ours'][k]:.4f}/{acc['pml'][k]:.4f}" for k in acc["pml"])
        print(f"accuracy (ours/PML): {values}")


if __name__ == "__main__":
    main()
