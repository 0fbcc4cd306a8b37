"""The ``metricssl`` command.

    metricssl demo [--dataset digits|fashion-mnist] [--out DIR] [--epochs N] [--json]
    metricssl train --method NAME --dataset NAME [--out DIR] [--epochs N] [...] [--json]
    metricssl embed --checkpoint PATH --dataset NAME --output FILE.npy [--json]
    metricssl export --checkpoint PATH --format safetensors|torchscript|onnx --out FILE [--json]
    metricssl evaluate --checkpoint PATH --dataset NAME [--json]
    metricssl plot --checkpoint PATH --dataset NAME --output FILE.png [--json]
    metricssl index build (EMBEDDINGS | --checkpoint PATH --dataset NAME) --output FILE [--json]
    metricssl index search INDEX QUERIES -k K [--output FILE.npy|.npz|.json] [--json]
    metricssl bench [--suite losses|eval|index|ssl] [--quick] [--json] [-- SCRIPT ARGS]

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
  metricssl train --method simclr --dataset ~/photos --num-workers 4 --device cuda --out runs/p

Writes OUT/checkpoints/last.pt after every epoch and OUT/log.csv; a run whose checkpoint
exists continues from it unless --no-resume is given.
"""

EMBED_EXAMPLES = """examples:
  metricssl embed --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --output digits-test.npy
  metricssl embed --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --split train --output digits-train.safetensors   # tensors "embeddings" and "labels"
"""

EXPORT_EXAMPLES = """examples:
  metricssl export --checkpoint runs/simclr/checkpoints/last.pt --out encoder.safetensors
  metricssl export --checkpoint runs/simclr/checkpoints/last.pt --format torchscript \\
      --out encoder.pt

The file holds the encoder alone with its input size and normalisation; in Python,
metricssl.load_encoder(FILE) gives a module that embeds uint8 images of any size.
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

INDEX_BUILD_EXAMPLES = """examples:
  metricssl index build train.npy --output train.msidx
  metricssl index build train.safetensors --tensor embeddings --kind hnsw --metric cosine \\
      --output train.msidx
  metricssl index build train.npy --kind ivf_pq --nlist 256 --m 16 --ids ids.txt \\
      --output train.msidx
  metricssl index build --factory "IVF64,PQ8" train.npy --output train.msidx --json
  metricssl index build --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --metric cosine --output digits-train.msidx

EMBEDDINGS is a .npy file (n, dim) or a .safetensors file (--tensor names the tensor; default
"embeddings", or the file's only tensor). With --checkpoint, a split of --dataset (default
train) is embedded first, as `metricssl embed` does. IVF and PQ kinds are trained on the
vectors they index.
"""

INDEX_SEARCH_EXAMPLES = """examples:
  metricssl index search train.msidx test.npy -k 10
  metricssl index search train.msidx test.safetensors -k 5 --output neighbours.json
  metricssl index search train.msidx test.npy -k 100 --nprobe 32 --output ids.npy --json

Prints the first --show queries' neighbours as "id (distance)". --output FILE.npy saves the
(nq, k) int64 ids, FILE.npz the ids and the float32 distances, FILE.json both as lists.
Missing results (fewer than k found) have id -1 and distance +-inf (null in JSON).
"l2" distances are squared Euclidean distances.
"""

BENCH_EXAMPLES = """examples:
  metricssl bench --suite losses --quick          # minutes: N=256, 2 repeats
  metricssl bench --suite index -- --kinds flat hnsw --k 20
  metricssl bench --suite eval --json             # one JSON object with the results file
  metricssl bench                                 # every suite at full size (hours on a CPU)

Runs benchmarks/bench_<suite>.py from the source repository (they are not part of the
installed package) and prints their tables; each writes its JSON to benchmarks/results/.
--quick is the script's quick mode (--quick for losses and eval, --smoke for index and ssl).
Arguments after -- go to the script (one --suite only); `-- --help` shows them.
"""

DATASET_NAMES = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")
INDEX_KINDS = ("flat", "ivf_flat", "hnsw", "ivf_pq")
INDEX_METRICS = ("l2", "ip", "cosine")
# Suite -> the script's own flag for a short run.
BENCH_SUITES = {"losses": "--quick", "eval": "--quick", "index": "--smoke", "ssl": "--smoke"}
# In a source checkout (or an editable install) benchmarks/ sits next to this folder.
PACKAGE_DIR = Path(__file__).resolve().parent
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
    # The registry's names (methods with their aliases, backbones, ...), never copied here.
    from .ssl.registry import cli_choices

    choices = cli_choices()
    parser = argparse.ArgumentParser(
        prog="metricssl",
        description="Metric learning and self-supervised learning on PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = _subparser(
        sub,
        "demo",
        "train, index, search, evaluate and plot on a small data set",
        "Train SimCLR on the training images without their labels, build a FAISS index of "
        "their embeddings, show queries with their neighbours, score the test images against "
        "the training images next to raw pixels, and write a UMAP picture and a retrieval grid.",
        DEMO_EXAMPLES,
    )
    demo.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    demo.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--out", default="metricssl-demo", help="folder for the pictures")
    demo.add_argument(
        "--epochs", type=positive_int, default=None, help="SimCLR epochs (default: 200 on digits)"
    )
    demo.add_argument("--seed", type=non_negative_int, default=0)
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
    train.add_argument("--method", required=True, choices=choices["method"])
    train.add_argument(
        "--dataset",
        required=True,
        type=dataset_name_or_folder,
        metavar="{" + ",".join(DATASET_NAMES) + "} or FOLDER",
        help="a named dataset, or an image folder (ROOT/CLASS/IMAGE or ROOT/IMAGE)",
    )
    train.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    train.add_argument("--backbone", choices=choices["backbone"], default="small_cnn")
    train.add_argument("--epochs", type=positive_int, default=10)
    train.add_argument("--batch-size", type=positive_int, default=None)
    train.add_argument("--lr", type=positive_float, default=None)
    train.add_argument("--out", default="runs/ssl", help="run folder (checkpoints and log)")
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument("--loss", default=None, help="loss class name (--method supervised)")
    train.add_argument("--miner", default=None, help="miner class name (--method supervised)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=0,
        help="worker processes decoding an image folder (they persist across epochs); named "
        "datasets are held in memory and need none",
    )
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

    export = _subparser(
        sub,
        "export",
        "write the encoder of a checkpoint alone (safetensors, TorchScript, ONNX)",
        "Write the trained backbone with its input size and normalisation, without the "
        "heads, optimiser and training state.",
        EXPORT_EXAMPLES,
    )
    export.add_argument("--checkpoint", required=True, help="a file written by metricssl train")
    from .export import FORMATS as EXPORT_FORMATS  # the formats export_encoder writes

    export.add_argument("--format", choices=EXPORT_FORMATS, default="safetensors")
    export.add_argument("--out", required=True, help="the file to write")
    export.add_argument("--json", action="store_true", help="print one JSON object")

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

    _add_index_parsers(sub)
    _add_bench_parser(sub)
    return parser


def _add_index_parsers(sub) -> None:
    index = sub.add_parser(
        "index",
        help="build a FAISS index from embeddings, or search one",
        description="Build an EmbeddingIndex file from embeddings, or search a saved one.",
        epilog="examples:\n  metricssl index build train.npy --output train.msidx\n"
        "  metricssl index search train.msidx test.npy -k 10\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    build = _subparser(
        actions,
        "build",
        "build an index file from an embeddings file or a checkpoint",
        "Add embeddings to a FAISS index (exact, IVF, HNSW, IVF-PQ or any factory string) "
        "and save it with EmbeddingIndex.save.",
        INDEX_BUILD_EXAMPLES,
    )
    build.add_argument(
        "embeddings", nargs="?", default=None, help="FILE.npy or FILE.safetensors (n, dim)"
    )
    build.add_argument("--tensor", default=None, help="tensor name in a .safetensors file")
    build.add_argument("--checkpoint", default=None, help="embed a dataset with this checkpoint")
    build.add_argument("--dataset", choices=DATASET_NAMES, default=None)
    build.add_argument("--split", choices=["train", "test"], default=None, help="default: train")
    build.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    build.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    build.add_argument("--output", required=True, help="the index file to write")
    build.add_argument("--kind", choices=INDEX_KINDS, default=None, help="default: flat")
    build.add_argument("--factory", default=None, help='a FAISS factory string, e.g. "IVF64,PQ8"')
    build.add_argument("--metric", choices=INDEX_METRICS, default="l2")
    build.add_argument("--ids", default=None, help="ids of the vectors: FILE.npy or text")
    build.add_argument("--nlist", type=positive_int, default=100, help="IVF lists")
    build.add_argument("--nprobe", type=positive_int, default=8, help="IVF lists per query")
    build.add_argument("--m", type=positive_int, default=None, help="PQ sub-quantizers")
    build.add_argument("--nbits", type=positive_int, default=8, help="bits per PQ code")
    build.add_argument("--hnsw-m", type=positive_int, default=32, help="HNSW neighbours")
    build.add_argument("--ef-construction", type=positive_int, default=40)
    build.add_argument("--ef-search", type=positive_int, default=64)
    build.add_argument("--json", action="store_true", help="print one JSON object")

    search = _subparser(
        actions,
        "search",
        "search a saved index with query embeddings",
        "Load an index written by `metricssl index build` (or EmbeddingIndex.save) and find "
        "the k nearest stored vectors of each query.",
        INDEX_SEARCH_EXAMPLES,
    )
    search.add_argument("index", help="the index file")
    search.add_argument("queries", help="FILE.npy or FILE.safetensors (nq, dim)")
    search.add_argument("-k", type=positive_int, default=10, help="neighbours per query")
    search.add_argument("--tensor", default=None, help="tensor name in a .safetensors file")
    search.add_argument("--nprobe", type=positive_int, default=None, help="override the file's")
    search.add_argument("--ef-search", type=positive_int, default=None, help="override the file's")
    search.add_argument("--output", default=None, help="FILE.npy (ids), .npz or .json")
    search.add_argument(
        "--show", type=non_negative_int, default=10, help="queries to print (default 10)"
    )
    search.add_argument("--json", action="store_true", help="print one JSON object")


def _add_bench_parser(sub) -> None:
    bench = _subparser(
        sub,
        "bench",
        "run the benchmark scripts of the source repository",
        "Run metricssl's benchmarks side by side with PML (and FAISS/trainer figures) and "
        "print their tables.",
        BENCH_EXAMPLES,
    )
    bench.add_argument(
        "--suite",
        action="append",
        choices=list(BENCH_SUITES),
        default=None,
        help="repeatable; default: every suite",
    )
    bench.add_argument("--quick", action="store_true", help="the script's short run")
    bench.add_argument(
        "--benchmarks-dir", default=None, help="folder with bench_<suite>.py (default: found)"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "script_args", nargs="*", metavar="ARG", help="after --: arguments for the script"
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def dataset_name_or_folder(text: str) -> str:
    """A named dataset, or an existing folder of images."""
    if text in DATASET_NAMES or Path(text).is_dir():
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(DATASET_NAMES)} or an image folder, got {text!r}"
    )


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
        num_workers=args.num_workers,
        resume=False if args.no_resume else "auto",
        progress=not args.json,
        steps_per_epoch=args.steps_per_epoch,
    )
    from .core.distributed import rank

    try:
        metrics = {key: _plain_number(value) for key, value in trainer.fit().items()}
        reporter = rank() == 0
    finally:
        trainer.close()
    if not reporter:
        return 0  # under torchrun, rank 0 reports (its metrics include the kNN evaluation)
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
    from .core.atomic import atomic_write

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


def run_export_command(args) -> int:
    from .export import export_encoder, load_encoder

    try:
        path = export_encoder(args.checkpoint, args.out, args.format)
    except ImportError as err:  # a format whose optional packages are missing: a usage error
        raise ValueError(str(err)) from None
    if args.format == "onnx":
        shape = None
    else:
        shape = load_encoder(path).metadata["input_shape"]
    if args.json:
        print(json.dumps({"output": str(path), "format": args.format, "input_shape": shape}))
    else:
        print(f"wrote the {args.format} encoder of {args.checkpoint} to {path}")
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


# -- index build / index search ------------------------------------------------------------


def _load_vectors(path_text: str, tensor: str | None, what: str):
    """(n, dim) vectors from a .npy file (memory-mapped) or a tensor of a .safetensors file."""
    path = Path(path_text)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".safetensors"):
        raise ValueError(f"{what} must be a .npy or .safetensors file, got {path_text!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path_text!r}")
    if suffix == ".npy":
        if tensor is not None:
            raise ValueError("--tensor is for .safetensors files; a .npy file holds one array")
        import numpy as np

        try:
            # Memory-mapped: the index reads it in chunks, so large files are not copied.
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path_text}: not a readable .npy array ({err})") from None
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise ValueError(
            f"reading {path_text} needs the safetensors package (pip install safetensors)"
        ) from None
    try:
        # The torch framework reads every dtype (bfloat16 included); one tensor is loaded.
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            name = tensor
            if name is None:
                if "embeddings" in names:
                    name = "embeddings"
                elif len(names) == 1:
                    name = names[0]
                else:
                    raise ValueError(
                        f"{path_text} holds tensors {sorted(names)}; name one with --tensor"
                    )
            if name not in names:
                raise ValueError(f"{path_text} has no tensor {name!r}; it holds {sorted(names)}")
            return f.get_tensor(name)
    except SafetensorError as err:
        raise ValueError(f"{path_text}: not a readable .safetensors file ({err})") from None


def _load_ids(path_text: str):
    """Integer ids from a .npy array or a text file with one integer per line."""
    import numpy as np

    path = Path(path_text)
    if not path.is_file():
        raise FileNotFoundError(f"no --ids file at {path_text!r}")
    try:
        if path.suffix.lower() == ".npy":
            ids = np.load(path, allow_pickle=False)
        else:
            ids = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"--ids {path_text}: not a list of integers ({err})") from None
    return ids


def _build_vectors(args):
    """The vectors to index and where they came from, from a file or a checkpoint."""
    from_checkpoint = args.checkpoint is not None
    if args.embeddings is not None and from_checkpoint:
        raise ValueError("give an embeddings file or --checkpoint, not both")
    if not from_checkpoint:
        if args.embeddings is None:
            raise ValueError("give an embeddings file, or --checkpoint and --dataset")
        for name in ("dataset", "split", "data_dir"):
            if getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} goes with --checkpoint, not with an embeddings file")
        return _load_vectors(args.embeddings, args.tensor, "embeddings"), args.embeddings
    if args.dataset is None:
        raise ValueError("--checkpoint needs --dataset")
    if args.tensor is not None:
        raise ValueError("--tensor is for a .safetensors embeddings file, not --checkpoint")
    args.split = args.split or "train"
    embeddings, _ = _embed_split(_load_method(args), args, args.split)
    return embeddings, f"{args.checkpoint} on {args.dataset} {args.split}"


def run_index_build_command(args) -> int:
    from .index import EmbeddingIndex

    ids = _load_ids(args.ids) if args.ids is not None else None  # before any slow work
    vectors, source = _build_vectors(args)
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be 2D (n, dim), got shape {tuple(vectors.shape)}")
    index = EmbeddingIndex(
        int(vectors.shape[1]),
        kind=args.kind,
        metric=args.metric,
        factory=args.factory,
        nlist=args.nlist,
        nprobe=args.nprobe,
        m=args.m,
        nbits=args.nbits,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
        progress=False if args.json else None,
    )
    if not index.is_trained:
        index.train(vectors)  # IVF centroids / PQ codebooks, from the vectors themselves
    index.add(vectors, ids=ids)
    output = Path(args.output)
    index.save(output)
    result = {
        "output": str(output),
        "source": source,
        "kind": index.kind,
        "factory": index.factory,
        "metric": index.metric,
        "dim": index.dim,
        "ntotal": index.ntotal,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"wrote {output}: {index.ntotal} x {index.dim} vectors, kind {index.kind} "
            f"({index.factory}), metric {index.metric}"
        )
    return 0


def _json_rows(array) -> list:
    """Rows of numbers for JSON: infinities (missing results) become null."""
    import math

    return [[v if math.isfinite(v) else None for v in row] for row in array.tolist()]


def _write_search_results(path: Path, distances, ids, metric: str, k: int) -> None:
    import numpy as np

    from .core.atomic import atomic_write

    suffix = path.suffix.lower()
    with atomic_write(path, "w" if suffix == ".json" else "wb") as f:
        if suffix == ".npy":
            np.save(f, ids)
        elif suffix == ".npz":
            np.savez(f, ids=ids, distances=distances)
        else:
            payload = {
                "metric": metric,
                "k": k,
                "ids": ids.tolist(),
                "distances": _json_rows(distances),
            }
            json.dump(payload, f)


def run_index_search_command(args) -> int:
    import numpy as np

    from .index import EmbeddingIndex

    output = None
    if args.output is not None:
        output = _output_path(args.output, (".npy", ".npz", ".json"))
    if not Path(args.index).is_file():
        raise FileNotFoundError(f"no index file at {args.index!r}")
    index = EmbeddingIndex.load(args.index, progress=False if args.json else None)
    if args.nprobe is not None:
        index.nprobe = args.nprobe
    if args.ef_search is not None:
        index.ef_search = args.ef_search
    queries = _load_vectors(args.queries, args.tensor, "queries")
    if queries.ndim != 2:
        raise ValueError(f"queries must be 2D (nq, dim), got shape {tuple(queries.shape)}")
    # A k beyond the index returns every stored vector: min(k, ntotal) columns.
    distances, ids = index.search(queries, args.k)
    # numpy for writing and printing, whatever the queries were.
    distances = np.asarray(distances.cpu() if hasattr(distances, "cpu") else distances)
    ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids)
    columns = ids.shape[1]
    if output is not None:
        _write_search_results(output, distances, ids, index.metric, args.k)
    if args.json:
        result = {
            "index": args.index,
            "queries": int(ids.shape[0]),
            "k": args.k,
            "metric": index.metric,
            "output": None if output is None else str(output),
            "ids": ids.tolist(),
            "distances": _json_rows(distances),
        }
        print(json.dumps(result))
        return 0
    shown = min(args.show, ids.shape[0])
    for q in range(shown):
        pairs = "  ".join(f"{i} ({d:.4g})" for i, d in zip(ids[q].tolist(), distances[q].tolist()))
        print(f"query {q}: {pairs}")
    if 0 < shown < ids.shape[0]:
        print(f"... {ids.shape[0] - shown} more queries (--show N prints more)")
    if columns < args.k:
        print(f"-k {args.k}: the index holds {index.ntotal} vectors, so {columns} per query")
    if output is not None:
        print(f"wrote {ids.shape[0]} x {columns} results to {output}")
    return 0


INDEX_COMMANDS = {"build": run_index_build_command, "search": run_index_search_command}


def run_index_command(args) -> int:
    return INDEX_COMMANDS[args.index_command](args)


# -- bench ----------------------------------------------------------------------------------


class CommandFailed(Exception):
    """A command that ran but did not succeed (e.g. a benchmark script's own failure)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def find_benchmarks_dir(suites, explicit: str | None = None) -> Path:
    """The folder holding ``bench_<suite>.py`` for every suite.

    Looked for next to the package (a source checkout or an editable install), then in the
    current folder; the scripts are not part of a wheel.
    """
    needed = [f"bench_{suite}.py" for suite in suites]
    if explicit is not None:
        candidates = [Path(explicit)]
    else:
        candidates = [PACKAGE_DIR.parent / "benchmarks", Path.cwd() / "benchmarks"]
    for folder in candidates:
        if all((folder / name).is_file() for name in needed):
            return folder.resolve()
    if explicit is not None:
        missing = [name for name in needed if not (Path(explicit) / name).is_file()]
        raise ValueError(f"--benchmarks-dir {explicit!r} has no {', '.join(missing)}")
    raise ValueError(
        f"no benchmarks/ folder with {', '.join(needed)} next to the metricssl package or in "
        f"the current folder: the benchmark scripts ship with the source repository, not the "
        f"installed package; run from a checkout or pass --benchmarks-dir"
    )


def _json_files(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.glob("*.json")} if folder.is_dir() else {}


def _run_benchmark(folder: Path, suite: str, args) -> dict:
    import subprocess

    script = folder / f"bench_{suite}.py"
    script_args = ([BENCH_SUITES[suite]] if args.quick else []) + list(args.script_args)
    results_dir = folder / "results"
    before = _json_files(results_dir)
    command = [sys.executable, str(script), *script_args]
    if not args.json:
        print(f"$ {' '.join(command)}", flush=True)
    # The scripts import `benchmarks` and `metricssl` from the repository root.
    done = subprocess.run(
        command, cwd=folder.parent, stdout=subprocess.PIPE if args.json else None, text=True
    )
    written = sorted(p for p, t in _json_files(results_dir).items() if before.get(p) != t)
    results = {}
    for path in written:
        try:
            results[path.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            results[path.name] = None
    return {
        "suite": suite,
        "script": str(script),
        "args": script_args,
        "returncode": done.returncode,
        "output": done.stdout if args.json else None,
        "results_files": [str(p) for p in written],
        "results": results,
    }


def run_bench_command(args) -> int:
    suites = list(dict.fromkeys(args.suite or BENCH_SUITES))
    if args.script_args and len(suites) != 1:
        raise ValueError("arguments after -- go to one script: name exactly one --suite")
    folder = find_benchmarks_dir(suites, args.benchmarks_dir)
    runs = []
    for suite in suites:
        run = _run_benchmark(folder, suite, args)
        runs.append(run)
        if run["returncode"] != 0:
            break
    if args.json:
        print(json.dumps({"benchmarks_dir": str(folder), "runs": runs}))
    else:
        for run in runs:
            for path in run["results_files"]:
                print(f"{run['suite']}: results in {path}")
    failed = runs[-1]
    if failed["returncode"] != 0:
        code = failed["returncode"]
        raise CommandFailed(
            f"{Path(failed['script']).name} exited with status {code}",
            code if code > 0 else 1,  # negative: killed by a signal
        )
    return 0


COMMANDS = {
    "demo": run_demo_command,
    "train": run_train_command,
    "embed": run_embed_command,
    "export": run_export_command,
    "evaluate": run_evaluate_command,
    "plot": run_plot_command,
    "index": run_index_command,
    "bench": run_bench_command,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.command
    if name == "index":
        name = f"index {args.index_command}"
    try:
        return COMMANDS[args.command](args)
    except CommandFailed as err:
        print(f"metricssl {name}: error: {err}", file=sys.stderr)
        return err.code
    except (ValueError, TypeError, OSError) as err:
        # One line: some messages (e.g. load_state_dict's) span several.
        message = " ".join(str(err).split())
        print(f"metricssl {name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
