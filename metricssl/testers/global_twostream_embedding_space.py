"""``GlobalTwoStreamEmbeddingSpaceTester``: anchors against their positive/negative stream."""

from __future__ import annotations

import torch
import tqdm

from ..core.validation import ArgumentError
from ..utils import common_functions as c_f
from .base_tester import _check_not_empty
from .global_embedding_space import GlobalEmbeddingSpaceTester


class GlobalTwoStreamEmbeddingSpaceTester(GlobalEmbeddingSpaceTester):
    """For datasets whose items are ``(anchor, posneg, label)``: the anchors are the queries
    and the posneg stream the references (never the same rows, so ``ref_includes_query`` is
    False). A split can only be scored against itself.

    As in PML, the embeddings and labels are gathered in float32 on the CPU, and
    ``get_all_embeddings`` returns anchors and posnegs stacked: ``(2n, d)`` and ``(2n, levels)``.
    Arguments are :class:`BaseTester`'s; ``label_hierarchy_level`` selects the labels kept.

    Example:
        >>> import torch
        >>> from metricssl.testers import GlobalTwoStreamEmbeddingSpaceTester
        >>> from metricssl.eval import AccuracyCalculator
        >>> class Pairs(torch.utils.data.Dataset):
        ...     def __len__(self):
        ...         return 8
        ...     def __getitem__(self, i):
        ...         x = torch.full((3,), float(i))
        ...         return x, x + 0.1, i
        >>> tester = GlobalTwoStreamEmbeddingSpaceTester(
        ...     dataloader_num_workers=0, data_device="cpu", normalize_embeddings=False,
        ...     accuracy_calculator=AccuracyCalculator(include=("precision_at_1",)),
        ... )
        >>> tester.test({"train": Pairs()}, 1, torch.nn.Identity())["train"]["precision_at_1_level0"]
        1.0
    """

    def compute_all_embeddings(self, dataloader, trunk_model, embedder_model):
        anchors_all = posnegs_all = labels = None
        start = 0
        with torch.no_grad():
            for batch in tqdm.tqdm(dataloader):
                anchors, posnegs, label = self.data_and_label_getter(batch)
                label = c_f.process_label(label, self.label_hierarchy_level, self.label_mapper)
                a = self.get_embeddings_for_eval(trunk_model, embedder_model, anchors)
                pns = self.get_embeddings_for_eval(trunk_model, embedder_model, posnegs)
                if label.dim() == 1:
                    label = label.unsqueeze(1)
                if labels is None:
                    n = len(dataloader.dataset)
                    labels = torch.zeros(n, label.size(1))
                    anchors_all = torch.zeros(n, pns.size(1))
                    posnegs_all = torch.zeros(n, pns.size(1))
                end = start + pns.size(0)
                anchors_all[start:end] = a
                posnegs_all[start:end] = pns
                labels[start:end] = label
                start = end
        return anchors_all, posnegs_all, labels

    def get_all_embeddings(self, dataset, trunk_model, embedder_model, collate_fn):
        _check_not_empty(dataset)
        dataloader = c_f.get_eval_dataloader(
            dataset, self.batch_size, self.dataloader_num_workers, collate_fn
        )
        anchors, posnegs, labels = self.compute_all_embeddings(
            dataloader, trunk_model, embedder_model
        )
        anchors, posnegs = self.maybe_normalize(anchors), self.maybe_normalize(posnegs)
        return torch.cat([anchors, posnegs], dim=0), torch.cat([labels, labels], dim=0)

    def set_reference_and_query(
        self, embeddings_and_labels, query_split_name, reference_split_names
    ):
        if list(reference_split_names) != [query_split_name]:
            raise ArgumentError(
                f"{type(self).__name__} does not support different reference and query splits "
                f"(query {query_split_name!r}, references {reference_split_names!r})"
            )
        embeddings, labels = embeddings_and_labels[query_split_name]
        half = embeddings.shape[0] // 2
        query_labels = labels[:half]
        return embeddings[:half], query_labels, embeddings[half:], query_labels

    def ref_includes_query(self, query_split_name, reference_split_names):
        return False
