"""RotNet: rotation labels, the loss and accuracy, resume, the recipe, construction errors."""

import pytest
import torch
from torch import nn

from metricssl.models.heads import ProjectionHead
from metricssl.models.small_cnn import SmallCNN
from metricssl.ssl.method import Batch
from metricssl.ssl.registry import build_method
from metricssl.ssl.rotnet import RotNet, rotate_batch, rotnet_heads, rotnet_views
from tests.ssl.pretext_checks import train_and_record

SMALL = {"head_hidden_dim": 32}


def make(all_rotations=True, seed=0, size=8):
    torch.manual_seed(seed)
    backbone = SmallCNN(1, embedding_dim=16, width=8)
    heads = rotnet_heads(16, {"head_hidden_dim": 32, "head_num_layers": 2})
    return RotNet(backbone, **heads, all_rotations=all_rotations, input_shape=(1, size, size))


def marked_images(n=3, size=5):
    # Distinct, asymmetric images: no rotation of one equals another or itself.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g)
    x[:, :, 0, 0] = 10.0  # a marker in the top-left corner
    return x


def test_all_rotations_are_counter_clockwise_quarter_turns_with_their_labels():
    x = marked_images()
    rotated, labels = rotate_batch(x, all_rotations=True)
    assert rotated.shape == (12, 1, 5, 5)
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # Where the top-left marker goes under k counter-clockwise quarter turns.
    corner = {0: (0, 0), 1: (4, 0), 2: (4, 4), 3: (0, 4)}
    for row, k in enumerate(labels.tolist()):
        r, c = corner[k]
        assert rotated[row, 0, r, c] == 10.0
        assert (rotated[row] == 10.0).sum() == 1
    # A quarter turn of the original, done by hand: out[i, j] = x[j, W - 1 - i].
    by_hand = x[0, 0].t().flip(0)
    assert torch.equal(rotated[3, 0], by_hand)
    assert torch.equal(rotated[:3], x)


def test_random_rotations_match_their_labels_and_follow_the_generator():
    x = marked_images(n=64, size=4)
    rotated, labels = rotate_batch(x, False, torch.Generator().manual_seed(3))
    again, labels_again = rotate_batch(x, False, torch.Generator().manual_seed(3))
    assert torch.equal(rotated, again) and torch.equal(labels, labels_again)
    assert rotated.shape == x.shape and set(labels.tolist()) == {0, 1, 2, 3}
    for i, k in enumerate(labels.tolist()):
        assert torch.equal(rotated[i], torch.rot90(x[i], k, dims=(1, 2)))


def structured_images(n=16, size=8, seed=0):
    # Smooth blobs (upsampled 2x2 noise plus a bright top row): orientation is learnable.
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 2, 2, generator=g)
    x = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    x[:, :, 0, :] = 1.0
    return x


@pytest.mark.parametrize("all_rotations", [True, False])
def test_loss_falls_and_accuracy_is_logged(all_rotations):
    losses, accuracies = train_and_record(
        make(all_rotations), structured_images(), 20, "rotation_accuracy"
    )
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    assert accuracies[-1] > 0.5, accuracies


def test_accuracy_is_the_share_of_correct_predictions():
    class Oracle(nn.Module):
        """Reads the rotation off the marker's corner; wrong on label 3 on purpose."""

        def forward(self, x):
            corners = torch.stack(
                [x[:, 0, 0, 0], x[:, 0, -1, 0], x[:, 0, -1, -1], x[:, 0, 0, -1]], dim=1
            )
            k = corners.argmax(dim=1)
            k = torch.where(k == 3, torch.zeros_like(k), k)
            return nn.functional.one_hot(k, 4).float() * 10 + x.sum() * 0

    method = RotNet(Oracle(), nn.Identity())
    out = method.training_step(Batch([marked_images(n=4)]))
    assert float(out["rotation_accuracy"]) == pytest.approx(0.75)


def test_state_dict_round_trip_resumes_exactly():
    images = structured_images()
    method = make(all_rotations=False, seed=0)
    opt = torch.optim.SGD(method.parameters(), lr=0.05)
    for _ in range(2):
        out = method.training_step(Batch([images]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    fresh = make(all_rotations=False, seed=5)
    fresh.load_state_dict(method.state_dict())
    torch.manual_seed(7)
    expected = method.training_step(Batch([images]))
    torch.manual_seed(7)
    got = fresh.training_step(Batch([images]))
    assert torch.equal(expected["loss"], got["loss"])
    assert torch.equal(expected["rotation_accuracy"], got["rotation_accuracy"])


def test_embed_gives_backbone_features_of_upright_images():
    method = make(size=16)
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    method.eval()
    features = method.embed(images)
    assert features.shape == (3, 16)
    assert torch.equal(features, method.backbone(images.float()))


def test_recipe_gives_one_light_view_and_refuses_non_square_sizes():
    recipe = rotnet_views(28, mean=[0.5], std=[0.3])
    views = recipe(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    assert len(views) == 1 and views[0].shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="square"):
        rotnet_views((28, 24))


def test_construction_errors():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    with pytest.raises(ValueError, match="square"):
        RotNet(backbone, nn.Linear(8, 4), input_shape=(1, 8, 6))
    with pytest.raises(ValueError, match="4 logits"):
        RotNet(backbone, ProjectionHead(8, 16, 3))
    with pytest.raises(TypeError, match="classification_head"):
        RotNet(backbone, "linear")
    with pytest.raises(TypeError, match="all_rotations"):
        RotNet(backbone, nn.Linear(8, 4), all_rotations=1)
    with pytest.raises(ValueError, match="head_hidden_dim"):
        rotnet_heads(8, {"head_hidden_dim": 0, "head_num_layers": 2})
    with pytest.raises(TypeError, match="head_num_layers"):
        rotnet_heads(8, {"head_hidden_dim": 8, "head_num_layers": 1.5})
    # Without input_shape, a non-square batch is refused at the step.
    method = RotNet(nn.Sequential(nn.Flatten(), nn.LazyLinear(8)), nn.Linear(8, 4))
    with pytest.raises(ValueError, match="square"):
        method.training_step(Batch([torch.rand(4, 1, 8, 6)]))
    wrong = RotNet(backbone, nn.Linear(8, 5))
    with pytest.raises(ValueError, match=r"\(N, 4\) logits"):
        wrong.training_step(Batch([torch.rand(4, 1, 8, 8)]))


def test_registry_entry_builds_for_28_pixels():
    full = build_method("rotnet", (1, 28, 28), mean=[0.286], std=[0.353])
    assert full.classification_head.input_dim == 512 and full.all_rotations
    with pytest.raises(ValueError, match="square"):
        build_method("rotnet", (1, 28, 24))
