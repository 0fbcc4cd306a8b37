"""Argument checks that turn bad input into a clear error naming the argument.

Every message names the argument, so the user sees what to fix instead of a shape error
from deep inside torch. Where PML asserts, the error is an :class:`ArgumentError` (both a
``ValueError`` and an ``AssertionError``) or an :class:`ArgumentTypeError` (both a
``TypeError`` and an ``AssertionError``), so that code written against PML's assertions keeps
catching what it caught.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch.utils.weak import WeakIdKeyDictionary

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)


class ArgumentError(ValueError, AssertionError):
    """A bad argument value: a ``ValueError`` that ``except AssertionError`` also catches,
    because PML checks these with ``assert``.

    Example::

        try:
            SparseCentersRegularizer(num_classes=3, centers_per_class=1)
        except AssertionError:  # PML-era code keeps working
            ...
    """


class ArgumentTypeError(TypeError, AssertionError):
    """A bad argument type where PML asserts (e.g. the wrong kind of distance): a
    ``TypeError`` that ``except AssertionError`` also catches."""


def check_embeddings(
    x, name: str = "embeddings", allow_empty: bool = False, ndim: int | None = 2
) -> None:
    """A floating-point tensor; of ``ndim`` dimensions unless ``ndim`` is None (a loss leaves
    the shape to its distance's ``check_shapes``, as PML does, so a custom distance may take
    other shapes)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ArgumentError(
            f"{name} must be a 2D tensor of shape (batch_size, embedding_size), "
            f"got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not allow_empty and x.shape[0] == 0:
        raise ArgumentError(f"{name} is empty: a batch needs at least one embedding")


def check_labels(labels, n: int, name: str = "labels", embeddings_name: str = "embeddings"):
    """A 1-D tensor of ``n`` labels. Integer or floating-point: like PML, labels are compared
    by value, so ``torch.zeros(n)`` or float class ids work (losses that index by class id
    check for whole numbers themselves)."""
    if labels is None:
        return
    if not torch.is_tensor(labels):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1:
        raise ArgumentError(
            f"{name} must be a 1D tensor of shape (batch_size,), got shape {tuple(labels.shape)}"
        )
    if labels.is_complex():
        raise TypeError(f"{name} must hold integer or real values, got {labels.dtype}")
    if labels.shape[0] != n:
        raise ArgumentError(
            f"{name} has length {labels.shape[0]} but {embeddings_name} has {n} rows"
        )


def check_embedding_shapes(owner, embeddings, ref_emb) -> None:
    """The shape check of ``owner``'s distance (``distance.check_shapes``), which PML's
    losses and miners defer to, so that a distance built for other shapes (e.g. 3-D
    embeddings) is respected; a 2-D check when ``owner`` has no distance."""
    distance = getattr(owner, "distance", None)
    if distance is not None and hasattr(distance, "check_shapes"):
        distance.check_shapes(embeddings, ref_emb)
        return
    check_embeddings(embeddings, allow_empty=True)
    if ref_emb is not None:
        check_embeddings(ref_emb, "ref_emb", allow_empty=True)


def check_same_device(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.device != b.device:
        raise ArgumentError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")


def check_same_width(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ArgumentError(
            f"{name_a} has embedding size {a.shape[1]} but {name_b} has {b.shape[1]}"
        )


def check_indices_tuple(indices_tuple, n_query: int, n_ref: int, name: str = "indices_tuple"):
    """A miner's output: (anchors, positives, negatives) or (a1, p, a2, n), in range."""
    if indices_tuple is None:
        return
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise ArgumentTypeError(
            f"{name} must be a tuple of 3 (anchors, positives, negatives) or 4 "
            f"(anchors1, positives, anchors2, negatives) tensors"
        )
    for i, t in enumerate(indices_tuple):
        if not torch.is_tensor(t) or t.ndim != 1:
            raise TypeError(f"{name}[{i}] must be a 1D tensor of indices")
        if t.numel() and t.dtype not in _INTEGER_DTYPES[:-1]:
            raise TypeError(f"{name}[{i}] must hold integer indices, got {t.dtype}")
    if len(indices_tuple) == 3:
        sizes = {len(t) for t in indices_tuple}
        if len(sizes) != 1:
            raise ArgumentError(f"{name}: anchors, positives and negatives differ in length")
    elif len(indices_tuple[0]) != len(indices_tuple[1]) or len(indices_tuple[2]) != len(
        indices_tuple[3]
    ):
        raise ArgumentError(f"{name}: a1/p and a2/n must have matching lengths")
    bounds = _index_bounds(indices_tuple, n_query, n_ref)
    # A built-in miner's output is in range by construction (vouch_for_indices): reading it
    # back to check would cost a device synchronisation per loss call on CUDA.
    nonempty = [
        (t, b, i)
        for i, (t, b) in enumerate(zip(indices_tuple, bounds))
        if t.numel() and not _range_known(t, b)
    ]
    if not nonempty:
        return
    # One host round-trip for all the range checks.
    lo_hi = torch.stack(
        [torch.stack([t.min(), t.max()]).to(torch.int64).cpu() for t, _, _ in nonempty]
    )
    for (_, bound, i), (lo, hi) in zip(nonempty, lo_hi.tolist()):
        if lo < 0 or hi >= bound:
            raise ArgumentError(f"{name}[{i}] has indices in [{lo}, {hi}], outside [0, {bound})")


# Index tensors whose range is known without reading them: tensor -> (its version when
# vouched for, the bound its entries are below). An in-place change bumps the version and
# voids the entry; weak keys let the tensors go.
_KNOWN_RANGES = WeakIdKeyDictionary()


def _index_bounds(indices_tuple, n_query: int, n_ref: int) -> list[int]:
    return [n_query, n_ref, n_ref] if len(indices_tuple) == 3 else [n_query, n_ref] * 2


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return None


def vouch_for_indices(indices_tuple, n_query: int, n_ref: int) -> None:
    """Record that ``indices_tuple`` (3 or 4 index tensors) holds anchors below ``n_query``
    and positives/negatives below ``n_ref``, as a built-in miner's output does by
    construction, so that :func:`check_indices_tuple` accepts these tensors without reading
    them back (a synchronisation on CUDA). Only for tuples known to be in range: user-built
    tuples are checked."""
    for t, bound in zip(indices_tuple, _index_bounds(indices_tuple, n_query, n_ref)):
        version = _version(t)
        if version is None:
            continue
        known = _KNOWN_RANGES.get(t)
        if known is not None and known[0] == version:
            bound = min(bound, known[1])  # one tensor in two roles: the tighter bound
        _KNOWN_RANGES[t] = (version, bound)


def _range_known(t: torch.Tensor, bound: int) -> bool:
    known = _KNOWN_RANGES.get(t)
    return known is not None and known[0] == _version(t) and known[1] <= bound


def check_distance_type(owner, distance_type: type) -> None:
    """A loss or miner that only makes sense with one kind of distance says so clearly."""
    if not isinstance(owner.distance, distance_type):
        article = "an" if distance_type.__name__[0] in "AEIOUS" else "a"
        raise ArgumentTypeError(
            f"{type(owner).__name__} requires distance to be {article} {distance_type.__name__}, "
            f"got {type(owner.distance).__name__}"
        )


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ArgumentError(f"{name} must be one of {sorted(map(str, choices))}, got {value!r}")


def check_bool(name: str, value) -> None:
    # numpy's bool_ is not a bool subclass but is what config files and argparse often give.
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_number(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
    allow_none: bool = False,
) -> None:
    if value is None and allow_none:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
    if not integer and math.isnan(value):
        raise ArgumentError(f"{name} must not be NaN")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ArgumentError(f"{name} must be {op} {low}, got {value}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ArgumentError(f"{name} must be {op} {high}, got {value}")


def check_module(name: str, value, allow_none: bool = False) -> None:
    """Raise a TypeError naming ``name`` unless ``value`` is an ``nn.Module`` (or None, when
    allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, torch.nn.Module):
        kind = "an nn.Module or None" if allow_none else "an nn.Module"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")


def nonfinite_flag(*tensors: torch.Tensor | None) -> bool | torch.Tensor:
    """Whether any entry of the tensors is NaN/Inf.

    A Python bool for CPU tensors; for CUDA tensors a 0-d bool tensor on the device, so that
    no host synchronisation is added.
    """
    flags = [_nonfinite(t) for t in tensors if t is not None]
    flag = flags[0]
    for f in flags[1:]:
        flag = flag | f
    return flag


def _nonfinite(t: torch.Tensor) -> bool | torch.Tensor:
    if t.device.type == "cpu":
        # On CPU isfinite().all() costs ~20x a sum (0.2 ms for 256 x 256 floats); a sum is
        # NaN/Inf whenever an entry is, so the exact test runs only when the sum is not finite
        # (which finite entries can also cause, by overflowing). A Python float and bool, not
        # 0-d tensors: each tensor op costs microseconds that sub-millisecond losses feel.
        acc = torch.float64 if t.dtype == torch.float64 else torch.float32
        if math.isfinite(t.detach().sum(dtype=acc).item()):
            return False
        return not bool(torch.isfinite(t).all())
    return ~torch.isfinite(t).all()


def apply_nonfinite_policy(
    value: torch.Tensor, flag: bool | torch.Tensor, what: str
) -> torch.Tensor:
    """The package-wide NaN/Inf policy for losses.

    Non-finite embeddings never give a finite, plausible-looking loss: the result is NaN.
    A ``RuntimeWarning`` is emitted where checking is free (CPU tensors); on CUDA the NaN is
    returned without a warning, because finding out would cost a device synchronisation.
    """
    if value.device.type == "cpu":
        if not bool(flag):
            return value
        warnings.warn(
            f"{what}: embeddings contain NaN or Inf; the loss is NaN", RuntimeWarning, stacklevel=3
        )
    # where(), not a fresh NaN tensor: the result stays in the graph, so backward() still runs.
    flag = torch.as_tensor(flag, device=value.device)
    return torch.where(flag, torch.full_like(value, float("nan")), value)
