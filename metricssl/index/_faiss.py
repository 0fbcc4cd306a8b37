"""FAISS, imported once for the index layer with an error that says how to install it.

FAISS is an optional dependency (the ``cpu`` or ``gpu`` extra): the shard format
(:mod:`metricssl.index.shards`) and everything outside the index layer work without it.
"""

try:
    import faiss
except ImportError as err:
    raise ImportError(
        "metricssl.index needs FAISS: pip install 'metricssl[cpu]', or 'metricssl[gpu]' for "
        "FAISS on NVIDIA GPUs (Linux, CUDA 12); install one of the two, not both"
    ) from err

__all__ = ["faiss"]
