"""Offline linear evaluation: a softmax regression on frozen features, its L2 penalty chosen on a
held-out part of the training features, top-1 accuracy on the test features.

The recipe is Kornblith, Shlens and Le's ("Do Better ImageNet Models Transfer Better?", CVPR
2019), which SimCLR (Chen et al., ICML 2020, appendix B.5) uses for its linear evaluation
on transfer sets:

1. features standardised with the training features' mean and standard deviation;
2. multinomial logistic regression fitted by full-batch L-BFGS (strong-Wolfe line search,
   zero initialisation: deterministic, no sampling), loss and gradient accumulated over row
   chunks so memory stays bounded;
3. the L2 penalty chosen from a grid (:data:`WEIGHT_DECAYS`) by accuracy on a stratified
   held-out part of the **training** features (the test features are never looked at);
4. the classifier refitted on all the training features with that penalty and scored on the
   test features.

:func:`linear_probe` is the same fit with one given penalty (no held-out search), returning
the accuracy alone.

In torch on the features' device: for 60,000 x 128 features one L-BFGS iteration is a pair of
small matmuls, seconds where scikit-learn's ``LogisticRegression`` takes much longer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.chunking import row_chunks
from ..core.validation import check_bool, check_number
from .inputs import as_embeddings, as_labels, resolve_device

# The L2 penalties tried (on the mean cross-entropy, as weight_decay / 2 * |W|^2).
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclasses.dataclass(frozen=True)
class LinearEvaluation:
    """What :func:`linear_evaluation` found: the test ``accuracy``, the chosen
    ``weight_decay`` and each penalty's accuracy on the held-out training features
    (``validation_accuracy``; empty when the grid had one value)."""

    accuracy: float
    weight_decay: float
    validation_accuracy: dict[float, float]


class LinearClassifier:
    """Softmax regression on frozen features, in scikit-learn's fashion (``fit``, ``predict``,
    ``score``).

    Args:
        weight_decay: one L2 penalty, or a grid of them; with a grid, :meth:`fit` picks the one
            with the best accuracy on a stratified ``validation_fraction`` of its training
            rows (ties: the larger penalty), then refits on all of them.
        validation_fraction: the held-out share of each class for choosing the penalty.
        max_iter: at most this many L-BFGS iterations per fit.
        tolerance: stop when every gradient entry is below this (the loss is a mean over
            rows, so this does not depend on their number).
        seed: seed of the held-out split.
        device: where to fit (default: where the training features are).
        progress: a progress bar over the fits.

    Attributes (after :meth:`fit`): ``classes_`` (the labels seen, sorted), ``weight_decay_``
    (the penalty used), ``validation_accuracy_`` (penalty -> held-out accuracy).

    Example:
        >>> import torch
        >>> from metricssl.eval.linear import LinearClassifier
        >>> centres = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)) * 5
        >>> y = torch.arange(600) % 3
        >>> x = centres[y] + torch.randn(600, 16, generator=torch.Generator().manual_seed(1))
        >>> classifier = LinearClassifier().fit(x[:500], y[:500])
        >>> classifier.score(x[500:], y[500:])
        1.0
    """

    def __init__(
        self,
        weight_decay: float | Sequence[float] = WEIGHT_DECAYS,
        *,
        validation_fraction: float = 0.2,
        max_iter: int = 100,
        tolerance: float = 1e-5,
        seed: int = 0,
        device: torch.device | str | None = None,
        progress: bool = False,
    ):
        grid = (weight_decay,) if isinstance(weight_decay, (int, float)) else weight_decay
        if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or not grid:
            raise TypeError(
                f"weight_decay must be a number or a non-empty sequence of them, got "
                f"{weight_decay!r}"
            )
        for value in grid:
            check_number("weight_decay", value, low=0)
        check_number(
            "validation_fraction", validation_fraction, low=0, high=1, low_inclusive=False,
            high_inclusive=False,
        )  # fmt: skip
        check_number("max_iter", max_iter, low=1, integer=True)
        check_number("tolerance", tolerance, low=0)
        check_number("seed", seed, low=0, integer=True)
        check_bool("progress", progress)
        self.weight_decays = tuple(float(v) for v in grid)
        self.validation_fraction = validation_fraction
        self.max_iter = max_iter
        self.tolerance = tolerance
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, x, y) -> LinearClassifier:
        """Fit on features ``x`` (n, d) and labels ``y`` (n,) or (n, label_dims)."""
        device = resolve_device(self.device, x)
        x = as_embeddings(x, "x", device)
        y = as_labels(y, x.shape[0], "y", "x", device)
        dim = 0 if y.ndim == 2 else None
        self.classes_, codes = torch.unique(y, sorted=True, return_inverse=True, dim=dim)
        n_classes = self.classes_.shape[0]
        self.validation_accuracy_: dict[float, float] = {}
        fits = len(self.weight_decays) + 1 if len(self.weight_decays) > 1 else 1
        with tqdm(total=fits, desc="linear", unit="fit", disable=not self.progress) as bar:
            chosen = self.weight_decays[0]
            if len(self.weight_decays) > 1:
                chosen = self._choose(x, codes, n_classes, bar)
            self.weight_decay_ = chosen
            self.coef_, self.intercept_ = self._fit(x, codes, n_classes, chosen)
            bar.update(1)
        return self

    def _choose(self, x, codes, n_classes, bar) -> float:
        """The penalty with the best accuracy on a held-out part of the training rows."""
        from ..data.splits import stratified_split

        train, held_out = stratified_split(codes.cpu(), self.validation_fraction, self.seed)
        if len(held_out) == 0:
            raise ValueError(
                "y: no class has two samples, so none can be held out to choose weight_decay; "
                "give one weight_decay"
            )
        train, held_out = train.to(codes.device), held_out.to(codes.device)
        for wd in self.weight_decays:
            weight, bias = self._fit(x[train], codes[train], n_classes, wd)
            correct = _correct(x[held_out], codes[held_out], weight, bias)
            self.validation_accuracy_[wd] = correct / len(held_out)
            bar.update(1)
        # The best held-out accuracy; among equals, the strongest penalty (simplest model).
        return max(self.weight_decays, key=lambda wd: (self.validation_accuracy_[wd], wd))

    def _fit(self, x, codes, n_classes, weight_decay) -> tuple[torch.Tensor, torch.Tensor]:
        """L-BFGS on standardised features; returns the weights and bias for raw features."""
        mean = x.mean(dim=0)
        std = x.std(dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))  # constant features stay constant
        # The weights live in standardised feature space (what L-BFGS sees, and what the
        # penalty applies to), with the standardisation folded into them, so the features
        # are never copied: W ((x - mean) / std) + b == (W / std) x + (b - (W / std) mean).
        # W is (classes, d) as in F.linear, whose backward runs much faster than x.T @ grad.
        weight = torch.zeros(n_classes, x.shape[1], device=x.device, requires_grad=True)
        bias = torch.zeros(n_classes, device=x.device, requires_grad=True)

        def affine():
            scaled = weight / std[None, :]
            return scaled, bias - scaled @ mean

        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=self.max_iter,
            history_size=20,
            tolerance_grad=self.tolerance,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )
        n = x.shape[0]
        chunks = list(row_chunks(n, 4 * (x.shape[1] + 2 * n_classes)))

        def closure():
            optimizer.zero_grad()
            total = torch.zeros((), device=x.device)
            for rows in chunks:
                w, b = affine()
                loss = F.cross_entropy(F.linear(x[rows], w, b), codes[rows], reduction="sum")
                loss = loss / n
                loss.backward()
                total = total + loss.detach()
            penalty = 0.5 * weight_decay * weight.pow(2).sum()
            penalty.backward()
            return total + penalty.detach()

        with torch.enable_grad():
            optimizer.step(closure)
        with torch.no_grad():
            w, b = affine()
        return w, b

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("this LinearClassifier is not fitted yet: call fit(x, y) first")

    def _test_inputs(self, x, y=None):
        self._check_fitted()
        device = self.coef_.device
        x = as_embeddings(x, "x", device)
        if x.shape[1] != self.coef_.shape[1]:
            raise ValueError(
                f"x has dimension {x.shape[1]} but the classifier was fitted on dimension "
                f"{self.coef_.shape[1]}"
            )
        if y is None:
            return x, None
        y = as_labels(y, x.shape[0], "y", "x", device)
        if y.shape[1:] != self.classes_.shape[1:]:
            raise ValueError("y has other label dimensions than the labels fitted on")
        return x, y

    def predict(self, x) -> torch.Tensor:
        """The predicted label of each row of ``x`` (one of ``classes_``)."""
        x, _ = self._test_inputs(x)
        predicted = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
        for rows in row_chunks(x.shape[0], 4 * (x.shape[1] + self.coef_.shape[0])):
            predicted[rows] = F.linear(x[rows], self.coef_, self.intercept_).argmax(dim=1)
        return self.classes_[predicted]

    def score(self, x, y) -> float:
        """Top-1 accuracy on ``x`` with true labels ``y`` (a class not seen in :meth:`fit`
        counts as an error)."""
        x, y = self._test_inputs(x, y)
        if y.ndim == 2:
            match = (y[:, None, :] == self.classes_[None, :, :]).all(dim=-1)
        else:
            match = y[:, None] == self.classes_[None, :]
        codes = torch.where(match.any(dim=1), match.to(torch.uint8).argmax(dim=1), -1)
        return _correct(x, codes, self.coef_, self.intercept_) / x.shape[0]


def _correct(x, codes, weight, bias) -> int:
    correct = 0
    with torch.no_grad():
        for rows in row_chunks(x.shape[0], 4 * (x.shape[1] + weight.shape[0])):
            predicted = F.linear(x[rows], weight, bias).argmax(dim=1)
            correct += int((predicted == codes[rows]).sum())
    return correct


def linear_evaluation(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    weight_decay: float | Sequence[float] = WEIGHT_DECAYS,
    validation_fraction: float = 0.2,
    max_iter: int = 100,
    tolerance: float = 1e-5,
    seed: int = 0,
    device=None,
    progress: bool = False,
) -> LinearEvaluation:
    """The module's recipe: fit a :class:`LinearClassifier` on the training features (the
    penalty chosen on a held-out part of them), score it on the test features.

    Args:
        train_x: (n, d) training features (torch tensor on any device, or numpy array).
        train_y: (n,) training labels (any integers), or (n, label_dims).
        test_x: (m, d) test features.
        test_y: test labels (a class absent from training counts as an error).
        weight_decay, validation_fraction, max_iter, tolerance, seed, device, progress:
            as in :class:`LinearClassifier`.

    Returns:
        A :class:`LinearEvaluation` (``accuracy``, ``weight_decay``, ``validation_accuracy``).

    Example:
        >>> import torch
        >>> from metricssl.eval.linear import linear_evaluation
        >>> centres = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)) * 5
        >>> y = torch.arange(600) % 3
        >>> x = centres[y] + torch.randn(600, 16, generator=torch.Generator().manual_seed(1))
        >>> linear_evaluation(x[:500], y[:500], x[500:], y[500:]).accuracy
        1.0
    """
    dev = resolve_device(device, train_x)
    xtr = as_embeddings(train_x, "train_x", dev)
    xte = as_embeddings(test_x, "test_x", dev)
    if xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"train_x has dimension {xtr.shape[1]} but test_x has {xte.shape[1]}")
    ytr = as_labels(train_y, xtr.shape[0], "train_y", "train_x", dev)
    yte = as_labels(test_y, xte.shape[0], "test_y", "test_x", dev)
    if ytr.shape[1:] != yte.shape[1:]:
        raise ValueError("train_y and test_y have different label dimensions")
    classifier = LinearClassifier(
        weight_decay,
        validation_fraction=validation_fraction,
        max_iter=max_iter,
        tolerance=tolerance,
        seed=seed,
        device=dev,
        progress=progress,
    ).fit(xtr, ytr)
    return LinearEvaluation(
        accuracy=classifier.score(xte, yte),
        weight_decay=classifier.weight_decay_,
        validation_accuracy=dict(classifier.validation_accuracy_),
    )


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
        >>> from metricssl.eval.linear import linear_probe
        >>> centres = torch.randn(3, 16) * 5
        >>> y = torch.randint(0, 3, (600,))
        >>> x = centres[y] + torch.randn(600, 16)
        >>> linear_probe(x[:500], y[:500], x[500:], y[500:]) > 0.9
        True
    """
    if isinstance(weight_decay, (list, tuple)):
        raise TypeError("weight_decay must be one number here; linear_evaluation takes a grid")
    result = linear_evaluation(
        train_x,
        train_y,
        test_x,
        test_y,
        weight_decay=weight_decay,
        max_iter=max_iter,
        tolerance=tolerance,
        device=device,
    )
    return result.accuracy
