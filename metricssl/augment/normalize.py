"""Per-channel normalisation ``(x - mean) / std``: the last step of a view, not random."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from metricssl.augment.convert import to_float_images
from metricssl.core.validation import check_number


def _per_channel(name: str, value, positive: bool) -> tuple[float, ...]:
    values = (value,) if isinstance(value, numbers.Real) else value
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise TypeError(
            f"{name} must be a number or a non-empty sequence of numbers, got {value!r}"
        )
    for i, v in enumerate(values):
        check_number(f"{name}[{i}]", v, low=0.0 if positive else None, low_inclusive=not positive)
    return tuple(float(v) for v in values)


class Normalize(torch.nn.Module):
    """Subtracts ``mean`` and divides by ``std``, per channel.

    Args:
        mean: one number per channel, or one number for all channels.
        std: one positive number per channel, or one for all channels.

    Example:
        >>> import torch
        >>> norm = Normalize(mean=(0.5,), std=(0.25,))
        >>> norm(torch.full((1, 1, 2, 2), 0.75)).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        self.mean = _per_channel("mean", mean, positive=False)
        self.std = _per_channel("std", std, positive=True)
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(
                f"mean has {len(self.mean)} values but std has {len(self.std)}: "
                "give one per channel (or one for all channels)"
            )
        self._cache: dict = {}

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        images = to_float_images(images)
        c = images.shape[1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, c):
                raise ValueError(
                    f"{name} has {len(values)} values but the images have {c} channels"
                )
        mean, std = self._constants(images.device, images.dtype)
        return (images - mean) / std

    def _constants(self, device: torch.device, dtype: torch.dtype):
        # Cached per device and dtype: no host-to-device copy on every batch.
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = tuple(
                torch.tensor(v, dtype=dtype).view(1, -1, 1, 1).to(device)
                for v in (self.mean, self.std)
            )
        return self._cache[key]

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"
