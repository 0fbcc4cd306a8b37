"""``WithSameParentLabelTester``: queries scored only against references of the same parent."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..core.validation import ArgumentError
from ..utils import common_functions as c_f
from .base_tester import BaseTester


class WithSameParentLabelTester(BaseTester):
    """For hierarchical labels (one column per level, the parent of level ``L`` in column
    ``L + 1``): at each level, the queries of each parent label are scored against the
    references with that parent, and the accuracies averaged over parents (``np.mean``).
    The last level has no parent and is never scored. Arguments are :class:`BaseTester`'s.

    Example:
        >>> import torch
        >>> from metricssl.testers import WithSameParentLabelTester
        >>> from metricssl.eval import AccuracyCalculator
        >>> x = torch.randn(40, 4) + 5 * (torch.arange(40) // 10)[:, None]
        >>> labels = torch.stack([torch.arange(40) // 10, torch.arange(40) // 20], dim=1)
        >>> tester = WithSameParentLabelTester(
        ...     dataloader_num_workers=0, data_device="cpu",
        ...     accuracy_calculator=AccuracyCalculator(include=("precision_at_1",)),
        ... )
        >>> acc = tester.test({"val": torch.utils.data.TensorDataset(x, labels)}, 1, torch.nn.Identity())
        >>> sorted(acc["val"])
        ['epoch', 'precision_at_1_level0']
    """

    def do_knn_and_accuracies(
        self,
        accuracies,
        embeddings_and_labels,
        query_split_name,
        reference_split_names,
        tag_suffix="",
    ):
        query, query_labels, reference, reference_labels = self.set_reference_and_query(
            embeddings_and_labels, query_split_name, reference_split_names
        )
        self.label_levels = [
            L for L in self.label_levels_to_evaluate(query_labels) if L < query_labels.shape[1] - 1
        ]
        if not self.label_levels:
            raise ArgumentError(
                "There are no valid label levels to evaluate: label_hierarchy_level "
                f"{self.label_hierarchy_level!r} must be less than the number of hierarchy "
                f"levels minus 1 ({query_labels.shape[1] - 1})"
            )
        includes_query = self.ref_includes_query(query_split_name, reference_split_names)
        for level in self.label_levels:
            query_parents = query_labels[:, level + 1]
            reference_parents = reference_labels[:, level + 1]
            per_parent = defaultdict(list)
            for parent in torch.unique(query_parents):
                c_f.LOGGER.info(f"Label level {level} and parent label {parent}")
                in_query = query_parents == parent
                in_reference = reference_parents == parent
                scores = self._score(
                    query[in_query],
                    query_labels[:, level][in_query],
                    reference[in_reference],
                    reference_labels[:, level][in_reference],
                    includes_query,
                )
                for metric, value in scores.items():
                    per_parent[metric].append(value)
            for metric, values in per_parent.items():
                keyname = self.accuracies_keyname(metric, label_hierarchy_level=level)
                accuracies[keyname] = np.mean(values)
        if len(self.label_levels) > 1:
            self.calculate_average_accuracies(
                accuracies, self.accuracy_calculator.get_curr_metrics(), self.label_levels
            )
