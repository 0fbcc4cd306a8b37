import os

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
import matplotlib.image as mpimg  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from metricssl.viz.scatter import scatter_plot  # noqa: E402


def three_clusters(n=300):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    return centers[labels] + rng.normal(size=(n, 2)), labels


def pixels_near(image, rgb, tol=0.08):
    return int((np.abs(image[..., :3] - np.asarray(rgb)[:3]).max(axis=-1) < tol).sum())


def test_writes_a_png_with_each_class_colour(tmp_path):
    points, labels = three_clusters()
    out = scatter_plot(
        torch.from_numpy(points),
        torch.from_numpy(labels),
        path=tmp_path / "scatter.png",
        title="three clusters",
        class_names=["zero", "one", "two"],
        alpha=1.0,
    )
    assert out == tmp_path / "scatter.png" and out.stat().st_size > 0
    image = mpimg.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert (image[..., :3] < 0.95).any()  # something besides white background
    for colour in colormaps["tab10"](np.arange(3)):
        assert pixels_near(image, colour) > 50
    # a fourth tab10 colour is not used by three classes
    assert pixels_near(image, colormaps["tab10"](3)) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["scatter.png"]  # no temp file left


def test_unlabelled_many_classes_and_string_labels(tmp_path):
    points, _ = three_clusters()
    scatter_plot(points, path=tmp_path / "a.png")
    many = np.arange(len(points)) % 70  # > 60 colours and > max_legend_classes
    scatter_plot(points, many, path=tmp_path / "b.png")
    names = np.array(["cat", "dog", "eel"])[np.arange(len(points)) % 3]
    scatter_plot(points, names, path=tmp_path / "sub" / "c.png", class_names={"cat": "Cat"})
    for name in ("a.png", "b.png", "sub/c.png"):
        assert mpimg.imread(tmp_path / name).size > 0


def test_large_input_uses_small_markers(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(20_000, 2))
    out = scatter_plot(points, rng.integers(0, 10, 20_000), path=tmp_path / "big.png", dpi=60)
    assert mpimg.imread(out).size > 0


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        scatter_plot(np.zeros((5, 2)), path=target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.png"]


def test_errors(tmp_path):
    pts = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        scatter_plot(np.zeros((10, 3)), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        scatter_plot(np.zeros((0, 2)), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        scatter_plot(np.full((10, 2), np.nan), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        scatter_plot(pts, np.zeros(9, dtype=int), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\.png"):
        scatter_plot(pts, path=tmp_path / "x.jpg")
    with pytest.raises(TypeError, match="path"):
        scatter_plot(pts, path=3)
    with pytest.raises(ValueError, match="class_names"):
        scatter_plot(pts, np.arange(10), path=tmp_path / "x.png", class_names=["a"])
    with pytest.raises(ValueError, match="alpha"):
        scatter_plot(pts, path=tmp_path / "x.png", alpha=2.0)
    with pytest.raises(ValueError, match="figsize"):
        scatter_plot(pts, path=tmp_path / "x.png", figsize=(0, 3))
    with pytest.raises(TypeError):
        scatter_plot(pts)  # path is required
    assert not (tmp_path / "x.png").exists()
