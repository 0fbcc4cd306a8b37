"""Similarity search over embeddings with FAISS: exact, IVF, HNSW and IVF-PQ indexes."""

from .embedding_index import EmbeddingIndex

__all__ = ["EmbeddingIndex"]
