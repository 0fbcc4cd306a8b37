"""FixedSetOfTriplets: one fixed, random set of (anchor, positive, negative) triplets."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

from ..core import common as c_f
from ..core.validation import check_number
from .m_per_class_sampler import _as_int, _labels_to_numpy


class FixedSetOfTriplets(Sampler[int]):
    """Draws ``num_triplets`` triplets once; every epoch yields them all, in a new order.

    For experiments where the only supervision is a set of triplets rather than labels
    (see e.g. Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020,
    whose PML provides this sampler). Each triplet picks two distinct classes, then an
    anchor and a positive from the first (the same item twice when the class has a single
    member) and a negative from the second. The epoch yields ``3 * num_triplets`` indices,
    triplet by triplet, in a fresh random order of triplets: with a DataLoader batch size
    that is a multiple of 3, pass
    :class:`~metricssl.miners.embeddings_already_packaged_as_triplets.EmbeddingsAlreadyPackagedAsTriplets`'s
    output to the loss.

    Randomness comes from ``metricssl.utils.common_functions.NUMPY_RANDOM`` (numpy's global
    generator by default) and follows PML's draws exactly: with the same seed and labels
    whose first appearances come in the same order, the triplets and every epoch's order
    are PML's.

    Deviations from PML: bad arguments raise ``ValueError``/``TypeError`` (PML asserts, or
    fails inside numpy when there is a single class); CUDA label tensors are accepted.

    Example:
        >>> import torch
        >>> from metricssl.samplers.fixed_set_of_triplets import FixedSetOfTriplets
        >>> labels = torch.arange(30) % 5
        >>> sampler = FixedSetOfTriplets(labels, num_triplets=100)
        >>> loader = torch.utils.data.DataLoader(range(30), batch_size=48, sampler=sampler)
        >>> len(sampler)
        300

    Args:
        labels: one label per dataset item (tensor, array or sequence), at least 2 classes.
        num_triplets: how many triplets to draw.
    """

    def __init__(self, labels, num_triplets: int):
        labels = _labels_to_numpy(labels)
        num_triplets = _as_int("num_triplets", num_triplets)
        check_number("num_triplets", num_triplets, low=1, integer=True)
        # Classes in order of first appearance, members in dataset order: PML's dict order,
        # which the draws index into.
        classes, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        by_appearance = np.argsort(first)
        rank = np.empty_like(by_appearance)
        rank[by_appearance] = np.arange(len(classes))
        members = np.argsort(rank[inverse.reshape(-1)], kind="stable")
        sizes = np.bincount(rank[inverse.reshape(-1)], minlength=len(classes))
        groups = np.split(members, np.cumsum(sizes)[:-1])
        self.labels_to_indices = {
            label: group for label, group in zip(classes[by_appearance].tolist(), groups)
        }
        if len(self.labels_to_indices) < 2:
            raise ValueError("labels must contain at least 2 classes to form triplets")
        self.num_triplets = num_triplets
        self.create_fixed_set_of_triplets()

    def __len__(self) -> int:
        return self.fixed_set_of_triplets.shape[0] * 3

    def __iter__(self):
        c_f.NUMPY_RANDOM.shuffle(self.fixed_set_of_triplets)
        return iter(self.fixed_set_of_triplets.reshape(-1).tolist())

    def create_fixed_set_of_triplets(self):
        """Draw ``self.fixed_set_of_triplets``, an int array of shape (num_triplets, 3)."""
        rng = c_f.NUMPY_RANDOM
        groups = list(self.labels_to_indices.values())
        sizes = [len(g) for g in groups]
        num_classes = len(groups)
        triplets = np.empty((self.num_triplets, 3), dtype=np.int64)
        # Same calls as PML, indexing positions instead of copying the lists each time, so
        # the draws (which depend only on the population sizes) are identical.
        for i in range(self.num_triplets):
            a_class, n_class = rng.choice(num_classes, size=2, replace=False)
            a_members, n_members = groups[a_class], groups[n_class]
            a, p = rng.choice(sizes[a_class], size=2, replace=sizes[a_class] < 2)
            n = rng.choice(sizes[n_class], replace=False)
            triplets[i] = a_members[a], a_members[p], n_members[n]
        self.fixed_set_of_triplets = triplets
