"""Similarity search over embeddings with FAISS: exact, IVF, HNSW and IVF-PQ indexes.

``EmbeddingIndex`` needs FAISS (the ``cpu`` or ``gpu`` extra) and is imported on first use,
so that the shard format (:mod:`metricssl.index.shards`) works without it.
"""


def __getattr__(name):
    if name == "EmbeddingIndex":
        from .embedding_index import EmbeddingIndex

        return EmbeddingIndex
    raise AttributeError(f"module 'metricssl.index' has no attribute {name!r}")


__all__ = ["EmbeddingIndex"]
