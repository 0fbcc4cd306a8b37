"""``metricssl demo``: from unlabelled images to search, on a small data set, in minutes on a CPU.

Train SimCLR on the training images without their labels (:class:`~metricssl.ssl.Trainer`
running the :class:`~metricssl.ssl.SimCLR` method with its augmentation recipe and a backbone
sized for the images), embed the data, build a FAISS index, show a few queries with their
neighbours, score test queries against training references next to raw pixels (the same
protocol for both; labels are used only here), and draw a UMAP picture and a retrieval grid.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .core.validation import check_choice, check_number
from .models.small_cnn import SmallCNN, conv_bn_relu

DATASETS = ("digits", "fashion-mnist")
METRICS = ("precision_at_1", "mean_average_precision_at_r", "knn_accuracy_weighted", "NMI")


@dataclass
class DemoResult:
    dataset: str
    train_seconds: float
    scores: dict[str, dict[str, float]]  # {"raw pixels": {...}, "metricssl": {...}}
    examples: list[dict] = field(default_factory=list)
    pictures: dict[str, str] = field(default_factory=dict)
    method: str = "simclr"
    epochs: int = 0


class DigitsCNN(nn.Module):
    """Three 3x3 conv + BatchNorm + ReLU layers for 8x8 digits, flattened (no pooling).

    :class:`~metricssl.models.SmallCNN` halves the image in its first layer and pools to
    1x1, which on 8x8 digits throws away where the strokes are; here the first layer keeps
    the full 8x8 grid and the last (2x2) map is flattened, so the features keep the layout.

    Args:
        width: channels of the first layer (then 2x and 4x); ``num_features = 16 * width``.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(1, width, stride=1),
            *conv_bn_relu(width, 2 * width, stride=2),
            *conv_bn_relu(2 * width, 4 * width, stride=2),
        )
        self.num_features = 4 * width * 2 * 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (1, 8, 8):
            raise ValueError(f"DigitsCNN expects (N, 1, 8, 8) images, got {tuple(images.shape)}")
        return torch.flatten(self.features(images), 1)


def _small_cnn() -> nn.Module:
    return SmallCNN(in_channels=1, embedding_dim=128, width=16, pool_size=2)


@dataclass(frozen=True)
class SimCLRSettings:
    """How the demo trains SimCLR on one data set.

    The digits settings were chosen on a validation split carved from the training split
    (never on the test split); batch size, learning rate and temperature are SimCLR's
    Trainer defaults (:data:`metricssl.ssl.METHODS`).
    """

    epochs: int
    backbone: Callable[[], nn.Module]
    views: Mapping = field(default_factory=dict)  # simclr_views keyword arguments
    batch_size: int = 256
    lr: float = 2e-3
    temperature: float = 0.2
    proj_hidden_dim: int = 512
    proj_output_dim: int = 128
    warmup_epochs: float = 1.0


SETTINGS: dict[str, SimCLRSettings] = {
    "digits": SimCLRSettings(
        epochs=200,
        backbone=DigitsCNN,
        # No flip (a mirrored digit is another glyph), no blur (a 3x3 blur wipes out an 8x8
        # digit's strokes) and crops of at least 40% of the image.
        views={"crop_scale": (0.4, 1.0), "flip_p": 0.0, "blur_p": 0.0},
    ),
    # The recipe's defaults for 28x28 images (crop scale (0.2, 1), flip, jitter, blur).
    "fashion-mnist": SimCLRSettings(epochs=3, backbone=_small_cnn, warmup_epochs=0.5),
}


def load_split(dataset: str, split: str, data_dir: str | None = None):
    from . import data

    if dataset == "digits":
        return data.load_digits(split)
    return data.load_fashion_mnist(root=data_dir, split=split)


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0).flatten(1)


def build_simclr(train_images: torch.Tensor, settings: SimCLRSettings):
    """SimCLR with the settings' backbone, heads and views, the views normalised with the
    training images' mean and standard deviation."""
    from .ssl.registry import build_method

    pixels = train_images.float().div_(255.0)
    mean, std = [float(pixels.mean())], [max(float(pixels.std()), 1e-3)]
    return build_method(
        "simclr",
        train_images.shape[1:],
        backbone=settings.backbone(),
        hparams={
            "temperature": settings.temperature,
            "proj_hidden_dim": settings.proj_hidden_dim,
            "proj_output_dim": settings.proj_output_dim,
        },
        mean=mean,
        std=std,
        view_kwargs=settings.views,
    )


def train_simclr(
    method, images: torch.Tensor, settings: SimCLRSettings, epochs: int, seed: int, progress: bool
) -> tuple[float, dict]:
    """Train ``method`` on ``images`` with the Trainer; no labels are given to it.

    Returns the seconds spent and the last epoch's metrics (loss, embedding std, effective
    rank). The Trainer's run folder (checkpoint, log) is temporary.
    """
    from .ssl.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="metricssl-demo-") as run_dir:
        trainer = Trainer(
            method,
            (images, None),
            epochs=epochs,
            batch_size=min(settings.batch_size, len(images)),
            lr=settings.lr,
            warmup_epochs=min(settings.warmup_epochs, epochs / 2),
            out=run_dir,
            seed=seed,
            resume=False,
            progress=False,
            # Collapse diagnostics (std, effective rank) ten times per run, for the bar.
            knn_every=max(1, epochs // 10),
        )
        bar = tqdm(total=epochs, desc="SimCLR", unit="epoch", disable=not progress)
        shown: dict[str, str] = {}
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            row = trainer.fit(epoch)
            shown["loss"] = f"{row['loss']:.3f}"
            if "effective_rank" in row:
                shown["std"] = f"{row['embedding_std']:.2f}"
                shown["erank"] = f"{row['effective_rank']:.1f}"
            bar.set_postfix(shown, refresh=False)
            bar.update()
        seconds = time.perf_counter() - start
        bar.close()
    return seconds, row


def run_demo(
    dataset: str = "digits",
    out: str | Path = "metricssl-demo",
    epochs: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    plots: bool = True,
    progress: bool = True,
    echo=print,
) -> DemoResult:
    """Run the demo and return its numbers; ``echo`` prints the human-readable report.

    Args:
        dataset: ``"digits"`` (scikit-learn's 8x8 digits, about a minute on 2 CPU cores) or
            ``"fashion-mnist"`` (``data_dir``, or the usual places).
        out: folder for the pictures.
        epochs: SimCLR epochs (default: the data set's, see :data:`SETTINGS`).
        seed: seeds the model, the data order and the augmentations.
        plots: write the UMAP picture and the retrieval grid.
        progress: show progress bars.
    """
    from .eval import AccuracyCalculator
    from .index import EmbeddingIndex
    from .ssl.embed import embed_dataset

    check_choice("dataset", dataset, DATASETS)
    check_number("epochs", epochs, low=1, integer=True, allow_none=True)
    check_number("seed", seed, low=0, integer=True)
    settings = SETTINGS[dataset]
    epochs = epochs or settings.epochs
    out = Path(out)
    train_images, train_y = load_split(dataset, "train", data_dir)
    test_images, test_y = load_split(dataset, "test", data_dir)
    echo(
        f"{dataset}: {len(train_images)} training and {len(test_images)} test images of "
        f"{'x'.join(map(str, train_images.shape[2:]))} pixels"
    )
    echo(f"training SimCLR for {epochs} epochs on the training images, without their labels")

    torch.manual_seed(seed)
    method = build_simclr(train_images, settings)
    seconds, last = train_simclr(method, train_images, settings, epochs, seed, progress)
    echo(f"trained in {seconds:.1f} s (final loss {last['loss']:.3f})")
    train_emb, test_emb = (
        torch.nn.functional.normalize(
            embed_dataset(method, images, batch_size=1024, progress=progress), dim=1
        )
        for images in (train_images, test_images)
    )

    index = EmbeddingIndex(train_emb.shape[1], kind="flat", metric="cosine")
    index.add(train_emb)
    _, neighbour_ids = index.search(test_emb, 8)
    examples = []
    for q in range(3):
        ids = neighbour_ids[q, :5].tolist()
        examples.append(
            {
                "query": q,
                "label": int(test_y[q]),
                "neighbours": ids,
                "labels": train_y[ids].tolist(),
            }
        )
        echo(f"query {q} (label {int(test_y[q])}): neighbours' labels {train_y[ids].tolist()}")

    # Test images are the queries and training images the references, for both rows.
    calc = AccuracyCalculator(include=METRICS, k="max_bin_count", progress=progress)
    scores = {
        "raw pixels": calc.get_accuracy(
            as_float(test_images), test_y, as_float(train_images), train_y
        ),
        "metricssl": calc.get_accuracy(test_emb, test_y, train_emb, train_y),
    }
    echo("")
    echo(f"{'test vs train':<16}" + "".join(f"{m:>30}" for m in METRICS))
    for name, row in scores.items():
        echo(f"{name:<16}" + "".join(f"{row[m]:>30.4f}" for m in METRICS))
    ours, raw = scores["metricssl"]["precision_at_1"], scores["raw pixels"]["precision_at_1"]
    verdict = "beats" if ours > raw else "ties" if ours == raw else "does not beat"
    echo(f"metricssl = the SimCLR embedding: its P@1 {ours:.4f} {verdict} raw pixels' {raw:.4f}")

    result = DemoResult(dataset, seconds, scores, examples, method="simclr", epochs=epochs)
    if plots:
        result.pictures = draw(
            out, dataset, test_emb, test_y, test_images, train_images, train_y, neighbour_ids
        )
        echo("")
        for what, path in result.pictures.items():
            echo(f"{what}: {path}")
    return result


def draw(out, dataset, test_emb, test_y, test_images, train_images, train_y, neighbour_ids):
    from . import viz

    names = None
    if dataset == "fashion-mnist":
        from .data import FASHION_MNIST_CLASSES as names
    out.mkdir(parents=True, exist_ok=True)
    points = viz.project(test_emb, method="umap", seed=0)
    scatter = viz.scatter_plot(
        points,
        test_y,
        path=out / "umap.png",
        title=f"{dataset} test set, SimCLR embedding (UMAP)",
        class_names=names,
    )
    # One query per class, with its seven nearest training images.
    queries = [int(torch.nonzero(test_y == c)[0]) for c in torch.unique(test_y)[:10]]
    nn_ids = neighbour_ids[queries, :7]
    grid = viz.retrieval_grid(
        test_images[queries],
        train_images[nn_ids],
        test_y[queries],
        train_y[nn_ids],
        out / "retrieval.png",
        class_names=names,
        title=f"{dataset}: queries and their nearest training images (SimCLR)",
    )
    return {"UMAP picture": str(scatter), "retrieval grid": str(grid)}
