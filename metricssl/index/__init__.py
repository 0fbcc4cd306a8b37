"""Similarity search over embeddings with FAISS: exact, IVF, HNSW and IVF-PQ indexes."""

try:
    import faiss  # noqa: F401
except ImportError as err:
    raise ImportError(
        "metricssl.index needs FAISS: pip install 'metricssl[cpu]', or 'metricssl[gpu]' for "
        "FAISS on NVIDIA GPUs (Linux, CUDA 12); install one of the two, not both"
    ) from err

from .embedding_index import EmbeddingIndex  # noqa: E402

__all__ = ["EmbeddingIndex"]
