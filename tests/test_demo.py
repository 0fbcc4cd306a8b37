"""``metricssl.demo``: SimCLR without labels -> index -> queries -> scores -> pictures, on a
tiny budget."""

from pathlib import Path

import matplotlib.image
import pytest
import torch

from metricssl import demo
from metricssl.demo import METRICS, DigitsCNN, run_demo


def test_digits_end_to_end_writes_table_and_pictures(tmp_path):
    lines = []
    result = run_demo(epochs=1, out=tmp_path, progress=False, echo=lines.append)
    text = "\n".join(lines)

    header = next(line for line in lines if line.startswith("test vs train"))
    assert all(m in header for m in METRICS)
    for name in ("raw pixels", "metricssl"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert [float(v) for v in row[len(name) :].split()] == pytest.approx(
            [result.scores[name][m] for m in METRICS], abs=1e-4
        )
        assert all(0 <= result.scores[name][m] <= 1 for m in METRICS)
    assert "SimCLR" in text and "raw pixels' 0.9833" in text  # raw pixels' P@1 on this split
    assert result.method == "simclr" and result.epochs == 1 and result.train_seconds > 0

    assert len(result.examples) == 3
    for example in result.examples:
        assert len(example["neighbours"]) == len(example["labels"]) == 5
        assert f"query {example['query']} (label {example['label']})" in text

    assert set(result.pictures) == {"UMAP picture", "retrieval grid"}
    for path in result.pictures.values():
        assert path in text and Path(path).parent == tmp_path
        image = matplotlib.image.imread(path)  # a readable PNG, not just a file
        assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0


def test_training_never_sees_labels_and_still_learns_the_classes(monkeypatch):
    from metricssl.ssl import trainer

    seen = []

    class Spy(trainer.Trainer):
        def __init__(self, method, dataset, **kwargs):
            seen.append(dataset)
            super().__init__(method, dataset, **kwargs)

    monkeypatch.setattr(trainer, "Trainer", Spy)
    result = run_demo(epochs=8, plots=False, progress=False, echo=lambda *_: None)
    assert len(seen) == 1
    images, labels = seen[0]
    assert labels is None and images.shape == (1438, 1, 8, 8)
    # Eight epochs already group each class better than raw pixels do (MAP@R ranks all of a
    # query's class-mates, where raw pixels are weak); the full run is what beats raw
    # pixels' P@1.
    ours, raw = result.scores["metricssl"], result.scores["raw pixels"]
    assert ours["mean_average_precision_at_r"] > raw["mean_average_precision_at_r"]
    assert ours["precision_at_1"] > 0.9


def test_fashion_mnist_path_on_a_slice(monkeypatch):
    # The same path on 28x28 images (SmallCNN, the 28-pixel recipe), on a slice of the real
    # set so that it takes seconds.
    from metricssl.data import load_fashion_mnist

    try:
        load_fashion_mnist(split="test", progress=False)
    except (FileNotFoundError, OSError):
        pytest.skip("Fashion-MNIST is not installed (Debian's dataset-fashion-mnist)")

    def small_split(dataset, split, data_dir=None):
        images, labels = load_fashion_mnist(root=data_dir, split=split, progress=False)
        n = 600 if split == "train" else 200
        return images[:n], labels[:n]

    monkeypatch.setattr(demo, "load_split", small_split)
    lines = []
    result = run_demo("fashion-mnist", epochs=1, plots=False, progress=False, echo=lines.append)
    assert result.dataset == "fashion-mnist" and result.pictures == {}
    assert "fashion-mnist: 600 training and 200 test images of 28x28 pixels" in lines
    assert any(line.startswith("metricssl ") for line in lines)
    assert result.scores["metricssl"]["precision_at_1"] > 0.3  # ten classes: chance is 0.1


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"dataset": "cifar"}, ValueError),
        ({"epochs": 0}, ValueError),
        ({"epochs": 2.5}, TypeError),
        ({"epochs": True}, TypeError),
        ({"seed": -1}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name):
        run_demo(plots=False, progress=False, echo=lambda *_: None, **kwargs)


def test_digits_cnn_keeps_the_layout():
    net = DigitsCNN(width=8)
    assert net(torch.rand(3, 1, 8, 8)).shape == (3, net.num_features) == (3, 128)
    with pytest.raises(ValueError, match="8, 8"):
        net(torch.rand(3, 1, 28, 28))
