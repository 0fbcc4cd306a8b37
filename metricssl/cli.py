"""The ``metricssl`` command.

    metricssl demo [--dataset digits|fashion-mnist] [--out DIR] [--epochs N] [--json]
    metricssl train --method NAME (--dataset NAME | --data PATH) [--config FILE] [...] [--json]
    metricssl embed --checkpoint PATH (--dataset NAME | --data PATH)
        (--output FILE.npy | --shards DIR [--shard-rows N] [--dtype float16]) [--json]
    metricssl export --checkpoint PATH --format safetensors|torchscript|onnx --out FILE [--json]
    metricssl evaluate (--checkpoint PATH (--dataset NAME | --data PATH) | --embeddings FILE)
        [--linear] [--json]
    metricssl plot (--checkpoint PATH (--dataset NAME | --data PATH) | --embeddings FILE)
        --output FILE.png [--json]
    metricssl index build (EMBEDDINGS | --checkpoint PATH (--dataset NAME | --data PATH))
        --output FILE [--json]
    metricssl index build --from-shards DIR [--kind ivf_pq|ivf_flat] --output DIR [--json]
    metricssl index search INDEX QUERIES -k K [--output FILE.npy|.npz|.json] [--json]
    metricssl search --checkpoint PATH --index FILE [--data PATH] [--grid FILE.png] IMAGE...
    metricssl bench [--suite losses|eval|index|ssl] [--quick] [--json] [-- SCRIPT ARGS]

Bad arguments exit with status 2 and a one-line reason, checked before any work (``--out``,
``--data-dir``, ``--device``, the settings of a run being resumed); ``--json`` prints one
JSON object.
Heavy imports (torch, the trainers, plotting) happen inside the commands, so that
``metricssl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
  metricssl train --method simclr --data ~/photos --num-workers 4 --device cuda --out runs/p
  metricssl train --method simclr --data photos.csv --out runs/p   # a CSV/Parquet manifest
  metricssl train --config run.yaml --epochs 100 --set hparams.temperature=0.2

Writes OUT/checkpoints/last.pt after every epoch, OUT/log.csv, and OUT/resolved.json (every
Trainer argument as used; a --config for the same run). A run whose checkpoint exists
continues from it (and says so) unless --no-resume is given; settings that differ from the
checkpoint's are refused unless --allow-changed-settings is given.
"""

EMBED_EXAMPLES = """examples:
  metricssl embed --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --output digits-test.npy
  metricssl embed --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --split train --output digits-train.safetensors   # tensors "embeddings" and "labels"
  metricssl embed --checkpoint runs/p/checkpoints/last.pt --data ~/photos --output p.npy
  torchrun --nproc-per-node 4 --no-python metricssl embed \\
      --checkpoint runs/p/checkpoints/last.pt --data ~/photos --shards p-shards --dtype float16
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
  metricssl evaluate --checkpoint runs/simclr/checkpoints/last.pt --dataset digits --linear
  metricssl evaluate --checkpoint runs/p/checkpoints/last.pt --data ~/photos
  metricssl evaluate --embeddings q.npy --labels ql.npy \\
      --reference-embeddings r.npy --reference-labels rl.npy

With --dataset, test images are the queries and training images the references. With --data
or --embeddings, the queries are scored against each other (each one's own entry left out),
or against --reference-data / --reference-embeddings.

--linear adds linear_accuracy: a softmax regression fitted on the training (reference)
features, its L2 penalty chosen on a held-out part of them, scored on the queries
(metricssl.eval.linear; docs/evaluation.md), and the penalty chosen (linear_weight_decay).
"""

PLOT_EXAMPLES = """examples:
  metricssl plot --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --output umap.png
  metricssl plot --checkpoint runs/simclr/checkpoints/last.pt --dataset digits \\
      --method pca --split train --output pca.png
  metricssl plot --embeddings clip.npy --labels labels.npy --method tsne --output tsne.png
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
  metricssl index build --from-shards p-shards --kind ivf_pq --nlist 4096 --m 16 \\
      --memory-budget-mb 1024 --output p-index   # a folder: lists on disk, bigger than RAM

EMBEDDINGS is a .npy file (n, dim) or a .safetensors file (--tensor names the tensor; default
"embeddings", or the file's only tensor). With --checkpoint, a split of --dataset (default
train) is embedded first, as `metricssl embed` does. IVF and PQ kinds are trained on the
vectors they index. With --from-shards (a folder written by `metricssl embed --shards`), an IVF
index is trained on a sample (--train-size), added shard by shard within --memory-budget-mb and
its inverted lists merged into --output/lists.ivfdata (see docs/scale.md); under torchrun the
ranks share the adding.
"""

INDEX_SEARCH_EXAMPLES = """examples:
  metricssl index search train.msidx test.npy -k 10
  metricssl index search train.msidx test.safetensors -k 5 --output neighbours.json
  metricssl index search train.msidx test.npy -k 100 --nprobe 32 --output ids.npy --json
  metricssl index search p-index test.npy -k 10 --nprobe 64   # an on-disk index folder

Prints the first --show queries' neighbours as "id (distance)". --output FILE.npy saves the
(nq, k) int64 ids, FILE.npz the ids and the float32 distances, FILE.json both as lists.
Missing results (fewer than k found) have id -1 and distance +-inf (null in JSON).
"l2" distances are squared Euclidean distances.
"""

SEARCH_EXAMPLES = """examples:
  metricssl index build --checkpoint runs/photos/checkpoints/last.pt --data photos/ \\
      --metric cosine --output photos.msidx
  metricssl search --checkpoint runs/photos/checkpoints/last.pt --index photos.msidx \\
      --data photos/ -k 8 --grid grid.png query1.jpg query2.jpg
  metricssl search --checkpoint runs/photos/checkpoints/last.pt --index photos.msidx \\
      query.jpg --out neighbours.json

Prints (or writes to --out) one JSON object: {"checkpoint", "index", "metric", "k", "queries":
[{"image", "neighbours": [{"id", "distance", "path", "label"}]}]}; "path" and "label" need
--data. Neighbour ids are positions in --data, as `index build --data` numbers them; results
an approximate index did not find are left out.
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


def _subparser(sub, name: str, help: str, description: str, examples: str, **kwargs):
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _add_data_flag(parser, help: str) -> None:
    """``--data PATH``: the user's images (a folder or a manifest), checked to exist."""
    parser.add_argument("--data", type=existing_path, default=None, metavar="PATH", help=help)


def _add_data_arguments(parser, split: bool, files: bool = False) -> None:
    """The images a checkpoint embeds: a named dataset's split or ``--data``; with ``files``
    also embeddings and labels from any encoder instead of a checkpoint."""
    parser.add_argument(
        "--checkpoint",
        required=not files,
        default=None,
        help="a file written by metricssl train",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=DATASET_NAMES, default=None)
    _add_data_flag(
        source,
        "your images: a folder (ROOT/CLASS/IMAGE or ROOT/IMAGE), resized to the "
        "checkpoint's input size",
    )
    if files:
        source.add_argument(
            "--embeddings",
            default=None,
            metavar="FILE",
            help="embeddings from any encoder instead of a checkpoint: .npy or .safetensors",
        )
        parser.add_argument(
            "--labels",
            default=None,
            metavar="FILE",
            help='labels of --embeddings (.npy or .safetensors; default: its "labels" tensor)',
        )
    if split:
        parser.add_argument(
            "--split", choices=["train", "test"], default=None, help="of --dataset (default test)"
        )
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    parser.add_argument(
        "--download", action="store_true", help="download a named dataset that is not found"
    )
    parser.add_argument(
        "--num-workers", type=non_negative_int, default=0, help="processes decoding --data"
    )
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
        "Trainer. Options left out take the --config file's values, then the method's "
        "defaults; every Trainer argument can be set in the file or with --set.",
        TRAIN_EXAMPLES,
        argument_default=argparse.SUPPRESS,  # only the flags given override the config file
    )
    _add_train_arguments(train)

    embed = _subparser(
        sub,
        "embed",
        "embed a dataset split with a trained checkpoint",
        "Embed the clean images of one split and save the embeddings (.npy) or the "
        "embeddings and labels (.safetensors).",
        EMBED_EXAMPLES,
    )
    _add_data_arguments(embed, split=True)
    destination = embed.add_mutually_exclusive_group(required=True)
    destination.add_argument("--output", help="FILE.npy or FILE.safetensors")
    destination.add_argument(
        "--shards",
        metavar="DIR",
        help="a shard set (part files and manifest.json), one share per torchrun process; "
        "a rerun keeps the parts already written",
    )
    embed.add_argument(
        "--shard-rows", type=positive_int, default=None, help="rows per part (default 65536)"
    )
    embed.add_argument(
        "--dtype", choices=["float32", "float16"], default=None, help="storage of --shards"
    )
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
    _add_data_arguments(evaluate, split=False, files=True)
    evaluate.add_argument(
        "--reference-data",
        type=existing_path,
        default=None,
        metavar="PATH",
        help="images searched by the --data queries (default: the queries themselves)",
    )
    evaluate.add_argument(
        "--reference-embeddings",
        default=None,
        metavar="FILE",
        help="embeddings searched by --embeddings (default: the queries themselves)",
    )
    evaluate.add_argument("--reference-labels", default=None, metavar="FILE")
    evaluate.add_argument(
        "--linear",
        action="store_true",
        help="also the linear-evaluation accuracy: a classifier fitted on the training "
        "(reference) features, scored on the queries",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    plot = _subparser(
        sub,
        "plot",
        "UMAP/t-SNE/PCA picture of a split's embeddings",
        "Embed a split, project it to 2-D and save a scatter plot coloured by class.",
        PLOT_EXAMPLES,
    )
    _add_data_arguments(plot, split=True, files=True)
    plot.add_argument("--method", choices=["umap", "tsne", "pca"], default="umap")
    plot.add_argument("--output", required=True, help="FILE.png")
    plot.add_argument("--seed", type=non_negative_int, default=0)
    plot.add_argument("--json", action="store_true", help="print one JSON object")

    _add_index_parsers(sub)
    _add_search_parser(sub)
    _add_bench_parser(sub)
    return parser


# Train flags that are not Trainer arguments (every other flag's dest is one).
TRAIN_CLI_ONLY = ("config", "set", "json")


def _add_train_arguments(train) -> None:
    """``train``'s flags. Their dests are the Trainer's argument names; none has a default
    (the parser's argument_default is SUPPRESS), so the namespace holds only what was given."""
    # The registry's names (methods with their aliases, backbones, ...), never copied here.
    from .data.items import MODES
    from .ssl.registry import cli_choices

    choices = cli_choices()
    train.add_argument(
        "--config",
        default=None,
        help="YAML, TOML or JSON file of Trainer arguments (flags override it)",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any Trainer argument (VALUE read as JSON, else a string), e.g. knn_k=50 or "
        "hparams.temperature=0.2; repeatable; overrides --config",
    )
    train.add_argument("--method", choices=choices["method"])
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        type=dataset_name_or_folder,
        metavar="{" + ",".join(DATASET_NAMES) + "} or FOLDER",
        help="a named dataset, or an image folder (ROOT/CLASS/IMAGE or ROOT/IMAGE)",
    )
    source.add_argument(
        "--data",
        dest="dataset",
        type=existing_path,
        metavar="PATH",
        help="your images: a folder (ROOT/CLASS/IMAGE or ROOT/IMAGE) or a CSV/Parquet manifest",
    )
    train.add_argument("--data-dir", help="folder with the named dataset's files")
    train.add_argument(
        "--download", action="store_true", help="download a named dataset that is not found"
    )
    train.add_argument(
        "--image-size",
        type=size_or_height_width,
        metavar="SIZE|H,W",
        help="train at this size: each image scaled to cover it, then centre-cropped "
        "(default: the images' own size)",
    )
    train.add_argument(
        "--mode", choices=MODES, help="RGB (3 channels) or L (grey); default: the images' own"
    )
    train.add_argument(
        "--backbone",
        type=backbone_name_or_spec,
        metavar="{" + ",".join(choices["backbone"]) + "} or SPEC",
        help="default: the method's (small_cnn; vit_tiny for mae); or a SPEC: timm:NAME, "
        "torchvision:NAME or package.module:attr (found in the current folder too)",
    )
    train.add_argument("--epochs", type=positive_int, help="default: 10")
    train.add_argument("--batch-size", type=positive_int)
    train.add_argument("--lr", type=positive_float)
    train.add_argument("--optimizer", choices=choices["optimizer"], help="default: the method's")
    train.add_argument("--weight-decay", type=non_negative_float)
    train.add_argument("--warmup-epochs", type=non_negative_float)
    train.add_argument("--final-lr-factor", type=non_negative_float)
    train.add_argument("--accumulate-steps", type=positive_int)
    train.add_argument("--amp", choices=choices["amp"], help="default: auto")
    train.add_argument("--memory-format", choices=choices["memory_format"], help="default: auto")
    train.add_argument("--out", help="run folder (checkpoints, log, resolved.json)")
    train.add_argument("--seed", type=non_negative_int)
    train.add_argument("--loss", help="loss class name (--method supervised)")
    train.add_argument("--miner", help="miner class name (--method supervised)")
    train.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    train.add_argument(
        "--num-workers",
        type=non_negative_int,
        help="worker processes decoding an image folder (they persist across epochs); named "
        "datasets are held in memory and need none",
    )
    train.add_argument("--val-fraction", type=non_negative_float)
    train.add_argument("--knn-k", type=positive_int)
    train.add_argument("--knn-temperature", type=positive_float)
    train.add_argument("--knn-every", type=positive_int)
    train.add_argument("--knn-max-references", type=positive_int)
    train.add_argument(
        "--linear-probe",
        action=argparse.BooleanOptionalAction,
        help="an online linear classifier on the features when the data have labels "
        "(default: on; --no-linear-probe saves its forward pass per step)",
    )
    train.add_argument("--steps-per-epoch", type=positive_int, help="cap on steps per epoch")
    train.add_argument("--eval-batch-size", type=positive_int)
    resume = train.add_mutually_exclusive_group()
    resume.add_argument(
        "--no-resume",
        dest="resume",
        action="store_const",
        const=False,
        help="start afresh even if OUT has a checkpoint",
    )
    resume.add_argument("--resume", metavar="CHECKPOINT", help="continue from this file")
    train.add_argument(
        "--allow-changed-settings",
        action="store_true",
        help="resume although the settings differ from the checkpoint's (they are applied)",
    )
    train.add_argument("--json", action="store_true", default=False, help="print one JSON object")


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
    _add_data_flag(build, "embed your images (a folder) with --checkpoint; ids are their positions")
    build.add_argument("--split", choices=["train", "test"], default=None, help="default: train")
    build.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    build.add_argument(
        "--download", action="store_true", help="download a named dataset that is not found"
    )
    build.add_argument(
        "--num-workers", type=non_negative_int, default=0, help="processes decoding --data"
    )
    build.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    build.add_argument(
        "--output", required=True, help="the index file to write (a folder with --from-shards)"
    )
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
    build.add_argument(
        "--from-shards",
        type=existing_path,
        default=None,
        metavar="DIR",
        help="build an on-disk IVF index (--output is a folder) from a shard set",
    )
    build.add_argument(
        "--memory-budget-mb", type=positive_int, default=512, help="RAM for --from-shards adds"
    )
    build.add_argument(
        "--train-size", type=positive_int, default=None, help="--from-shards training sample"
    )
    build.add_argument("--json", action="store_true", help="print one JSON object")

    search = _subparser(
        actions,
        "search",
        "search a saved index with query embeddings",
        "Load an index written by `metricssl index build` (or EmbeddingIndex.save) and find "
        "the k nearest stored vectors of each query.",
        INDEX_SEARCH_EXAMPLES,
    )
    search.add_argument("index", help="the index file, or an on-disk index folder")
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


def _add_search_parser(sub) -> None:
    search = _subparser(
        sub,
        "search",
        "embed query images with a checkpoint and find their neighbours in an index",
        "Embed image files with a checkpoint (converted to its channels and resized to its "
        "input size, then normalised as in training), search an index built with the same "
        "checkpoint, and write the neighbours as JSON and, with --grid, as a picture.",
        SEARCH_EXAMPLES,
    )
    search.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    search.add_argument("--checkpoint", required=True, help="a file written by metricssl train")
    search.add_argument("--index", required=True, help="an index file (metricssl index build)")
    search.add_argument("-k", type=positive_int, default=5, help="neighbours per query")
    _add_data_flag(
        search,
        "the images the index was built from (index build --data): the neighbours' "
        "files and classes are reported and drawn",
    )
    search.add_argument("--nprobe", type=positive_int, default=None, help="override the index's")
    search.add_argument("--ef-search", type=positive_int, default=None, help="override the index's")
    search.add_argument("--out", default=None, help="FILE.json (default: printed)")
    search.add_argument(
        "--grid", default=None, help="FILE.png: queries and neighbours (needs --data)"
    )
    search.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


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


def size_or_height_width(text: str) -> int | tuple[int, int]:
    """``64`` (a square) or ``96,128`` (height, width)."""
    parts = text.replace("x", ",").split(",")
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W, got {text!r}") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W of positive integers, got {text!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def dataset_name_or_folder(text: str) -> str:
    """A named dataset, or an existing folder of images."""
    if text in DATASET_NAMES or Path(text).is_dir():
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(DATASET_NAMES)} or an image folder, got {text!r}"
    )


def backbone_name_or_spec(text: str) -> str:
    """A registered backbone name, or a spec with ``:`` (its form checked here; its package,
    module and model when the Trainer builds it)."""
    from .ssl.registry import check_backbone

    try:
        check_backbone(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def existing_path(text: str) -> str:
    """A file or folder that exists (checked before any work)."""
    if Path(text).expanduser().exists():
        return text
    raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
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
    from .cli_data import check_data_dir
    from .demo import run_demo

    check_data_dir(args.data_dir)

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
    from .cli_config import resolve_settings, save_resolved, trainer_parameters
    from .cli_data import dataset_hint
    from .core.distributed import rank
    from .ssl import Trainer

    given = {k: v for k, v in vars(args).items() if k in trainer_parameters()}
    if args.json:
        given.setdefault("progress", False)
    settings, named = resolve_settings(args.config, args.set, given)
    _check_train_settings(settings, named)
    source = _resume_source(settings)
    state = None
    if source is not None:
        from .ssl.checkpoint import read_checkpoint

        state = read_checkpoint(source, map_location="cpu")
        if _target_reached(state, settings):
            return _report_reached(state, source, settings, args.json)
        if _same_method(state, settings):
            _check_early_changes(state, settings, source)
    with dataset_hint():
        trainer = Trainer(**{**settings, "resume": False})  # the state is loaded below
    reporter = rank() == 0
    try:
        resumed = None
        if state is not None:
            # The Trainer compares every recorded setting and applies allowed changes.
            resumed = dataclasses.asdict(trainer.load_state(state, source))
            if reporter and not args.json:
                print(trainer.resumed, flush=True)
        if reporter:
            save_resolved(_resolved(settings, trainer), trainer.out)
        metrics = {key: _plain_number(value) for key, value in trainer.fit().items()}
    finally:
        trainer.close()
    if not reporter:
        return 0  # under torchrun, rank 0 reports (its metrics include the kNN evaluation)
    checkpoint = str(trainer.checkpoint_path)
    if args.json:
        result = {"checkpoint": checkpoint, "epoch": trainer.epoch, "metrics": metrics}
        print(json.dumps({**result, "resumed": resumed}))
    else:
        print(
            f"epoch {trainer.epoch}/{trainer.epochs} of {trainer.method_name} on {trainer.dataset_name}"
        )
        for key, value in metrics.items():
            print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")
        print(f"checkpoint: {checkpoint}")
    return 0


# Trainer arguments whose None means "the method's default": the file records the value used.
METHOD_DEFAULTED = ("batch_size", "lr", "optimizer", "weight_decay", "warmup_epochs")


def _resolved(settings: dict, trainer) -> dict:
    """The settings with the method's defaults filled in as the Trainer resolved them."""
    resolved = dict(settings)
    # A permission for this resume, not a setting of the run: a rerun of the file asks anew.
    del resolved["allow_changed_settings"]
    for key in METHOD_DEFAULTED:
        if resolved[key] is None:
            resolved[key] = trainer.hyper[key]
    if trainer.build_config is not None:
        resolved["hparams"] = trainer.build_config["hparams"]
        if resolved["backbone"] is None:  # the method's default backbone, by name
            resolved["backbone"] = trainer.build_config["backbone"]
    return resolved


def _check_train_settings(settings: dict, named: set) -> None:
    """What a run needs, checked before any data is read or any model built."""
    from .cli_data import check_data_dir, check_device, check_writable_folder

    for name in ("method", "dataset"):
        if name not in named:
            flags = "--method" if name == "method" else "--dataset or --data"
            raise ValueError(f"train needs {flags} (or {name}: in the --config file)")
    if not isinstance(settings["out"], (str, os.PathLike)):
        raise TypeError(f"out must be a folder path, got {settings['out']!r}")
    check_writable_folder(settings["out"], "--out")
    check_writable_folder(Path(settings["out"]) / "checkpoints", "--out")
    check_data_dir(settings["data_dir"])
    if isinstance(settings["device"], str):
        check_device(settings["device"])


def _resume_source(settings: dict) -> Path | None:
    """The checkpoint this run continues from (the Trainer's ``resume`` rule), or None."""
    resume = settings["resume"]
    if resume is False:
        return None
    auto = resume is True or resume == "auto"
    path = Path(settings["out"]) / "checkpoints" / "last.pt" if auto else Path(resume)
    if path.is_file():
        return path
    if resume == "auto":
        return None
    raise FileNotFoundError(f"no checkpoint to resume from at {str(path)!r}")


def _same_method(state: dict, settings: dict) -> bool:
    """The checkpoint is of this run's method (else the Trainer refuses it, saying so)."""
    from .ssl.registry import canonical_method_name

    return state.get("method") == canonical_method_name(settings["method"])


def _target_reached(state: dict, settings: dict) -> bool:
    return _same_method(state, settings) and int(state.get("epoch", 0)) >= settings["epochs"]


def _report_reached(state: dict, source: Path, settings: dict, as_json: bool) -> int:
    """An --epochs target the checkpoint has already reached: said, not silently skipped."""
    from .core.distributed import rank

    epoch = int(state.get("epoch", 0))
    message = (
        f"{source} is at epoch {epoch}: --epochs {settings['epochs']} is already reached, "
        "nothing to train (to train on, raise --epochs with --allow-changed-settings: the "
        "schedule then spans the new total; or --no-resume to start afresh)"
    )
    if rank() != 0:
        return 0
    history = state.get("history") or [{}]
    metrics = {key: _plain_number(value) for key, value in history[-1].items()}
    if as_json:
        print(
            json.dumps(
                {"checkpoint": str(source), "epoch": epoch, "metrics": metrics, "message": message}
            )
        )
    else:
        print(message)
    return 0


# Recorded training settings known before any data are read; the rest (steps per epoch, AMP,
# memory format, world size, ...) are resolved by the Trainer and compared once it is built.
EARLY_COMPARED = ("epochs", "seed", "final_lr_factor", "accumulate_steps")


def _check_early_changes(state: dict, settings: dict, source: Path) -> None:
    """Refuse, by the Trainer's rule and message, the differences from the checkpoint's
    settings that show without building the Trainer (the method's defaults resolved by the
    builder the Trainer uses), so that a refused resume reads no data and builds no model."""
    from .ssl.builders import training_settings
    from .ssl.checkpoint import training_changes

    resolved = training_settings(settings["method"], **{k: settings[k] for k in METHOD_DEFAULTED})
    current = {key: settings[key] for key in EARLY_COMPARED}
    current.update({key: getattr(resolved, key) for key in METHOD_DEFAULTED})
    training_changes(state, current, source, settings["allow_changed_settings"], only_given=True)


def _check_inputs(args) -> None:
    """Before any work: one source of vectors or images, the flags that go with it, an
    existing --data-dir and an available --device."""
    from .cli_data import check_data_dir, check_device

    files = getattr(args, "embeddings", None) is not None
    if args.dataset is None and args.data is None and not files:
        raise ValueError(
            "give --dataset NAME or --data PATH"
            + (", or --embeddings FILE" if "embeddings" in vars(args) else "")
        )
    if files and args.checkpoint is not None:
        raise ValueError(
            "--embeddings are used as they are: --checkpoint goes with --dataset or --data"
        )
    if not files and args.checkpoint is None:
        raise ValueError("--dataset and --data need --checkpoint (or give --embeddings)")
    if getattr(args, "labels", None) is not None and not files:
        raise ValueError("--labels goes with --embeddings")
    for name in ("split", "data_dir"):
        if getattr(args, name, None) is not None and args.dataset is None:
            raise ValueError(f"--{name.replace('_', '-')} goes with --dataset")
    check_data_dir(args.data_dir)
    check_device(args.device)


def _load_method(args):
    from .ssl import load_checkpoint

    method, _ = load_checkpoint(args.checkpoint, device=_device(args.device))
    return method


def _embed(method, images, progress: bool):
    from .ssl import embed_dataset

    return embed_dataset(method, images.data, progress=progress)


def _labelled(images, what: str):
    if images.labels is None:
        raise ValueError(
            f"{images.description} has no labels (a folder needs class sub-folders, "
            f"ROOT/CLASS/IMAGE): {what} needs them"
        )
    return images.labels


def _embeddings_and_labels(path: str, labels_path: str | None, flag: str, required: bool):
    """Vectors of ``path`` and their labels: ``labels_path``, or the ``labels`` tensor of a
    .safetensors ``path`` (as ``metricssl embed`` writes)."""
    labels_flag = flag.replace("embeddings", "labels")
    vectors = _load_vectors(path, None, flag)
    labels = None
    if labels_path is not None:
        labels = _load_vectors(labels_path, None, labels_flag, default="labels")
    elif path.lower().endswith(".safetensors") and "labels" in _tensor_names(path):
        labels = _load_vectors(path, "labels", flag)
    elif required:
        raise ValueError(f"{flag} {path} needs {labels_flag} FILE (scores compare labels)")
    if labels is not None and len(labels) != len(vectors):
        raise ValueError(
            f"{labels_flag} has {len(labels)} labels for the {len(vectors)} vectors of {flag}"
        )
    return vectors, labels


def _output_path(text: str, suffixes: tuple[str, ...], flag: str = "--output") -> Path:
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} must end with {' or '.join(suffixes)}, got {text!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_embed_command(args) -> int:
    from .cli_data import checkpoint_images
    from .data.image_data import ImageData
    from .ssl.embed import embed_to_file

    if args.shards is not None:
        return _embed_shards_command(args)
    for flag in ("shard_rows", "dtype"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} goes with --shards")
    path = _output_path(args.output, (".npy", ".safetensors"))
    _check_inputs(args)
    split = args.split or "test"
    method = _load_method(args)
    images = checkpoint_images(method, args, split)
    data = images.data
    if not isinstance(data, ImageData):
        data = ImageData(data, images.labels)  # the labels travel with the batches
    # Written batch by batch: memory stays at one batch however many images there are.
    written = embed_to_file(method, data, path, progress=not args.json)
    shape = [written.rows, written.dim]
    if args.json:
        source = {"split": split} if args.data is None else {"data": args.data}
        print(json.dumps({"output": str(path), **source, "shape": shape}))
    else:
        print(f"wrote {shape[0]} x {shape[1]} embeddings of {images.description} to {path}")
    return 0


def _embed_shards_command(args) -> int:
    """``embed --shards``: this process's share of the images under torchrun (all of them
    alone), on ``cuda:LOCAL_RANK`` with a GPU; rank 0 reports."""
    from .cli_data import checkpoint_images
    from .core.digest import file_digest
    from .core.distributed import training_device
    from .ssl import load_checkpoint
    from .ssl.embed import embed_shards

    _check_inputs(args)
    if Path(args.shards).exists() and not Path(args.shards).is_dir():
        raise ValueError(f"--shards must be a folder, {args.shards!r} is a file")
    split = args.split or "test"
    device = training_device(args.device)
    method, _ = load_checkpoint(args.checkpoint, device=device)
    images = checkpoint_images(method, args, split)
    first = os.environ.get("RANK", "0") == "0"
    done = embed_shards(
        method,
        images.data,
        args.shards,
        shard_rows=args.shard_rows or 65536,
        dtype=args.dtype or "float32",
        device=device,
        progress=not args.json and first,
        encoder_sha256=file_digest(args.checkpoint),
    )
    if not first:
        return 0
    manifest = done.manifest
    if args.json:
        source = {"split": split} if args.data is None else {"data": args.data}
        report = {
            "shards": str(manifest.folder),
            "manifest": str(manifest.path),
            **source,
            "shape": [manifest.count, manifest.dim],
            "dtype": manifest.dtype,
            "parts": len(manifest.shards),
            "parts_written": done.parts_written,
            "parts_kept": done.parts_kept,
        }
        print(json.dumps(report))
    else:
        print(
            f"wrote {manifest.count} x {manifest.dim} {manifest.dtype} embeddings of "
            f"{images.description} to {manifest.path} ({len(manifest.shards)} parts: "
            f"{done.parts_written} written now, {done.parts_kept} kept from before)"
        )
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
    from .cli_data import checkpoint_images
    from .eval import AccuracyCalculator

    _check_inputs(args)
    references = (args.reference_embeddings, args.reference_labels)
    if args.embeddings is None and any(r is not None for r in references):
        raise ValueError("--reference-embeddings and --reference-labels go with --embeddings")
    if args.reference_data is not None and args.data is None:
        raise ValueError("--reference-data goes with --data")
    if args.linear and not (
        args.dataset is not None
        or args.reference_data is not None
        or args.reference_embeddings is not None
    ):
        raise ValueError(
            "--linear fits on training features: give --dataset, --reference-data or "
            "--reference-embeddings"
        )
    reference = reference_labels = None
    if args.embeddings is not None:
        query, query_labels = _embeddings_and_labels(
            args.embeddings, args.labels, "--embeddings", required=True
        )
        if args.reference_embeddings is not None:
            reference, reference_labels = _embeddings_and_labels(
                args.reference_embeddings,
                args.reference_labels,
                "--reference-embeddings",
                required=True,
            )
        elif args.reference_labels is not None:
            raise ValueError("--reference-labels goes with --reference-embeddings")
    else:
        method = _load_method(args)
        # Named datasets: test queries against the training split. Folders: the queries
        # against --reference-data, or against each other (each query's own entry excluded).
        queries = checkpoint_images(method, args, "test")
        query_labels = _labelled(queries, "evaluate")
        query = _embed(method, queries, not args.json)
        if args.dataset is not None or args.reference_data is not None:
            stored = checkpoint_images(method, args, "train", data=args.reference_data)
            reference_labels = _labelled(stored, "evaluate")
            reference = _embed(method, stored, not args.json)
    calculator = AccuracyCalculator(include=tuple(EVALUATE_METRICS), k="max_bin_count")
    scores = calculator.get_accuracy(query, query_labels, reference, reference_labels)
    result = {key: float(scores[name]) for name, key in EVALUATE_METRICS.items()}
    if args.linear:
        from .eval.linear import linear_evaluation

        linear = linear_evaluation(
            reference, reference_labels, query, query_labels, progress=not args.json
        )
        result.update(linear_accuracy=linear.accuracy, linear_weight_decay=linear.weight_decay)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            fmt = ".4g" if key == "linear_weight_decay" else ".4f"  # 1e-05, not 0.0000
            print(f"{key:<{width}}  {value:{fmt}}")
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
    import numpy as np
    from tqdm.auto import tqdm

    from .cli_data import checkpoint_images
    from .viz import project, scatter_plot

    path = _output_path(args.output, (".png",))
    _check_inputs(args)
    if args.embeddings is not None:
        embeddings, labels = _embeddings_and_labels(
            args.embeddings, args.labels, "--embeddings", required=False
        )
        source, class_names = Path(args.embeddings).name, None
    else:
        method = _load_method(args)
        images = checkpoint_images(method, args, args.split or "test")
        embeddings, labels = _embed(method, images, not args.json), images.labels
        source = images.description
        class_names = images.class_names or _class_names(args.dataset)
    # UMAP and t-SNE run for minutes on large sets: the bar shows which step is running.
    with tqdm(total=2, desc=f"plot: {args.method}", unit="step", disable=args.json) as bar:
        points = project(embeddings, method=args.method, seed=args.seed)
        bar.update()
        bar.set_description("plot: draw")
        scatter_plot(
            points,
            None if labels is None else np.asarray(labels),
            path=path,
            title=f"{source}: {args.method}",
            class_names=class_names,
        )
        bar.update()
    if args.json:
        print(json.dumps({"output": str(path), "points": len(points)}))
    else:
        print(f"wrote {path}")
    return 0


# -- index build / index search ------------------------------------------------------------


def _load_vectors(path_text: str, tensor: str | None, what: str, default: str = "embeddings"):
    """An array from a .npy file (memory-mapped) or a tensor of a .safetensors file: ``tensor``,
    else ``default``, else the file's only tensor."""
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
                if default in names:
                    name = default
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


def _tensor_names(path_text: str) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path_text, framework="pt") as f:
            return list(f.keys())
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
    from .cli_data import checkpoint_images

    from_checkpoint = args.checkpoint is not None
    if args.embeddings is not None and from_checkpoint:
        raise ValueError("give an embeddings file or --checkpoint, not both")
    if not from_checkpoint:
        if args.embeddings is None:
            raise ValueError("give an embeddings file, or --checkpoint and --dataset or --data")
        for name in ("dataset", "data", "split", "data_dir"):
            if getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} goes with --checkpoint, not with an embeddings file")
        return _load_vectors(args.embeddings, args.tensor, "embeddings"), args.embeddings
    if args.dataset is None and args.data is None:
        raise ValueError("--checkpoint needs --dataset or --data")
    if args.dataset is not None and args.data is not None:
        raise ValueError("give --dataset or --data, not both")
    if args.tensor is not None:
        raise ValueError("--tensor is for a .safetensors embeddings file, not --checkpoint")
    _check_inputs(args)
    method = _load_method(args)
    images = checkpoint_images(method, args, args.split or "train")
    return _embed(method, images, not args.json), f"{args.checkpoint} on {images.description}"


def _build_ondisk_command(args) -> int:
    from .index.ondisk import build_ondisk

    for name in ("embeddings", "checkpoint", "dataset", "data", "ids", "tensor", "split"):
        if getattr(args, name) is not None:
            flag = name if name == "embeddings" else "--" + name
            raise ValueError(f"{flag} does not go with --from-shards (the shards hold the ids)")
    if args.kind in ("flat", "hnsw"):
        raise ValueError(f"--kind {args.kind}: --from-shards builds ivf_pq or ivf_flat")
    meta = build_ondisk(
        args.from_shards,
        args.output,
        kind=None if args.factory else (args.kind or "ivf_pq"),
        metric=args.metric,
        factory=args.factory,
        nlist=args.nlist,
        m=args.m,
        nbits=args.nbits,
        nprobe=args.nprobe,
        train_size=args.train_size,
        memory_budget_mb=args.memory_budget_mb,
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for all
        return 0
    if args.json:
        print(json.dumps({"output": args.output, "source": args.from_shards, **meta}))
    else:
        print(
            f"wrote {args.output}: {meta['ntotal']} x {meta['dim']} vectors, kind "
            f"{meta['kind']} ({meta['factory']}), metric {meta['metric']}, lists on disk"
        )
    return 0


def run_index_build_command(args) -> int:
    from .index import EmbeddingIndex

    if args.from_shards is not None:
        return _build_ondisk_command(args)
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


def _load_index(args, progress):
    """The index file ``args.index``, with the search settings given on the command line."""
    from .index import EmbeddingIndex
    from .index.ondisk import open_ondisk

    if Path(args.index).is_dir():  # an on-disk index (index build --from-shards)
        if args.ef_search is not None:
            raise ValueError("--ef-search is for HNSW; an on-disk index is IVF (--nprobe)")
        return open_ondisk(args.index, nprobe=args.nprobe, progress=progress)
    if not Path(args.index).is_file():
        raise FileNotFoundError(f"no index file at {args.index!r}")
    index = EmbeddingIndex.load(args.index, progress=progress)
    if args.nprobe is not None:
        index.nprobe = args.nprobe
    if args.ef_search is not None:
        index.ef_search = args.ef_search
    return index


def run_index_search_command(args) -> int:
    import numpy as np

    output = None
    if args.output is not None:
        output = _output_path(args.output, (".npy", ".npz", ".json"))
    index = _load_index(args, progress=False if args.json else None)
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


# -- search ---------------------------------------------------------------------------------


def run_search_command(args) -> int:
    import math

    import numpy as np
    import torch

    from .cli_data import check_device, checkpoint_images
    from .core.atomic import atomic_write

    out = None if args.out is None else _output_path(args.out, (".json",), "--out")
    grid = None if args.grid is None else _output_path(args.grid, (".png",), "--grid")
    if grid is not None and args.data is None:
        raise ValueError("--grid draws the neighbours: give --data, the images the index holds")
    for image in args.images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"no image file at {image!r}")
    if not Path(args.index).is_file():
        raise FileNotFoundError(f"no index file at {args.index!r}")
    check_device(args.device)
    method = _load_method(args)
    index = _load_index(args, progress=False)
    stored = None if args.data is None else checkpoint_images(method, args, "train")
    queries = checkpoint_images(method, args, "test", data=list(args.images))
    distances, ids = index.search(_embed(method, queries, False), args.k)
    distances, ids = np.asarray(distances.cpu()), np.asarray(ids.cpu())
    if stored is not None and ids.max(initial=-1) >= len(stored.data):
        raise ValueError(
            f"index id {int(ids.max())} is beyond the {len(stored.data)} images of --data "
            f"{args.data}: give the images the index was built from (index build --data)"
        )
    results = []
    for path, row_ids, row_distances in zip(args.images, ids, distances):
        neighbours = []
        for i, d in zip(row_ids.tolist(), row_distances.tolist()):
            if i < 0:
                continue  # not found by an approximate index
            entry = {"id": i, "distance": d if math.isfinite(d) else None}
            if stored is not None:
                entry["path"] = None if stored.paths is None else stored.paths[i]
                label = None if stored.labels is None else int(stored.labels[i])
                names = stored.class_names
                entry["label"] = names[label] if names and label is not None else label
            neighbours.append(entry)
        results.append({"image": path, "neighbours": neighbours})
    payload = {
        "checkpoint": args.checkpoint,
        "index": args.index,
        "metric": index.metric,
        "k": args.k,
        "queries": results,
    }
    if grid is not None:
        from .viz import retrieval_grid

        query_images = _all_images(queries.data)
        found = torch.from_numpy(np.maximum(ids, 0)).flatten()
        neighbour_images = _all_images(stored.data, found).view(*ids.shape, *query_images.shape[1:])
        neighbour_images[torch.from_numpy(ids < 0)] = 0  # not found: a blank square
        retrieval_grid(
            query_images, neighbour_images, None, None, grid, title=Path(args.index).name
        )
    if out is None:
        print(json.dumps(payload))
        return 0
    with atomic_write(out, "w") as f:
        json.dump(payload, f, indent=1)
    queries_text = "1 query" if len(results) == 1 else f"{len(results)} queries"
    print(f"wrote the neighbours of {queries_text} to {out}")
    if grid is not None:
        print(f"wrote {grid}")
    return 0


def _all_images(data, indices=None):
    """The prepared images of ``data`` (ImageData) at ``indices`` (default all), in order."""
    import torch

    indices = torch.arange(len(data)) if indices is None else indices
    return torch.cat([images for images, _ in data.batches(indices, 256)])


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
    "search": run_search_command,
    "bench": run_bench_command,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # As under `python -m`: a --backbone package.module:attr, and a checkpoint that rebuilds
    # one (export, embed, evaluate, ...), imports from the folder the command runs in; after
    # the installed packages, which keep precedence.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
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
