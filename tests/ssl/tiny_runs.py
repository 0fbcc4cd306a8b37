"""Tiny Trainer runs and argument checks that several method test files share."""

from __future__ import annotations

import pytest
import torch

from metricssl.ssl.trainer import Trainer

# A small CNN and a one-block ViT: the methods that must train either backbone.
CNN_AND_VIT = pytest.mark.parametrize(
    "backbone, backbone_kwargs",
    [
        ("small_cnn", {"embedding_dim": 16, "width": 4}),
        ("vit_tiny", {"depth": 1, "width": 16, "heads": 2}),
    ],
)


def tiny_images(n=48, shape=(1, 16, 16), *, classes=4, seed=0, labelled=True):
    """``n`` random uint8 images of ``shape`` and labels ``0 .. classes - 1`` in turn (None
    when not ``labelled``): a dataset as the Trainer takes it."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return images, (torch.arange(n) % classes if labelled else None)


def tiny_trainer(out, method, **kwargs) -> Trainer:
    """A Trainer of ``method`` writing to ``out``, on :func:`tiny_images` unless ``dataset`` is
    given, with batches of 16, the k-NN monitor at k = 5 and no progress bar; ``kwargs`` are
    the Trainer's and override these."""
    args = dict(
        method=method,
        dataset=tiny_images(),
        batch_size=16,
        out=out,
        progress=False,
        knn_k=5,
    )
    args.update(kwargs)
    return Trainer(**args)


def assert_refused_by_name(name, *attempts, errors=(ValueError, TypeError)) -> None:
    """Each of ``attempts`` (no-argument callables: a method and its config built with the
    same bad arguments) raises one of ``errors`` naming ``name``."""
    for attempt in attempts:
        with pytest.raises(errors, match=name):
            attempt()
