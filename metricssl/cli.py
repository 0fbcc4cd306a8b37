"""The ``metricssl`` command.

    metricssl demo [--dataset digits|fashion-mnist] [--out DIR] [--epochs N] [--json]
    metricssl train --method NAME --dataset NAME [--out DIR] [--epochs N] [...] [--json]
    metricssl embed --checkpoint PATH --dataset NAME --output FILE.npy [--json]
    metricssl evaluate --checkpoint PATH --dataset NAME [--json]
    metricssl plot --checkpoint PATH --dataset NAME --output FILE.png [--json]

Bad arguments exit with status 2 and a one-line reason; ``--json`` prints one JSON object.
Heavy imports (torch, the trainers, plotting) happen inside the commands, so that
``metricssl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

DEMO_EXAMPLES = """examples:
  metricssl demo                            # sklearn digits, about a minute on a CPU
  metricssl demo --dataset fashion-mnist    # the same path on Fashion-MNIST
  metricssl demo --no-plots --json          # numbers only, as one JSON object
"""

TRAIN_EXAMPLES = """examples:
  metricssl train --method simclr --dataset digits --epochs 5 --out runs/simclr
  metricssl train --method byol --dataset fashion-mnist --data-dir ~/data/fmnist --out runs/byol
  metricssl train --method supervised --dataset digits --loss TripletMarginLoss --json

Writes OUT/checkpoints/last.pt after every epoch and OUT/log.csv; a run whose checkpoint
exists continues from it unless --no-resume is given.
"""

EMBED_EXAMPLES = """examples:
  metricssl embed --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --output digits-test.npy
  metricssl embed --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --split train --output digits-train.safetensors   # tensors "embeddings" and "labels"
"""

EVALUATE_EXAMPLES = """examples:
  metricssl evaluate --checkpoint runs/simclr/checkpoints/last.pt --dataset digits
  metricssl evaluate --checkpoint runs/simclr/checkpoints/last.pt --dataset digits --json

Test images are the queries, training images the references.
"""

PLOT_EXAMPLES = """examples:
  metricssl plot --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --output umap.png
  metricssl plot --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --method pca --split train --output pca.png
"""

# Kept here rather than imported, so that building the parser needs no torch.
METHOD_NAMES = ("simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "supervised")
DATASET_NAMES = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")
BACKBONE_NAMES = ("small_cnn", "resnet18", "resnet50")
# AccuracyCalculator metric -> the key `metricssl evaluate` prints.
EVALUATE_METRICS = {
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "mean_average_precision_at_r": "mean_average_precision_at_r",
    "knn_accuracy_weighted": "knn_accuracy",
    "NMI": "nmi",
    "AMI": "ami",
}


def _subparser(sub, name: str, help: str, description: str, examples: str):
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_data_arguments(parser, split: bool) -> None:
    parser.add_argument("--checkpoint", required=True, help="a file written by metricssl train")
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    if split:
        parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metricssl",
        description="Metric learning and self-supervised learning on PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = _subparser(
        sub,
        "demo",
        "train, index, search, evaluate and plot on a small data set",
        "Train an embedding with a PML-style loss and miner, build a FAISS index, "
        "show queries with their neighbours, evaluate against raw pixels, and write a UMAP "
        "picture and a retrieval grid.",
        DEMO_EXAMPLES,
    )
    demo.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    demo.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--out", default="metricssl-demo", help="folder for the pictures")
    demo.add_argument("--epochs", type=positive_int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-plots", action="store_true", help="skip the UMAP and grid pictures")
    demo.add_argument("--json", action="store_true", help="print one JSON object")

    train = _subparser(
        sub,
        "train",
        "train an encoder (self-supervised or supervised) and checkpoint it",
        "Train a self-supervised method (or supervised metric learning) with metricssl.ssl."
        "Trainer. Options left out take the method's defaults.",
        TRAIN_EXAMPLES,
    )
    train.add_argument("--method", required=True, choices=METHOD_NAMES)
    train.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    train.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    train.add_argument("--backbone", choices=BACKBONE_NAMES, default="small_cnn")
    train.add_argument("--epochs", type=positive_int, default=10)
    train.add_argument("--batch-size", type=positive_int, default=None)
    train.add_argument("--lr", type=positive_float, default=None)
    train.add_argument("--out", default="runs/ssl", help="run folder (checkpoints and log)")
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument("--loss", default=None, help="loss class name (--method supervised)")
    train.add_argument("--miner", default=None, help="miner class name (--method supervised)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.add_argument(
        "--steps-per-epoch", type=positive_int, default=None, help="cap on steps per epoch"
    )
    train.add_argument(
        "--no-resume", action="store_true", help="start afresh even if OUT has a checkpoint"
    )
    train.add_argument("--json", action="store_true", help="print one JSON object")

    embed = _subparser(
        sub,
        "embed",
        "embed a dataset split with a trained checkpoint",
        "Embed the clean images of one split and save the embeddings (.npy) or the "
        "embeddings and labels (.safetensors).",
        EMBED_EXAMPLES,
    )
    _add_data_arguments(embed, split=True)
    embed.add_argument("--output", required=True, help="FILE.npy or FILE.safetensors")
    embed.add_argument("--json", action="store_true", help="print one JSON object")

    evaluate = _subparser(
        sub,
        "evaluate",
        "retrieval, kNN and clustering scores of a trained checkpoint",
        "Embed the test and training splits and score test queries against the training "
        "set: precision_at_1, r_precision, mean_average_precision_at_r, knn_accuracy "
        "(weighted, k=200, T=0.1), nmi, ami.",
        EVALUATE_EXAMPLES,
    )
    _add_data_arguments(evaluate, split=False)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    plot = _subparser(
        sub,
        "plot",
        "UMAP/t-SNE/PCA picture of a split's embeddings",
        "Embed a split, project it to 2-D and save a scatter plot coloured by class.",
        PLOT_EXAMPLES,
    )
    _add_data_arguments(plot, split=True)
    plot.add_argument("--method", choices=["umap", "tsne", "pca"], default="umap")
    plot.add_argument("--output", required=True, help="FILE.png")
    plot.add_argument("--seed", type=non_negative_int, default=0)
    plot.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
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


def _plain_number(value):
    """Metrics as JSON-friendly Python values (tensors and numpy scalars become numbers)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_train_command(args) -> int:
    from .ssl import Trainer

    trainer = Trainer(
        method=args.method,
        dataset=args.dataset,
        data_dir=args.data_dir,
        backbone=args.backbone,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        miner=args.miner,
        out=args.out,
        seed=args.seed,
        device=args.device,
        resume=False if args.no_resume else "auto",
        progress=not args.json,
        steps_per_epoch=args.steps_per_epoch,
    )
    metrics = {key: _plain_number(value) for key, value in trainer.fit().items()}
    checkpoint = str(trainer.checkpoint_path)
    if args.json:
        print(json.dumps({"checkpoint": checkpoint, "epoch": trainer.epoch, "metrics": metrics}))
    else:
        print(f"epoch {trainer.epoch}/{trainer.epochs} of {args.method} on {args.dataset}")
        for key, value in metrics.items():
            print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")
        print(f"checkpoint: {checkpoint}")
    return 0


def _load_method(args):
    from .ssl import load_checkpoint

    method, _ = load_checkpoint(args.checkpoint, device=_device(args.device))
    return method


def _embed_split(method, args, split: str):
    """(embeddings, labels) of one split of ``args.dataset``."""
    from .ssl import embed_dataset, load_dataset

    images, labels = load_dataset(args.dataset, split, args.data_dir)
    return embed_dataset(method, images), labels


def _output_path(text: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"--output must end with {' or '.join(suffixes)}, got {text!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_embed_command(args) -> int:
    path = _output_path(args.output, (".npy", ".safetensors"))
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import save
        except ImportError:
            raise ValueError(
                "--output .safetensors needs the safetensors package (pip install safetensors)"
            ) from None
    embeddings, labels = _embed_split(_load_method(args), args, args.split)
    from .utils.atomic import atomic_write

    with atomic_write(path) as f:
        if path.suffix.lower() == ".npy":
            import numpy as np

            np.save(f, embeddings.numpy())
        else:
            f.write(save({"embeddings": embeddings.contiguous(), "labels": labels.contiguous()}))
    shape = list(embeddings.shape)
    if args.json:
        print(json.dumps({"output": str(path), "split": args.split, "shape": shape}))
    else:
        print(f"wrote {shape[0]} x {shape[1]} embeddings of {args.dataset} {args.split} to {path}")
    return 0


def run_evaluate_command(args) -> int:
    from .eval import AccuracyCalculator

    method = _load_method(args)
    test, test_labels = _embed_split(method, args, "test")
    train, train_labels = _embed_split(method, args, "train")
    calculator = AccuracyCalculator(include=tuple(EVALUATE_METRICS), k="max_bin_count")
    scores = calculator.get_accuracy(test, test_labels, train, train_labels)
    result = {key: float(scores[name]) for name, key in EVALUATE_METRICS.items()}
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value:.4f}")
    return 0


def _class_names(dataset: str):
    from . import data

    return {
        "fashion-mnist": data.FASHION_MNIST_CLASSES,
        "mnist": data.MNIST_CLASSES,
        "digits": data.MNIST_CLASSES,
        "cifar10": data.CIFAR10_CLASSES,
    }.get(dataset)


def run_plot_command(args) -> int:
    from .viz import project, scatter_plot

    path = _output_path(args.output, (".png",))
    embeddings, labels = _embed_split(_load_method(args), args, args.split)
    points = project(embeddings, method=args.method, seed=args.seed)
    scatter_plot(
        points,
        labels.numpy(),
        path=path,
        title=f"{args.dataset} {args.split}: {args.method}",
        class_names=_class_names(args.dataset),
    )
    if args.json:
        print(json.dumps({"output": str(path), "points": len(points)}))
    else:
        print(f"wrote {path}")
    return 0


COMMANDS = {
    "demo": run_demo_command,
    "train": run_train_command,
    "embed": run_embed_command,
    "evaluate": run_evaluate_command,
    "plot": run_plot_command,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # One line: some messages (e.g. load_state_dict's) span several.
        message = " ".join(str(err).split())
        print(f"metricssl {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
