"""Projection, prediction and prototype heads: layouts of the papers, behaviour, errors."""

import pytest
import torch
from torch import nn

from metricssl.models.heads import PredictionHead, ProjectionHead, PrototypesHead


def kinds(module):
    return [type(m).__name__ for m in module.layers]


def test_projection_layouts():
    assert kinds(ProjectionHead(8, 16, 4)) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert kinds(ProjectionHead(8, 16, 4, batch_norm=False)) == ["Linear", "ReLU", "Linear"]
    simsiam = ProjectionHead(8, 16, 4, num_layers=3, last_bn=True)
    assert kinds(simsiam) == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d",
    ]  # fmt: skip
    assert not simsiam.layers[-1].affine
    assert simsiam.layers[-2].bias is None  # followed by BatchNorm
    assert ProjectionHead(8, 16, 4).layers[0].bias is None
    assert ProjectionHead(8, 16, 4, batch_norm=False).layers[0].bias is not None
    assert kinds(ProjectionHead(8, 16, 4, num_layers=1)) == ["Linear"]
    assert ProjectionHead(8, 16, 4, num_layers=1).layers[0].in_features == 8


def test_projection_forward_and_last_bn_standardises():
    head = ProjectionHead(8, 32, 6, num_layers=3, last_bn=True)
    out = head(torch.randn(64, 8))
    assert out.shape == (64, 6)
    torch.testing.assert_close(out.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, correction=0), torch.ones(6), atol=1e-3, rtol=0)


def test_prediction_head():
    head = PredictionHead(16, 8, 16)
    assert kinds(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.randn(4, 16)).shape == (4, 16)


def test_prototypes_are_cosines_and_normalize_in_place():
    torch.manual_seed(0)
    protos = PrototypesHead(8, 5)
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(5))
    x = torch.randn(7, 8) * 10
    scores = protos(x)
    assert scores.shape == (7, 5) and scores.abs().max() <= 1 + 1e-6
    expected = nn.functional.cosine_similarity(x[:, None], protos.weight[None], dim=2)
    torch.testing.assert_close(scores, expected)
    with torch.no_grad():
        protos.weight.mul_(3.0)
    torch.testing.assert_close(protos(x), scores)  # scores ignore the stored norms
    protos.normalize_()
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(5))
    protos(x).sum().backward()
    assert protos.weight.grad is not None


@pytest.mark.parametrize(
    "make, exc",
    [
        (lambda: ProjectionHead(0, 8, 4), ValueError),
        (lambda: ProjectionHead(8, 8, 4, num_layers=0), ValueError),
        (lambda: ProjectionHead(8, 8, 4, num_layers=2.0), TypeError),
        (lambda: ProjectionHead(8, 8, 4, batch_norm="yes"), TypeError),
        (lambda: ProjectionHead(8, 8, 4, last_bn=None), TypeError),
        (lambda: PredictionHead(8, 0, 8), ValueError),
        (lambda: PrototypesHead(8, 0), ValueError),
        (lambda: PrototypesHead(True, 3), TypeError),
    ],
)
def test_bad_arguments(make, exc):
    with pytest.raises(exc):
        make()


@pytest.mark.parametrize(
    "head", [ProjectionHead(8, 8, 4), PredictionHead(8, 8, 8), PrototypesHead(8, 3)]
)
def test_bad_input_width(head):
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        head(torch.randn(4, 6))
