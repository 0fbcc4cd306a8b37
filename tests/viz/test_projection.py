import sys

import numpy as np
import pytest
import torch

from metricssl.viz.projection import project


def blobs(n_per_class=30, n_classes=3, dim=16, spread=20.0, seed=0):
    """Well-separated Gaussian clusters: any sane projection keeps them apart."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, dim, generator=g) * spread
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = centers[labels] + torch.randn(len(labels), dim, generator=g)
    return x, labels.numpy()


def knn_agreement(points, labels, k=5):
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return (labels[nn] == labels[:, None]).mean()


@pytest.mark.parametrize("method", ["pca", "umap", "tsne"])
def test_shape_dtype_determinism_and_quality(method):
    x, y = blobs()
    a = project(x, method, seed=3)
    b = project(x.numpy(), method, seed=3)  # numpy input, same seed -> same result
    assert a.shape == (len(x), 2) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert knn_agreement(a, y) > 0.95
    if method != "pca":  # PCA has no randomness to seed
        assert not np.allclose(a, project(x, method, seed=4))


def test_pca_matches_svd_up_to_sign():
    x = torch.randn(200, 10, dtype=torch.float64) @ torch.diag(torch.arange(10, 0, -1.0).double())
    p = project(x, "pca", n_components=3)
    xc = x.numpy() - x.numpy().mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    expected = u[:, :3] * s[:3]
    signs = np.sign((p * expected).sum(0))
    np.testing.assert_allclose(p * signs, expected, rtol=1e-4, atol=1e-4)


def test_pca_cosine_normalises_rows():
    x = torch.randn(50, 8)
    scaled = x * torch.rand(50, 1).mul(10).add(0.1)  # row scale must not matter for cosine
    np.testing.assert_allclose(
        project(x, "pca", metric="cosine"), project(scaled, "pca", metric="cosine"), atol=1e-4
    )


def test_low_precision_tensor_and_three_components():
    x, _ = blobs(n_per_class=20)
    assert project(x.to(torch.bfloat16), "pca").shape == (60, 2)
    assert project(x.half(), "tsne", n_components=3).shape == (60, 3)


def test_tiny_input_gets_lowered_perplexity_and_neighbours():
    x = torch.randn(5, 4)
    assert project(x, "tsne").shape == (5, 2)
    assert project(x, "umap").shape == (5, 2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="isomap"), ValueError, "method"),
        (dict(metric="manhattan"), ValueError, "metric"),
        (dict(n_components=0), ValueError, "n_components"),
        (dict(n_components=2.0), TypeError, "n_components"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(perplexity=0), ValueError, "perplexity"),
        (dict(n_neighbors=1), ValueError, "n_neighbors"),
        (dict(n_jobs=0), ValueError, "n_jobs"),
        (dict(verbose=1), TypeError, "verbose"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        project(torch.randn(20, 4), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="2D"):
        project(torch.randn(20), "pca")
    with pytest.raises(ValueError, match="2D"):
        project(torch.randn(4, 5, 6), "pca")
    with pytest.raises(ValueError, match="at least 3"):
        project(torch.randn(2, 4), "pca")
    x = torch.randn(20, 4)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        project(x, "pca")
    with pytest.raises(ValueError, match="NaN"):
        project(np.full((20, 4), np.inf), "tsne")
    with pytest.raises(ValueError, match="n_components=5"):
        project(torch.randn(20, 4), "pca", n_components=5)
    with pytest.raises(TypeError, match="numbers"):
        project(np.array([["a", "b"]] * 5), "pca")


@pytest.mark.parametrize("method, module", [("umap", "umap"), ("tsne", "openTSNE")])
def test_missing_optional_package_names_the_extra(monkeypatch, method, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=r"metricssl\[viz\]"):
        project(torch.randn(20, 4), method)


@pytest.mark.gpu
def test_cuda_tensor_gives_the_cpu_result():
    x, _ = blobs(n_per_class=10)
    np.testing.assert_allclose(project(x.cuda(), "pca"), project(x, "pca"), atol=1e-5)
