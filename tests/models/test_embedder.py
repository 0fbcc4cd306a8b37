"""Embedder and infer_num_features: the backbone contract."""

import pytest
import torch
from torch import nn

from metricssl.models.embedder import Embedder, infer_num_features
from metricssl.models.heads import ProjectionHead
from metricssl.models.small_cnn import SmallCNN


def plain_backbone():
    return nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def test_infer_from_attribute_and_dry_run():
    assert infer_num_features(SmallCNN(embedding_dim=12, width=2), (1, 8, 8)) == 12
    net = plain_backbone().train()
    assert infer_num_features(net, (1, 10, 10)) == 6
    assert net.training  # mode restored
    before = net[1].running_mean.clone()
    infer_num_features(net, (1, 10, 10))
    assert torch.equal(net[1].running_mean, before)  # eval mode: no statistics update


def test_infer_uses_the_parameters_dtype():
    net = plain_backbone().double()
    assert infer_num_features(net, (1, 5, 5)) == 6


def test_infer_rejects_bad_backbones_and_shapes():
    with pytest.raises(TypeError):
        infer_num_features(lambda x: x, (1, 4, 4))
    with pytest.raises(ValueError, match="features"):
        infer_num_features(nn.Identity(), (1, 4, 4))  # returns 4D images
    with pytest.raises(ValueError, match="input_shape"):
        infer_num_features(plain_backbone(), (4, 4))
    bad = plain_backbone()
    bad.num_features = 0
    with pytest.raises(ValueError, match="num_features"):
        infer_num_features(bad, (1, 4, 4))


def test_embedder():
    model = Embedder(SmallCNN(embedding_dim=16, width=2), ProjectionHead(16, 8, 4), normalize=True)
    out = model(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 4) and model.num_features == 4
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    bare = Embedder(SmallCNN(embedding_dim=16, width=2))
    assert bare.num_features == 16 and bare(torch.randn(2, 1, 8, 8)).shape == (2, 16)
    assert Embedder(plain_backbone()).num_features is None


def test_embedder_bad_arguments():
    with pytest.raises(TypeError):
        Embedder("resnet")
    with pytest.raises(TypeError):
        Embedder(plain_backbone(), head=lambda x: x)
    with pytest.raises(TypeError):
        Embedder(plain_backbone(), normalize=1)
