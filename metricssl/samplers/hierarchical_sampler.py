"""HierarchicalSampler: batches mixing a few super-classes, several classes from each."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Sampler

from ..core import common as c_f
from ..core.validation import ArgumentError, check_number


class HierarchicalSampler(Sampler[list[int]]):
    """A batch sampler for two-level labels (class, super-class), e.g. Stanford Online Products.

    Every combination of ``super_classes_per_batch`` super-classes gets
    ``batches_per_super_tuple`` batches. A batch is split evenly between its super-classes;
    each part is filled with ``samples_per_class`` random samples (all of them with
    ``"all"``) from classes of that super-class taken in random order, skipping a class
    that would overflow the part; a part may stay short when the classes run out. The batch
    is then shuffled, and so is the list of batches each epoch. Pass it as the
    DataLoader's ``batch_sampler``. A class with fewer than ``samples_per_class`` samples
    is sampled with replacement.

    After the hierarchical sampling of Cakir, He, Xia, Kulis and Sclaroff, "Deep Metric
    Learning to Rank", CVPR 2019; PML's sampler, with the same arguments and draws.

    Randomness comes from ``metricssl.utils.common_functions.NUMPY_RANDOM`` (numpy's global
    generator by default); like PML, the batches are drawn once at construction and again
    at the start of every epoch. Super-class combinations are formed in sorted label order
    (PML uses a Python set's order, which for small non-negative integer labels is the
    same and for strings changes between runs); classes are taken in order of first
    appearance, as in PML. With the same seed and such labels the batches are PML's.

    Where PML asserts (batch_size a multiple of super_classes_per_batch, its share a
    multiple of samples_per_class, samples_per_class > 0) the error is an ``ArgumentError``:
    the ``AssertionError`` PML raises, and a ``ValueError``.

    Deviations from PML: fewer super-classes than ``super_classes_per_batch`` raise
    ``ValueError`` (PML yields no batch at all); other bad arguments raise
    ``ValueError``/``TypeError`` naming them; batches are lists of Python ints.

    Example:
        >>> import torch
        >>> from metricssl.samplers.hierarchical_sampler import HierarchicalSampler
        >>> classes = torch.arange(120) % 12
        >>> labels = torch.stack([classes, classes % 3], dim=1)  # (class, super-class)
        >>> sampler = HierarchicalSampler(labels, batch_size=8, samples_per_class=2)
        >>> loader = torch.utils.data.DataLoader(range(120), batch_sampler=sampler)
        >>> len(sampler)  # 3 pairs of super-classes x 4 batches each
        12

    Args:
        labels: (num_items, num_levels) labels; rows are items, columns label levels.
        batch_size: items per batch, a multiple of ``super_classes_per_batch``.
        samples_per_class: samples per class, dividing ``batch_size //
            super_classes_per_batch``; or ``"all"`` for every sample of a class.
        batches_per_super_tuple: batches per combination of super-classes.
        super_classes_per_batch: super-classes in each batch.
        inner_label: column of ``labels`` holding the class.
        outer_label: column of ``labels`` holding the super-class.
    """

    def __init__(
        self,
        labels,
        batch_size: int,
        samples_per_class,
        batches_per_super_tuple: int = 4,
        super_classes_per_batch: int = 2,
        inner_label: int = 0,
        outer_label: int = 1,
    ):
        if torch.is_tensor(labels):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[0] == 0:
            raise ValueError(
                "labels must be a non-empty 2D array (one row per item, one column per label "
                f"level), got shape {labels.shape}"
            )
        check_number("batch_size", batch_size, low=1, integer=True)
        check_number("batches_per_super_tuple", batches_per_super_tuple, low=1, integer=True)
        check_number("super_classes_per_batch", super_classes_per_batch, low=1, integer=True)
        levels = labels.shape[1]
        for name, column in (("inner_label", inner_label), ("outer_label", outer_label)):
            check_number(name, column, low=-levels, high=levels - 1, integer=True)
        if batch_size % super_classes_per_batch:
            raise ArgumentError(
                f"batch_size ({batch_size}) must be a multiple of super_classes_per_batch "
                f"({super_classes_per_batch})"
            )
        self.sub_batch_len = batch_size // super_classes_per_batch
        if samples_per_class != "all":
            if isinstance(samples_per_class, str):
                raise TypeError(
                    f"samples_per_class must be a positive int or 'all', got {samples_per_class!r}"
                )
            check_number("samples_per_class", samples_per_class, low=1, integer=True)
            if self.sub_batch_len % samples_per_class:
                raise ArgumentError(
                    f"batch_size // super_classes_per_batch ({self.sub_batch_len}) must be a "
                    f"multiple of samples_per_class ({samples_per_class})"
                )
        self.batch_size = int(batch_size)
        self.batches_per_super_tuple = int(batches_per_super_tuple)
        self.samples_per_class = samples_per_class
        self.super_classes_per_batch = int(super_classes_per_batch)

        # super-class -> {class: item indices}, classes in order of first appearance.
        self.super_image_lists = {}
        outer, inner = labels[:, outer_label], labels[:, inner_label]
        for super_label in np.unique(outer).tolist():
            rows = np.flatnonzero(outer == super_label)
            classes, first, inverse = np.unique(inner[rows], return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            self.super_image_lists[super_label] = {
                classes[c].item(): rows[inverse == c] for c in np.argsort(first)
            }
        if len(self.super_image_lists) < super_classes_per_batch:
            raise ValueError(
                f"labels column {outer_label} has {len(self.super_image_lists)} super-classes, "
                f"fewer than super_classes_per_batch ({super_classes_per_batch})"
            )
        self.super_pairs = list(
            itertools.combinations(self.super_image_lists, super_classes_per_batch)
        )
        self._members = {s: list(d.values()) for s, d in self.super_image_lists.items()}
        self.reshuffle()

    def __iter__(self):
        self.reshuffle()
        yield from self.batches

    def __len__(self) -> int:
        return len(self.batches)

    def reshuffle(self):
        """Draw a new list of batches into ``self.batches``."""
        rng = c_f.NUMPY_RANDOM
        batches = []
        for super_tuple in self.super_pairs:
            for _ in range(self.batches_per_super_tuple):
                batch = []
                for super_label in super_tuple:
                    batch.extend(self._sub_batch(rng, self._members[super_label]))
                rng.shuffle(batch)
                batches.append(batch)
        rng.shuffle(batches)
        self.batches = batches

    def _sub_batch(self, rng, members) -> list[int]:
        # The same numpy calls as PML, on positions rather than copies of the lists, so
        # with the same generator state the draws are the same.
        order = list(range(len(members)))
        rng.shuffle(order)
        sub_batch: list[int] = []
        for c in order:
            if len(sub_batch) >= self.sub_batch_len:
                break
            items = members[c]
            k = len(items) if self.samples_per_class == "all" else self.samples_per_class
            if len(sub_batch) + k > self.sub_batch_len:
                continue
            picks = rng.choice(len(items), size=k, replace=len(items) < k)
            sub_batch.extend(items[picks].tolist())
        return sub_batch
