"""BaseRegularizer: a penalty on a batch of embeddings or weights, reduced like a loss."""

from __future__ import annotations

from ..core import common as c_f
from ..core.validation import check_embeddings
from ..reducers.module_with_reducer import ModuleWithRecordsReducerAndDistance


class BaseRegularizer(ModuleWithRecordsReducerAndDistance):
    """Subclasses implement ``compute_loss(x)`` returning a loss dictionary over the rows of x."""

    def compute_loss(self, x):
        raise NotImplementedError

    def forward(self, x):
        self.reset_stats()
        # Zero rows (an empty batch's embeddings) get PML's answer, not an error.
        check_embeddings(x, "x", allow_empty=True)
        return self.reducer(self.compute_loss(x), x, c_f.torch_arange_from_size(x))
