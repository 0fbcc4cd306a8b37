import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
import matplotlib.image as mpimg  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from metricssl.viz.retrieval_grid import MATCH_COLOR, MISMATCH_COLOR, retrieval_grid  # noqa: E402


def pixels_near(image, colour, tol=0.06):
    return int((np.abs(image[..., :3] - np.asarray(to_rgb(colour))).max(axis=-1) < tol).sum())


def grayscale_batch(q=3, k=4, size=12):
    g = torch.Generator().manual_seed(0)
    queries = torch.randint(0, 256, (q, size, size), generator=g, dtype=torch.uint8)
    neighbors = torch.randint(0, 256, (q, k, size, size), generator=g, dtype=torch.uint8)
    return queries, neighbors


def test_frames_are_green_for_matches_and_red_for_mismatches(tmp_path):
    queries, neighbors = grayscale_batch()
    q_labels = torch.tensor([0, 1, 2])
    all_match = q_labels[:, None].expand(3, 4)
    out = retrieval_grid(queries, neighbors, q_labels, all_match, tmp_path / "match.png")
    image = mpimg.imread(out)
    assert image.shape[0] > 50 and pixels_near(image, MATCH_COLOR) > 100
    assert pixels_near(image, MISMATCH_COLOR) == 0

    none_match = (all_match + 1) % 3
    image = mpimg.imread(
        retrieval_grid(queries, neighbors, q_labels, none_match, tmp_path / "miss.png")
    )
    assert pixels_near(image, MISMATCH_COLOR) > 100 and pixels_near(image, MATCH_COLOR) == 0

    mixed = all_match.clone()
    mixed[0, 0] = 9
    image = mpimg.imread(
        retrieval_grid(
            queries,
            neighbors,
            q_labels,
            mixed,
            tmp_path / "mixed.png",
            class_names=list("abcdefghij"),
        )
    )
    green, red = pixels_near(image, MATCH_COLOR), pixels_near(image, MISMATCH_COLOR)
    assert green > 5 * red > 0  # 11 green frames, 1 red


@pytest.mark.parametrize(
    "make",
    [
        lambda: (np.random.rand(2, 10, 10), np.random.rand(2, 3, 10, 10)),  # (N,H,W) float
        lambda: (np.random.rand(2, 1, 10, 10), np.random.rand(2, 3, 1, 10, 10)),  # (N,1,H,W)
        lambda: (torch.rand(2, 3, 10, 10), torch.rand(2, 3, 3, 10, 10)),  # (N,C,H,W) RGB
        lambda: (  # (N,H,W,C) uint8 RGB
            np.random.randint(0, 256, (2, 10, 10, 3), dtype=np.uint8),
            np.random.randint(0, 256, (2, 3, 10, 10, 3), dtype=np.uint8),
        ),
        lambda: (torch.randn(2, 3, 10, 10), torch.randn(2, 3, 3, 10, 10)),  # normalised floats
    ],
)
def test_image_layouts(tmp_path, make):
    queries, neighbors = make()
    out = retrieval_grid(queries, neighbors, [0, 1], [[0, 1, 0], [1, 1, 0]], tmp_path / "g.png")
    image = mpimg.imread(out)
    assert image.size > 0 and (image[..., :3] < 0.95).any()


def test_no_labels_gives_neutral_frames(tmp_path):
    queries, neighbors = grayscale_batch(q=2, k=2)
    image = mpimg.imread(retrieval_grid(queries, neighbors, None, None, tmp_path / "n.png"))
    assert pixels_near(image, MATCH_COLOR) == 0 and pixels_near(image, MISMATCH_COLOR) == 0


def test_errors(tmp_path):
    queries, neighbors = grayscale_batch()
    labels, nlabels = torch.arange(3), torch.zeros(3, 4, dtype=torch.long)
    p = tmp_path / "e.png"
    with pytest.raises(ValueError, match="Q, K"):
        retrieval_grid(queries, neighbors[0], labels, nlabels, p)
    with pytest.raises(ValueError, match="rows"):
        retrieval_grid(queries[:2], neighbors, labels, nlabels, p)
    with pytest.raises(ValueError, match="query_labels"):
        retrieval_grid(queries, neighbors, labels[:2], nlabels, p)
    with pytest.raises(ValueError, match="neighbor_labels"):
        retrieval_grid(queries, neighbors, labels, nlabels[:, :2], p)
    with pytest.raises(ValueError, match="both"):
        retrieval_grid(queries, neighbors, labels, None, p)
    with pytest.raises(ValueError, match="channel"):
        retrieval_grid(torch.rand(2, 5, 8, 8), torch.rand(2, 1, 5, 8, 8), None, None, p)
    with pytest.raises(ValueError, match="0..255"):
        retrieval_grid(torch.full((1, 4, 4), 300), torch.full((1, 1, 4, 4), 300), None, None, p)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_grid(torch.full((1, 4, 4), float("nan")), torch.rand(1, 1, 4, 4), None, None, p)
    with pytest.raises(ValueError, match="differ in shape"):
        retrieval_grid(torch.rand(1, 4, 4), torch.rand(1, 1, 5, 5), None, None, p)
    with pytest.raises(ValueError, match="at least one"):
        retrieval_grid(torch.rand(1, 4, 4), torch.rand(1, 0, 4, 4), None, None, p)
    with pytest.raises(ValueError, match="class_names"):
        retrieval_grid(queries, neighbors, labels, nlabels, p, class_names=["a"])
    assert not p.exists()
