"""``metricssl demo``: the whole path on a small data set, in about a minute on a laptop CPU.

Train an embedding with a PML-style loss and miner, embed the data, build a FAISS index, show
a few queries with their neighbours, evaluate against raw pixels, and draw a UMAP picture and
a retrieval grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import losses, miners

DATASETS = ("digits", "fashion-mnist")
METRICS = ("precision_at_1", "mean_average_precision_at_r", "knn_accuracy_weighted", "NMI")


@dataclass
class DemoResult:
    dataset: str
    train_seconds: float
    scores: dict[str, dict[str, float]]  # {"raw pixels": {...}, "metricssl": {...}}
    examples: list[dict] = field(default_factory=list)
    pictures: dict[str, str] = field(default_factory=dict)


def load_split(dataset: str, split: str, data_dir: str | None = None):
    from . import data

    if dataset == "digits":
        return data.load_digits(split)
    return data.load_fashion_mnist(root=data_dir, split=split)


def embedding_net(in_features: int, embedding_dim: int = 64) -> torch.nn.Module:
    """A small MLP: enough for 8x8 digits and Fashion-MNIST on a CPU in seconds."""
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(in_features, 512),
        torch.nn.BatchNorm1d(512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 256),
        torch.nn.BatchNorm1d(256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, embedding_dim),
    )


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0).flatten(1)


@torch.no_grad()
def embed(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return torch.nn.functional.normalize(out, dim=1)


def train(model, x, y, epochs: int, batch_size: int, seed: int, progress: bool) -> float:
    """Multi-similarity loss on multi-similarity-mined pairs (Wang et al., CVPR 2019), the
    recipe PML's examples use; returns seconds spent."""
    g = torch.Generator().manual_seed(seed)
    loss_fn = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    miner = miners.MultiSimilarityMiner(epsilon=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * max(1, len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="train", disable=not progress)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            emb = model(x[idx])
            loss = loss_fn(emb, y[idx], miner(emb, y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return time.perf_counter() - start


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
    """Run the demo and return its numbers; ``echo`` prints the human-readable report."""
    from .eval import AccuracyCalculator
    from .index import EmbeddingIndex

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    torch.manual_seed(seed)
    out = Path(out)
    train_images, train_y = load_split(dataset, "train", data_dir)
    test_images, test_y = load_split(dataset, "test", data_dir)
    train_x, test_x = as_float(train_images), as_float(test_images)
    echo(
        f"{dataset}: {len(train_x)} training and {len(test_x)} test images, {train_x.shape[1]} pixels"
    )

    model = embedding_net(train_x.shape[1])
    epochs = epochs or (20 if dataset == "digits" else 5)
    seconds = train(model, train_x, train_y, epochs, batch_size=256, seed=seed, progress=progress)
    train_emb, test_emb = embed(model, train_x), embed(model, test_x)
    echo(f"trained {epochs} epochs in {seconds:.1f} s")

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

    calc = AccuracyCalculator(include=METRICS, k="max_bin_count", progress=False)
    scores = {
        "raw pixels": calc.get_accuracy(test_x, test_y, train_x, train_y),
        "metricssl": calc.get_accuracy(test_emb, test_y, train_emb, train_y),
    }
    echo("")
    echo(f"{'test vs train':<16}" + "".join(f"{m:>30}" for m in METRICS))
    for name, row in scores.items():
        echo(f"{name:<16}" + "".join(f"{row[m]:>30.4f}" for m in METRICS))

    result = DemoResult(dataset, seconds, scores, examples)
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
        title=f"{dataset} test set, metricssl embedding (UMAP)",
        class_names=names,
    )
    # One query per class, with its seven nearest training images.
    queries = [int(torch.nonzero(test_y == c)[0]) for c in torch.unique(test_y)[:8]]
    nn = neighbour_ids[queries, :7]
    grid = viz.retrieval_grid(
        test_images[queries],
        train_images[nn],
        test_y[queries],
        train_y[nn],
        out / "retrieval.png",
        class_names=names,
        title=f"{dataset}: queries and their nearest training images",
    )
    return {"UMAP picture": str(scatter), "retrieval grid": str(grid)}
