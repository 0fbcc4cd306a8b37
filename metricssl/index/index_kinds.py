"""The index kinds :class:`EmbeddingIndex` offers, as FAISS factory strings, and the few
FAISS structure questions it needs answered (where ids live, which search knobs exist).

Every index is built with ``faiss.index_factory`` so a named kind and a user's factory string
go through the same code. Ids are stored natively by IVF indexes; anything else is wrapped in
``IndexIDMap2`` (which also allows reconstructing vectors by position).
"""

from __future__ import annotations

import numpy as np

from ._faiss import faiss

KINDS = ("flat", "ivf_flat", "hnsw", "ivf_pq")
METRICS = ("l2", "ip", "cosine")
FAISS_METRIC = {
    "l2": faiss.METRIC_L2,
    "ip": faiss.METRIC_INNER_PRODUCT,
    "cosine": faiss.METRIC_INNER_PRODUCT,  # on L2-normalised vectors
}
# Search-time knobs, by their FAISS ParameterSpace names.
SEARCH_PARAMETERS = ("nprobe", "efSearch")


def factory_string(kind: str, nlist: int, m: int, nbits: int, hnsw_m: int) -> str:
    """The FAISS factory string of one of :data:`KINDS`."""
    return {
        "flat": "Flat",
        "ivf_flat": f"IVF{nlist},Flat",
        "hnsw": f"HNSW{hnsw_m},Flat",
        "ivf_pq": f"IVF{nlist},PQ{m}x{nbits}",
    }[kind]


def default_pq_m(dim: int) -> int:
    """Sub-quantizers for IVF-PQ: the largest divisor of ``dim`` that is at most
    ``min(64, dim // 4)`` (4+ dimensions per 8-bit code, at most 64 bytes a vector)."""
    cap = max(1, min(64, dim // 4))
    return max(m for m in range(1, cap + 1) if dim % m == 0)


def build(
    dim: int,
    factory: str,
    metric: str,
    ef_construction: int | None = None,
    polysemous_training: bool = True,
):
    """A new, empty CPU index for ``factory``, able to store user ids.

    Args:
        ef_construction: HNSW build depth to set (None: FAISS's default).
        polysemous_training: False skips FAISS's polysemous code reordering for IVF-PQ. It
            only serves Hamming-filtered search (off unless ``polysemous_ht`` is set) and
            makes training many times slower.

    Raises ``ValueError`` when FAISS cannot build ``factory`` for ``dim``.
    """
    try:
        index = faiss.index_factory(dim, factory, FAISS_METRIC[metric])
    except RuntimeError as err:
        raise ValueError(
            f"factory={factory!r} is not a FAISS index for dim={dim}: {_faiss_message(err)}"
        ) from None
    if ef_construction is not None:
        hnsw = hnsw_of(index)
        if hnsw is not None:
            hnsw.efConstruction = ef_construction
    ivf = faiss.try_extract_index_ivf(index)
    ivf = faiss.downcast_index(ivf) if ivf is not None else None
    if not polysemous_training and isinstance(ivf, faiss.IndexIVFPQ):
        ivf.do_polysemous_training = False
    if not stores_ids(index):
        index = faiss.IndexIDMap2(index)
    return index


def stores_ids(index) -> bool:
    """Whether ``add_with_ids`` works on ``index`` without an ``IndexIDMap`` wrapper."""
    return isinstance(index, faiss.IndexIDMap) or faiss.try_extract_index_ivf(index) is not None


def hnsw_of(index):
    """The ``HNSW`` graph structure inside ``index`` (or None)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    return index.hnsw if isinstance(index, faiss.IndexHNSW) else None


def stored_ids(index) -> np.ndarray:
    """A copy of the ids held by ``index`` (an ``IndexIDMap`` or an IVF index)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        return faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size()).copy()
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = []
    for i in range(ivf.nlist):
        size = lists.list_size(i)
        if size:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(i), size).copy())
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def supported_search_parameters(index) -> tuple[str, ...]:
    """Which of :data:`SEARCH_PARAMETERS` FAISS can set on ``index``."""
    space = faiss.ParameterSpace()
    supported = []
    for name in SEARCH_PARAMETERS:
        try:
            # Setting the parameter to its current value is a harmless probe.
            space.set_index_parameter(index, name, _current_value(index, name))
        except RuntimeError:
            continue
        supported.append(name)
    return tuple(supported)


def _current_value(index, name: str) -> int:
    if name == "nprobe":
        ivf = faiss.try_extract_index_ivf(index)
        return ivf.nprobe if ivf is not None else 1
    hnsw = hnsw_of(index)
    return hnsw.efSearch if hnsw is not None else 16


def _faiss_message(err: RuntimeError) -> str:
    # FAISS prefixes its messages with the C++ function and source line; keep the reason.
    text = str(err).strip()
    return text.rsplit(": ", 1)[-1] if "Error in" in text else text
