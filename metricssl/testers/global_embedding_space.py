"""``GlobalEmbeddingSpaceTester``: every query against every reference, level by level."""

from __future__ import annotations

from .base_tester import BaseTester


class GlobalEmbeddingSpaceTester(BaseTester):
    """Scores each query split against its reference splits in one embedding space.

    For each label level ``L`` evaluated, the accuracies are stored under
    ``"<metric>_level<L>"``; with several levels, their mean under ``"AVERAGE_<metric>"``.
    Arguments are :class:`BaseTester`'s.

    Example:
        >>> import torch
        >>> from metricssl.testers import GlobalEmbeddingSpaceTester
        >>> from metricssl.eval import AccuracyCalculator
        >>> x = torch.cat([torch.randn(20, 4) - 5, torch.randn(20, 4) + 5])
        >>> data = torch.utils.data.TensorDataset(x, torch.arange(40) // 20)
        >>> tester = GlobalEmbeddingSpaceTester(
        ...     dataloader_num_workers=0,
        ...     data_device="cpu",
        ...     accuracy_calculator=AccuracyCalculator(include=("precision_at_1",)),
        ... )
        >>> acc = tester.test({"val": data}, 1, torch.nn.Identity())
        >>> acc["val"]["precision_at_1_level0"]
        1.0
    """

    def do_knn_and_accuracies(
        self, accuracies, embeddings_and_labels, query_split_name, reference_split_names
    ):
        query, query_labels, reference, reference_labels = self.set_reference_and_query(
            embeddings_and_labels, query_split_name, reference_split_names
        )
        self.label_levels = self.label_levels_to_evaluate(query_labels)
        includes_query = self.ref_includes_query(query_split_name, reference_split_names)
        for level in self.label_levels:
            scores = self._score(
                query, query_labels[:, level], reference, reference_labels[:, level], includes_query
            )
            for metric, value in scores.items():
                accuracies[self.accuracies_keyname(metric, label_hierarchy_level=level)] = value
        if len(self.label_levels) > 1:
            self.calculate_average_accuracies(
                accuracies, self.accuracy_calculator.get_curr_metrics(), self.label_levels
            )
