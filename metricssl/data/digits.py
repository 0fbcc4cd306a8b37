"""scikit-learn's 8x8 handwritten digits: the dataset that is always there (no download)."""

from __future__ import annotations

import numpy as np
import torch

from ..core.validation import check_choice
from .splits import stratified_split

SPLITS = ("all", "train", "test")
# The fixed split used by split="train"/"test": stratified, 20% test, seed 0.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 UCI optical-recognition digits (Alpaydin and Kaynak, UCI ML Repository,
    1998) shipped with scikit-learn, as uint8 images.

    Args:
        split: ``"all"`` (1,797 images), or the fixed stratified ``"train"`` / ``"test"``
            split (80% / 20%, seed 0; the same on every machine).

    Returns:
        ``(images, labels)``: uint8 (N, 1, 8, 8) with sklearn's 0..16 grey levels scaled to
        0..255, and int64 (N,) labels 0..9.

    Example:
        >>> from metricssl.data.digits import load_digits
        >>> images, labels = load_digits("train")
        >>> images.shape, images.dtype
        (torch.Size([1438, 1, 8, 8]), torch.uint8)
    """
    check_choice("split", split, SPLITS)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # 16 grey levels -> 0..255, exact at both ends (16 * 255 / 16 = 255).
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    images = torch.from_numpy(np.ascontiguousarray(images))
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    if split == "all":
        return images, labels
    train, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    keep = train if split == "train" else test
    return images[keep], labels[keep]
