"""PML's testers (``pytorch_metric_learning.testers``): embed dataset splits and score them
with :class:`metricssl.eval.AccuracyCalculator`."""

from .base_tester import BaseTester
from .global_embedding_space import GlobalEmbeddingSpaceTester
from .global_twostream_embedding_space import GlobalTwoStreamEmbeddingSpaceTester
from .with_same_parent_label import WithSameParentLabelTester

__all__ = [
    "BaseTester",
    "GlobalEmbeddingSpaceTester",
    "GlobalTwoStreamEmbeddingSpaceTester",
    "WithSameParentLabelTester",
]
