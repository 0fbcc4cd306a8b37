"""Tiny Trainer runs and argument checks that several method test files share."""

from __future__ import annotations

import pytest
import torch

from metricssl.models.heads import PredictionHead, ProjectionHead
from metricssl.ssl.registry import METHODS, build_method
from metricssl.ssl.trainer import Trainer

# A small CNN and a one-block ViT: the methods that must train either backbone.
CNN_AND_VIT = pytest.mark.parametrize(
    "backbone, backbone_kwargs",
    [
        ("small_cnn", {"embedding_dim": 16, "width": 4}),
        ("vit_tiny", {"depth": 1, "width": 16, "heads": 2}),
    ],
)

# (arguments, the name the error must give) for a momentum schedule's two fields.
BAD_MOMENTUM = [
    ({"momentum": 1.5}, "momentum"),
    ({"momentum": 0.99, "final_momentum": 0.9}, "final_momentum"),
    ({"final_momentum": 2.0}, "final_momentum"),
]


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


def byol_style_method(name, cls):
    """The registry's ``name`` at its defaults, checked to be a ``cls`` with BYOL's heads (a
    3-layer :class:`ProjectionHead` and a :class:`PredictionHead`) and two views."""
    method = build_method(name, (1, 28, 28))
    assert isinstance(method, cls) and METHODS[name].cls is cls
    assert isinstance(method.projection_head, ProjectionHead)
    assert method.projection_head.num_layers == 3
    assert isinstance(method.prediction_head, PredictionHead)
    assert len(method.make_views(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))) == 2
    return method
