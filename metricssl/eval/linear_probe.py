"""Linear probe: multinomial logistic regression on frozen embeddings, top-1 test accuracy.

The standard protocol for judging self-supervised representations (e.g. Chen, Kornblith,
Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020): a linear classifier trained on the frozen embeddings of the training set, scored on
the test set.

Features are standardised with the training set's mean and standard deviation. The classifier
is a softmax regression fitted by full-batch L-BFGS with a strong-Wolfe line search, in torch on
the embeddings' device: for 60,000 x 128 embeddings one iteration is a pair of small matmuls, so
it converges in seconds where scikit-learn's ``LogisticRegression`` takes much longer, and it is
deterministic (zero initialisation, no sampling). Loss and gradient are accumulated over row
chunks, so memory stays bounded for large training sets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.chunking import row_chunks
from ..core.validation import check_number
from .inputs import as_embeddings, as_labels, resolve_device


def _class_codes(train_y: torch.Tensor, test_y: torch.Tensor):
    """Train labels as 0..C-1 and test labels as the same codes (-1 for classes unseen in
    training, which can never be predicted)."""
    dim = 0 if train_y.ndim == 2 else None
    classes, train_codes = torch.unique(train_y, sorted=True, return_inverse=True, dim=dim)
    if test_y.ndim == 2:
        match = (test_y[:, None, :] == classes[None, :, :]).all(dim=-1)
    else:
        match = test_y[:, None] == classes[None, :]
    test_codes = torch.where(match.any(dim=1), match.to(torch.uint8).argmax(dim=1), -1)
    return train_codes, test_codes, classes.shape[0]


def linear_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    tolerance: float = 1e-5,
    device=None,
) -> float:
    """Top-1 test accuracy of a softmax regression trained on frozen embeddings.

    Args:
        train_x: (n, d) training embeddings (torch tensor on any device, or numpy array).
        train_y: (n,) training labels.
        test_x: (m, d) test embeddings.
        test_y: (m,) test labels (a class absent from training counts as an error).
        weight_decay: L2 penalty on the weights, added to the mean cross-entropy as
            ``weight_decay / 2 * |W|^2``.
        max_iter: at most this many L-BFGS iterations.
        tolerance: stop when every gradient entry is below this (the loss is a mean over
            samples, so this does not depend on the training-set size).
        device: where to fit (default: the device of ``train_x``).

    Returns:
        The fraction of test embeddings classified correctly.

    Example:
        >>> import torch
        >>> from metricssl.eval.linear_probe import linear_probe
        >>> centres = torch.randn(3, 16) * 5
        >>> y = torch.randint(0, 3, (600,))
        >>> x = centres[y] + torch.randn(600, 16)
        >>> linear_probe(x[:500], y[:500], x[500:], y[500:]) > 0.9
        True
    """
    check_number("weight_decay", weight_decay, low=0)
    check_number("max_iter", max_iter, low=1, integer=True)
    check_number("tolerance", tolerance, low=0)
    dev = resolve_device(device, train_x)
    xtr = as_embeddings(train_x, "train_x", dev)
    xte = as_embeddings(test_x, "test_x", dev)
    if xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"train_x has dimension {xtr.shape[1]} but test_x has {xte.shape[1]}")
    ytr = as_labels(train_y, xtr.shape[0], "train_y", "train_x", dev)
    yte = as_labels(test_y, xte.shape[0], "test_y", "test_x", dev)
    if ytr.shape[1:] != yte.shape[1:]:
        raise ValueError("train_y and test_y have different label dimensions")
    train_codes, test_codes, n_classes = _class_codes(ytr, yte)

    mean = xtr.mean(dim=0)
    std = xtr.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant features stay constant

    # The weights live in standardised feature space (that is what L-BFGS sees, and what the
    # penalty applies to), but the standardisation is folded into them, so the embeddings are
    # never copied: W ((x - mean) / std) + b == (W / std) x + (b - (W / std) mean). W is
    # (classes, d) as in F.linear, whose backward runs much faster than x.T @ grad.
    weight = torch.zeros(n_classes, xtr.shape[1], device=dev, requires_grad=True)
    bias = torch.zeros(n_classes, device=dev, requires_grad=True)

    def affine():
        scaled = weight / std[None, :]
        return scaled, bias - scaled @ mean

    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tolerance,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    n = xtr.shape[0]
    chunks = list(row_chunks(n, 4 * (xtr.shape[1] + 2 * n_classes)))

    def closure():
        optimizer.zero_grad()
        total = torch.zeros((), device=dev)
        for rows in chunks:
            w, b = affine()
            loss = F.cross_entropy(F.linear(xtr[rows], w, b), train_codes[rows], reduction="sum")
            loss = loss / n
            loss.backward()
            total = total + loss.detach()
        penalty = 0.5 * weight_decay * weight.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    with torch.enable_grad():
        optimizer.step(closure)

    correct = 0
    with torch.no_grad():
        w, b = affine()
        for rows in row_chunks(xte.shape[0], 4 * (xte.shape[1] + n_classes)):
            predicted = F.linear(xte[rows], w, b).argmax(dim=1)
            correct += int((predicted == test_codes[rows]).sum())
    return correct / xte.shape[0]
