"""SmallCNN: shapes for 28x28 and 8x8 images, training step, errors."""

import pytest
import torch

from metricssl.models.embedder import infer_num_features
from metricssl.models.small_cnn import SmallCNN


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape(size, in_channels):
    net = SmallCNN(in_channels=in_channels, embedding_dim=24, width=4)
    out = net(torch.randn(3, in_channels, size, size))
    assert out.shape == (3, 24)
    assert net.num_features == 24
    assert infer_num_features(net, (in_channels, size, size)) == 24
    assert (out >= 0).all()  # pooled ReLU features


def test_pool_size_keeps_the_layout_of_the_last_map():
    net = SmallCNN(embedding_dim=6, width=4, pool_size=2).eval()
    x = torch.randn(2, 1, 28, 28)
    out = net(x)
    assert out.shape == (2, 24) and net.num_features == 24
    last_map = net.features(x)  # (2, 6, 4, 4): the 2x2 cells are its quadrants
    cells = out.view(2, 6, 2, 2)
    torch.testing.assert_close(cells[..., 0, 1], last_map[..., :2, 2:].mean((2, 3)))
    torch.testing.assert_close(cells[..., 1, 0], last_map[..., 2:, :2].mean((2, 3)))


def test_default_layout_and_cost():
    net = SmallCNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128]
    assert [c.stride[0] for c in convs] == [2, 1, 2, 2]
    # Multiply-adds for one 28x28 image: the "fast on 2 CPU cores" budget of the design.
    size, macs = 28, 0
    for c in convs:
        size = (size + 2 - 3) // c.stride[0] + 1
        macs += size * size * c.out_channels * c.in_channels * 9
    assert macs < 12e6


def test_a_training_step_changes_the_output_and_gradients_are_finite():
    torch.manual_seed(0)
    net = SmallCNN(width=8, embedding_dim=16)
    x = torch.randn(8, 1, 28, 28)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net(x).detach()
    loss = net(x).pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    opt.step()
    assert not torch.allclose(net(x).detach(), before)


def test_eval_mode_is_deterministic_per_sample():
    net = SmallCNN(width=4, embedding_dim=8).eval()
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(net(x)[2:3], net(x[2:3]))


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(in_channels=0), ValueError),
        (dict(embedding_dim=1.5), TypeError),
        (dict(width=-1), ValueError),
        (dict(pool_size=0), ValueError),
        (dict(pool_size=2.0), TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        SmallCNN(**kwargs)


def test_bad_input_shape():
    net = SmallCNN(in_channels=1, width=4)
    with pytest.raises(ValueError, match="expects images"):
        net(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="expects images"):
        net(torch.randn(2, 28, 28))
