"""Chaining augmentations: one pipeline per view, and a set of views made from one batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metricssl.augment.convert import to_float_images


def _check_modules(name: str, modules) -> list[torch.nn.Module]:
    if not isinstance(modules, Sequence) or isinstance(modules, str):
        raise TypeError(f"{name} must be a sequence of nn.Module, got {type(modules).__name__}")
    for i, m in enumerate(modules):
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"{name}[{i}] must be an nn.Module, got {type(m).__name__}")
    return list(modules)


class Compose(torch.nn.Module):
    """Applies ``transforms`` in order, passing the same ``generator`` to each.

    Every transform is called as ``transform(images, generator)`` (all of
    ``metricssl.augment``'s are); the input is checked and uint8 converted to float once.

    Example:
        >>> import torch
        >>> from metricssl.augment.crop import RandomResizedCrop
        >>> from metricssl.augment.flip import RandomHorizontalFlip
        >>> view = Compose([RandomResizedCrop(24), RandomHorizontalFlip()])
        >>> view(torch.zeros(4, 1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([4, 1, 24, 24])
    """

    def __init__(self, transforms: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.transforms = torch.nn.ModuleList(_check_modules("transforms", transforms))

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = to_float_images(images)
        for t in self.transforms:
            x = t(x, generator)
        return x


class MultiView(torch.nn.Module):
    """Makes several augmented views of one batch: ``views = recipe(images)``.

    Args:
        views: one pipeline per view (usually a :class:`Compose`), each called as
            ``view(images, generator)``.

    Returns a list of float tensors, one per view, in the order of ``views``. With a seeded
    ``generator`` the views are reproducible: they are drawn one after the other from it.

    Example:
        >>> import torch
        >>> from metricssl.augment.flip import RandomHorizontalFlip
        >>> two = MultiView([RandomHorizontalFlip(), RandomHorizontalFlip()])
        >>> len(two(torch.zeros(4, 1, 8, 8, dtype=torch.uint8)))
        2
    """

    def __init__(self, views: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        views = _check_modules("views", views)
        if not views:
            raise ValueError("views must hold at least one view")
        self.views = torch.nn.ModuleList(views)

    @property
    def n_views(self) -> int:
        return len(self.views)

    def check_input(self, images: torch.Tensor) -> None:
        """Hook for recipes with constraints on the input (see ``MultiCrop``)."""

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        x = to_float_images(images)
        self.check_input(x)
        return [view(x, generator) for view in self.views]
