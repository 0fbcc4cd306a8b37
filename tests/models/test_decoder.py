"""ConvDecoder: output shapes for any image size, layout, gradients, errors."""

import pytest
import torch

from metricssl.models.decoder import ConvDecoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "in_features, shape",
    [
        (128, (1, 8, 8)),
        (512, (1, 28, 28)),
        (64, (3, 32, 32)),
        (16, (3, 30, 13)),  # stages overshoot: the interpolation trims to the exact size
        (8, (2, 5, 7)),  # below 8 px: no upsampling stage
        (8, (1, 1, 1)),
    ],
)
def test_output_shape(in_features, shape):
    decoder = ConvDecoder(in_features, shape, width=4)
    out = decoder(torch.randn(3, in_features))
    assert out.shape == (3, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "size, grid, stages", [(8, (4, 4), 1), (28, (7, 7), 2), (32, (4, 4), 3), (64, (4, 4), 4)]
)
def test_grid_and_stages(size, grid, stages):
    decoder = ConvDecoder(10, (1, size, size), width=4)
    assert decoder.grid_size == grid and decoder.num_stages == stages
    convs = [m for m in decoder.stages if isinstance(m, torch.nn.Conv2d)]
    # Channels halve stage by stage down to width, starting at most at 4 * width.
    expected = [4 * 2 ** min(stages - i, 2) for i in range(1, stages + 1)]
    assert [c.out_channels for c in convs] == expected
    # Exact multiples of the grid need no interpolation: the stages land on the size.
    assert grid[0] * 2**stages == size


def test_output_is_unbounded_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    decoder = ConvDecoder(6, (1, 8, 8), width=4)
    out = decoder(torch.randn(5, 6))
    # A linear last layer (no ReLU, sigmoid or tanh): normalised images have values of both
    # signs and outside [0, 1].
    assert out.min() < 0
    with torch.no_grad():
        decoder.to_image.bias.fill_(5.0)
        assert (decoder(torch.randn(5, 6)) > 1).all()
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


def test_learns_to_reconstruct_a_few_images():
    torch.manual_seed(0)
    codes, images = torch.randn(8, 12), torch.randn(8, 1, 8, 8)
    decoder = ConvDecoder(12, (1, 8, 8), width=8)
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (decoder(codes) - images).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"in_features": 0, "output_shape": (1, 8, 8)}, ValueError, "in_features"),
        ({"in_features": 2.5, "output_shape": (1, 8, 8)}, TypeError, "in_features"),
        ({"in_features": 4, "output_shape": (8, 8)}, ValueError, "output_shape"),
        ({"in_features": 4, "output_shape": (1, 0, 8)}, ValueError, r"output_shape\[1\]"),
        ({"in_features": 4, "output_shape": "1x8x8"}, ValueError, "output_shape"),
        ({"in_features": 4, "output_shape": (1, 8, 8), "width": 0}, ValueError, "width"),
    ],
)
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ConvDecoder(**kwargs)


def test_input_shape_error():
    decoder = ConvDecoder(4, (1, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        decoder(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        decoder(torch.randn(2, 4, 1))
