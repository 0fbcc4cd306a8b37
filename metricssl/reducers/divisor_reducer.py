"""DivisorReducer: the sum of the losses divided by a divisor the loss supplies."""

from __future__ import annotations

import torch

from .base_reducer import BaseReducer


class DivisorReducer(BaseReducer):
    """``sum(losses) / loss_info["divisor"]``; zero loss when the divisor is 0."""

    def __init__(self, collect_stats: bool | None = None):
        super().__init__(collect_stats=collect_stats)
        self.add_to_recordable_attributes(name="divisor", is_stat=True)

    def unpack_loss_info(self, loss_info):
        losses, loss_indices, reduction_type, kwargs = super().unpack_loss_info(loss_info)
        if reduction_type != "already_reduced":
            if "divisor" not in loss_info:
                raise ValueError("DivisorReducer needs a 'divisor' in the loss dictionary")
            kwargs = {"divisor": loss_info["divisor"]}
            self.divisor = kwargs["divisor"]
        return losses, loss_indices, reduction_type, kwargs

    def sum_and_divide(self, losses, embeddings, divisor):
        if divisor == 0:
            return self.zero_loss(embeddings)
        if losses.dtype in (torch.float16, torch.bfloat16):
            # Half sums overflow easily; add up in fp32.
            return (torch.sum(losses.float()) / divisor).to(losses.dtype)
        return torch.sum(losses) / divisor

    def element_reduction(self, losses, loss_indices, embeddings, labels, divisor=1):
        return self.sum_and_divide(losses, embeddings, divisor)

    def pos_pair_reduction(self, *args, **kwargs):
        return self.element_reduction(*args, **kwargs)

    def neg_pair_reduction(self, *args, **kwargs):
        return self.element_reduction(*args, **kwargs)

    def triplet_reduction(self, *args, **kwargs):
        return self.element_reduction(*args, **kwargs)
