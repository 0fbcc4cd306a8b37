"""Self-supervised (and supervised) training on Fashion-MNIST within a time budget.

For each method: a short calibration run measures the time per training step and per
evaluation pass, which fixes the number of epochs that fit in ``--minutes`` (the cosine
schedule needs the length up front); then the method trains with its default recipe and
backbone. After every ``--curve-every`` epochs the encoder embeds the test and training
images (clean, un-augmented) and precision@1 of test queries against the training set is
recorded (:func:`metricssl.eval.evaluate`); after the last epoch also R-precision, MAP@R,
weighted-kNN accuracy and the linear-evaluation accuracy
(:func:`~metricssl.eval.linear.linear_evaluation`: a classifier fitted on the training
features, its penalty chosen on a held-out part of them, scored on the test features).
Recipes are never chosen on these test numbers: the trainer's own per-epoch kNN score uses a
validation split carved from the training set.

Recorded per method: epochs, training minutes (the trainer's own per-epoch kNN/collapse
monitoring and online linear probe included, the benchmark's test-set curve excluded), P@1
per epoch, final metrics, the online probe's last held-out accuracy, images/s, the share of
step time spent in augmentation, and the trainer's configuration.
Raw pixels give the baseline (the issue's 0.850); ``--untrained`` scores each method's
encoder as initialised instead of training it (what the training adds is the difference).

Usage::

    python benchmarks/bench_ssl.py                           # every method, 20 min each
    python benchmarks/bench_ssl.py --methods simclr,byol --minutes 5 --threads 2
    python benchmarks/bench_ssl.py --smoke                   # seconds: tiny subsets, 2 epochs
    python benchmarks/bench_ssl.py --no-linear               # no linear evaluation, no probe
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._harness import format_table, machine_info, write_json  # noqa: E402
from metricssl.eval import evaluate  # noqa: E402
from metricssl.eval.linear import linear_evaluation  # noqa: E402
from metricssl.ssl import METHODS, Trainer, embed_dataset, load_dataset  # noqa: E402
from metricssl.ssl.trainer import MEMORY_FORMATS  # noqa: E402

FINAL_METRICS = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "knn_accuracy_weighted",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per method")
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--epochs", type=int, default=None, help="fixed epochs (skips calibration)")
    p.add_argument(
        "--backbone", default=None, help="default: the method's (small_cnn; mae: vit_tiny)"
    )
    p.add_argument(
        "--backbone-kwargs",
        type=json.loads,
        default=None,
        help='JSON arguments of the named backbone, e.g. \'{"depth": 6, "patch_size": 7}\'',
    )
    p.add_argument(
        "--hparams",
        type=json.loads,
        default=None,
        help="JSON hyper-parameters of the method, e.g. '{\"weighted\": true}' for DCLW",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: the method's")
    p.add_argument("--lr", type=float, default=None, help="default: the method's")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--memory-format",
        choices=MEMORY_FORMATS,
        default="auto",
        help="the trainer's layout (auto: channels-last on CPU)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curve-every", type=int, default=1, help="test P@1 every N epochs")
    p.add_argument("--train-subset", type=int, default=None, help="first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="first N test images")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap (smoke runs)")
    p.add_argument("--runs-dir", default="runs/bench_ssl", help="checkpoints and logs")
    p.add_argument("--name", default="bench_ssl", help="results/<name>.json")
    p.add_argument("--smoke", action="store_true", help="tiny subsets, 2 epochs, seconds")
    p.add_argument(
        "--no-linear",
        dest="linear",
        action="store_false",
        help="skip the offline linear evaluation and the trainer's online linear probe",
    )
    p.add_argument(
        "--untrained",
        action="store_true",
        help="no training: score each method's encoder as initialised (the floor to compare with)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.train_subset = args.train_subset or 1500
        args.test_subset = args.test_subset or 300
        args.epochs = args.epochs or 2
        args.steps_per_epoch = args.steps_per_epoch or 3
        args.name = args.name if args.name != "bench_ssl" else "bench_ssl_smoke"
    args.methods = method_list(p, args.methods)
    return args


def method_list(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """``--methods a,b`` as a list; an unknown name is a usage error."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    return methods


def load(args):
    train_x, train_y = load_dataset(args.dataset, "train", args.data_dir)
    test_x, test_y = load_dataset(args.dataset, "test", args.data_dir)
    if args.train_subset:
        train_x, train_y = train_x[: args.train_subset], train_y[: args.train_subset]
    if args.test_subset:
        test_x, test_y = test_x[: args.test_subset], test_y[: args.test_subset]
    return train_x, train_y, test_x, test_y


def retrieval(test_emb, test_y, train_emb, train_y, metrics) -> dict:
    k = "max_bin_count" if set(metrics) - {"precision_at_1", "knn_accuracy_weighted"} else 1
    return evaluate(test_emb, test_y, train_emb, train_y, metrics=metrics, k=k, progress=False)


def final_scores(args, test_emb, test_y, train_emb, train_y) -> dict:
    """The final metrics, and (unless --no-linear) the linear-evaluation accuracy with the
    penalty it chose."""
    scores = retrieval(test_emb, test_y, train_emb, train_y, FINAL_METRICS)
    if args.linear:
        linear = linear_evaluation(train_emb, train_y, test_emb, test_y)
        scores.update(linear_accuracy=linear.accuracy, linear_weight_decay=linear.weight_decay)
    return scores


def trainer_args(args, method, train, out, epochs, steps_per_epoch) -> dict:
    return dict(
        method=method,
        dataset=train,
        backbone=args.backbone,
        backbone_kwargs=args.backbone_kwargs,
        hparams=args.hparams,
        batch_size=args.batch_size,
        lr=args.lr,
        epochs=epochs,
        device=args.device,
        memory_format=args.memory_format,
        seed=args.seed,
        out=out,
        resume=False,
        steps_per_epoch=steps_per_epoch,
        linear_probe=args.linear,
    )


def calibrate(args, method, train) -> int:
    """Epochs that fit in the budget: time a few steps and one evaluation pass.

    Two short epochs run and only the second is timed: the first builds the convolution
    kernels and fills the allocator, and holds one-off work such as NPID's and PIRL's
    bank initialisation, which made the estimate up to 9% too slow (PIRL: 25 epochs
    planned, 18.3 of its 20 minutes used).
    """
    probe_steps = 8
    out = Path(args.runs_dir) / f"{method}_calibration"
    kw = trainer_args(args, method, train, out, 2, probe_steps)
    trainer = Trainer(**kw, progress=False)
    full_steps = trainer.full_steps_per_epoch
    trainer.fit(epochs=1)
    t0 = time.perf_counter()
    row = trainer.fit()
    probe = time.perf_counter() - t0
    step_seconds = row["epoch_seconds"] / probe_steps
    eval_seconds = max(0.0, probe - row["epoch_seconds"])
    per_epoch = full_steps * step_seconds + eval_seconds
    epochs = int(args.minutes * 60 // per_epoch)
    print(
        f"[{method}] calibration: {step_seconds:.3f} s/step x {full_steps} steps + "
        f"{eval_seconds:.1f} s evaluation = {per_epoch / 60:.2f} min/epoch -> {epochs} epochs"
    )
    return max(1, min(args.max_epochs, epochs))


def run_method(args, method, data, raw) -> dict:
    train_x, train_y, test_x, test_y = data
    train = (train_x, train_y)
    epochs = args.epochs or calibrate(args, method, train)
    out = Path(args.runs_dir) / method
    trainer = Trainer(**trainer_args(args, method, train, out, epochs, args.steps_per_epoch))
    curve, train_seconds, eval_seconds = [], 0.0, 0.0
    final = {}
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        trainer.fit(epochs=epoch)
        train_seconds += time.perf_counter() - t0
        last = epoch == epochs
        if epoch % args.curve_every and not last:
            continue
        t0 = time.perf_counter()
        device = trainer.device
        test_emb = embed_dataset(trainer.method, test_x, 512, device)
        train_emb = embed_dataset(trainer.method, train_x, 512, device)
        if last:
            scores = final_scores(args, test_emb, test_y, train_emb, train_y)
        else:
            scores = retrieval(test_emb, test_y, train_emb, train_y, ("precision_at_1",))
        eval_seconds += time.perf_counter() - t0
        curve.append({"epoch": epoch, "precision_at_1": scores["precision_at_1"]})
        print(f"[{method}] epoch {epoch}/{epochs}: test P@1 {scores['precision_at_1']:.4f}")
        if last:
            final = scores
    history = trainer.history
    return {
        "epochs": epochs,
        "minutes": train_seconds / 60,
        "eval_minutes": eval_seconds / 60,
        "p_at_1_per_epoch": curve,
        "final": final,
        "raw_pixels_p_at_1": raw,
        "images_per_second": _mean(h["images_per_second"] for h in history),
        "augment_share": _mean(h["augment_share"] for h in history),
        "final_epoch_monitor": history[-1],
        "online_probe_accuracy": history[-1].get("probe_accuracy", math.nan),
        "config": trainer.hyper,
        "build": trainer.build_config,
    }


def score_untrained(args, method, data, raw) -> dict:
    """Final metrics of the method's encoder before any step (same seed and build as a run)."""
    train_x, train_y, test_x, test_y = data
    out = Path(args.runs_dir) / f"{method}_untrained"
    trainer = Trainer(**trainer_args(args, method, (train_x, train_y), out, 1, None))
    test_emb = embed_dataset(trainer.method, test_x, 512, trainer.device)
    train_emb = embed_dataset(trainer.method, train_x, 512, trainer.device)
    final = final_scores(args, test_emb, test_y, train_emb, train_y)
    print(f"[{method}] untrained: test P@1 {final['precision_at_1']:.4f}")
    return {
        "epochs": 0,
        "minutes": 0.0,
        "p_at_1_per_epoch": [],
        "final": final,
        "raw_pixels_p_at_1": raw,
        "images_per_second": math.nan,
        "augment_share": math.nan,
        "build": trainer.build_config,
    }


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args)
    train_x, train_y, test_x, test_y = data
    raw = retrieval(
        test_x.flatten(1).float(), test_y, train_x.flatten(1).float(), train_y, ("precision_at_1",)
    )["precision_at_1"]
    print(f"raw pixels: test P@1 {raw:.4f} ({len(test_x)} queries, {len(train_x)} references)")
    results = {}
    for method in args.methods:
        score = score_untrained if args.untrained else run_method
        results[method] = score(args, method, data, raw)
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    payload = {
        "benchmark": "bench_ssl",
        "machine": machine_info(device, args.threads),
        "arguments": {k: v for k, v in vars(args).items()},
        "data": {"dataset": args.dataset, "train": len(train_x), "test": len(test_x)},
        "raw_pixels_p_at_1": raw,
        "results": results,
    }
    path = write_json(args.name, payload)
    rows = [["raw pixels", "", "", f"{raw:.4f}", "", "", "", "", "", "", "", ""]]
    for method, r in results.items():
        f = r["final"]
        rows.append(
            [
                method,
                r["epochs"],
                f"{r['minutes']:.1f}",
                f"{f.get('precision_at_1', math.nan):.4f}",
                f"{f.get('r_precision', math.nan):.4f}",
                f"{f.get('mean_average_precision_at_r', math.nan):.4f}",
                f"{f.get('knn_accuracy_weighted', math.nan):.4f}",
                f"{f.get('linear_accuracy', math.nan):.4f}",
                f"{r.get('online_probe_accuracy', math.nan):.4f}",
                "" if r["epochs"] == 0 else f"{r['images_per_second']:.0f}",
                "" if r["epochs"] == 0 else f"{r['augment_share']:.0%}",
                " ".join(f"{c['precision_at_1']:.3f}" for c in r["p_at_1_per_epoch"]),
            ]
        )
    headers = [
        "method",
        "epochs",
        "min",
        "P@1",
        "R-prec",
        "MAP@R",
        "kNN",
        "linear",
        "probe",
        "img/s",
        "aug",
        "P@1 per epoch",
    ]
    print(format_table(headers, rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
