"""PML's inference utilities (``pytorch_metric_learning.utils.inference``) over our own search.

``FaissKNN`` searches a :class:`metricssl.index.EmbeddingIndex` (exact FAISS search, on the
GPU through torch for CUDA tensors), ``FaissKMeans`` runs :func:`metricssl.eval.clustering.
cluster`, and ``InferenceModel`` / ``MatchFinder`` embed inputs with a model and compare or
search them. Call signatures and return conventions are PML's:
``knn(query, k, reference=None, ref_includes_query=False) -> (distances, indices)`` with
squared L2 distances, nearest first, as torch tensors on the query's device.

FAISS is imported on first use, so this module (and ``AccuracyCalculator``) imports without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.chunking import rows_per_chunk
from ..core.validation import check_number, check_same_device, check_same_width
from ..distances.base_distance import BaseDistance
from ..distances.cosine_similarity import CosineSimilarity
from ..distances.dot_product_similarity import DotProductSimilarity
from ..distances.lp_distance import LpDistance
from ..eval.inputs import check_finite
from ..eval.knn import ReferenceSet, balanced_chunks, nearest, search_bytes_per_row
from ..eval.pca import run_pca as run_pca  # PML's name at PML's path
from . import common_functions as c_f


def _embedding_index_class():
    from ..index.embedding_index import EmbeddingIndex

    return EmbeddingIndex


def _is_embedding_index(index) -> bool:
    return isinstance(index, _embedding_index_class())


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _check_2d(name: str, x) -> None:
    if not torch.is_tensor(x) or x.ndim != 2:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a 2D torch.Tensor, got {shape}")


# ------------------------------------------------------------------------------- match finding


class MatchFinder:
    """Decides which embeddings match: distance within (or similarity above) a threshold.

    Args:
        distance: a :class:`~metricssl.distances.BaseDistance` (e.g. ``CosineSimilarity()``).
            For a similarity (``is_inverted``), pairs with ``similarity >= threshold`` match;
            for a distance, pairs with ``distance <= threshold``.
        threshold: the default threshold of :meth:`get_matching_pairs` and :meth:`is_match`.

    Example:
        >>> import torch
        >>> from metricssl.distances import CosineSimilarity
        >>> from metricssl.utils.inference import MatchFinder
        >>> finder = MatchFinder(CosineSimilarity(), threshold=0.9)
        >>> x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
        >>> finder.get_matching_pairs(x).astype(int)
        array([[1, 1, 0],
               [1, 1, 0],
               [0, 0, 1]])
        >>> finder.is_match(x[:1], x[2:])
        False
    """

    def __init__(self, distance: BaseDistance, threshold: float | None = None):
        if not isinstance(distance, BaseDistance):
            raise TypeError(f"distance must be a BaseDistance, got {type(distance).__name__}")
        check_number("threshold", threshold, allow_none=True)
        self.distance = distance
        self.threshold = threshold

    def operate_on_emb(self, input_func, query_emb, ref_emb=None, *args, **kwargs):
        """``input_func(query_emb, ref_emb, ...)``, with ``ref_emb`` defaulting to the query."""
        if ref_emb is None:
            ref_emb = query_emb
        return input_func(query_emb, ref_emb, *args, **kwargs)

    def _threshold(self, threshold):
        threshold = self.threshold if threshold is None else threshold
        if threshold is None:
            raise ValueError("no threshold: pass threshold= here or to MatchFinder(...)")
        return threshold

    def _matches(self, values: torch.Tensor, threshold) -> torch.Tensor:
        return values >= threshold if self.distance.is_inverted else values <= threshold

    def get_matching_pairs(self, query_emb, ref_emb=None, threshold=None, return_tuples=False):
        """Which (query, reference) pairs match, for every query against every reference.

        Returns a (len(query), len(ref)) bool numpy array, or with ``return_tuples`` the list
        of matching ``(query_index, ref_index)`` tuples (row-major order).
        """
        threshold = self._threshold(threshold)
        with torch.no_grad():
            return self.operate_on_emb(
                self._get_matching_pairs, query_emb, ref_emb, threshold, return_tuples
            )

    def _get_matching_pairs(self, query_emb, ref_emb, threshold, return_tuples):
        _check_2d("query_emb", query_emb)
        _check_2d("ref_emb", ref_emb)
        matches = np.empty((query_emb.shape[0], ref_emb.shape[0]), dtype=bool)
        # Query blocks: the float distance block, not the bool result, bounds memory.
        step = rows_per_chunk(8 * max(1, ref_emb.shape[0]))
        for start in range(0, query_emb.shape[0], step):
            block = self.distance(query_emb[start : start + step], ref_emb)
            matches[start : start + step] = self._matches(block, threshold).cpu().numpy()
        if return_tuples:
            return list(zip(*np.where(matches)))
        return matches

    def is_match(self, x, y, threshold=None):
        """Whether each row of ``x`` matches the same row of ``y``: a bool for one pair, else
        a bool numpy array."""
        threshold = self._threshold(threshold)
        with torch.no_grad():
            output = self._matches(self.distance.pairwise_distance(x, y), threshold)
        if output.nelement() == 1:
            return bool(output.item())
        return output.cpu().numpy()


# ------------------------------------------------------------------------------------ k-NN


def mask_reshape_knn_idx(x: torch.Tensor, matches_self_idx: torch.Tensor) -> torch.Tensor:
    """``x`` without the entries flagged in ``matches_self_idx`` (one per row)."""
    return x[~matches_self_idx].view(x.shape[0], -1)


def return_results(D: torch.Tensor, I: torch.Tensor, ref_includes_query: bool):  # noqa: E741
    """PML's post-processing of a k+1 search when the reference contains the queries: drop
    each query's own index (row i's neighbour i), or its last neighbour when its own index
    is not among the k+1."""
    if not ref_includes_query:
        return D, I
    own = I == torch.arange(len(I), device=I.device).unsqueeze(1)
    own[~own.any(dim=1), -1] = True
    return mask_reshape_knn_idx(D, own), mask_reshape_knn_idx(I, own)


def _as_search_input(x):
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return x


def _add(index, vectors) -> None:
    if _is_embedding_index(index):
        index.add(vectors)
        return
    from ..index.vectors import to_numpy_float32

    index.add(to_numpy_float32(vectors))


def _search(index, query, k: int):
    if _is_embedding_index(index):
        return index.search(query, k)
    from ..index.vectors import to_numpy_float32

    # np.asarray: faiss.contrib.torch_utils (imported by PML) may hand back tensors.
    distances, indices = (np.asarray(a) for a in index.search(to_numpy_float32(query), k))
    if torch.is_tensor(query):
        return torch.from_numpy(distances), torch.from_numpy(indices)
    return distances, indices


def add_to_index_and_search(index, query, reference, k: int):
    """Add ``reference`` (when given) to ``index``, then search it for ``query``'s ``k``
    nearest neighbours: ``(distances, indices)``.

    ``index`` is an :class:`~metricssl.index.EmbeddingIndex` or a FAISS index. Torch queries
    give torch tensors (on the query's device for an EmbeddingIndex, on the CPU for a FAISS
    index), numpy queries numpy arrays.
    """
    if reference is not None:
        _add(index, reference)
    return _search(index, query, k)


def convert_to_gpu_index(index, gpus: Sequence[int] | None = None):
    """A FAISS GPU copy of a FAISS CPU index (all GPUs, or the ``gpus`` listed).

    An :class:`~metricssl.index.EmbeddingIndex` places itself on the GPU and is returned as
    is, as is an index that already is on the GPU. Raises ``RuntimeError`` when FAISS has no
    GPU support.
    """
    if _is_embedding_index(index) or "Gpu" in type(index).__name__:
        return index
    from ..index.faiss_gpu import faiss_gpu_count

    if faiss_gpu_count() == 0:
        raise RuntimeError("this FAISS build has no GPU support (or no CUDA device is visible)")
    import faiss

    if gpus is None:
        return faiss.index_cpu_to_all_gpus(index)
    return faiss.index_cpu_to_gpus_list(index, gpus=list(gpus))


def convert_to_cpu_index(index):
    """A FAISS CPU copy of a FAISS GPU index; anything else is returned as is."""
    if _is_embedding_index(index) or "Gpu" not in type(index).__name__:
        return index
    import faiss

    return faiss.index_gpu_to_cpu(index)


def try_gpu(index, query, reference, k: int, is_cuda: bool, gpus: Sequence[int] | None):
    """:func:`add_to_index_and_search` on a GPU copy of a FAISS index when the query is on
    CUDA (or ``gpus`` is given), FAISS has GPUs and ``k`` is within FAISS's GPU limit;
    otherwise, or if the GPU attempt fails, on the CPU. An EmbeddingIndex chooses by itself.
    """
    if _is_embedding_index(index):
        return add_to_index_and_search(index, query, reference, k)
    from ..index.faiss_gpu import GPU_MAX_K, faiss_gpu_count

    if (is_cuda or gpus is not None) and faiss_gpu_count() > 0:
        if k <= GPU_MAX_K:
            try:
                return add_to_index_and_search(
                    convert_to_gpu_index(index, gpus), query, reference, k
                )
            except (AttributeError, RuntimeError) as err:
                c_f.LOGGER.warning(f"k-NN search on the CPU: the GPU search failed ({err})")
        else:
            c_f.LOGGER.warning(f"k-NN search on the CPU: k = {k} > {GPU_MAX_K}, FAISS's GPU limit")
    return add_to_index_and_search(convert_to_cpu_index(index), query, reference, k)


class FaissKNN:
    """Exact k-nearest-neighbour search (squared L2) over an :class:`~metricssl.index.EmbeddingIndex`.

    A drop-in for PML's ``FaissKNN``, usable as ``AccuracyCalculator(knn_func=FaissKNN())``
    and inside :class:`InferenceModel`. ``knn(query, k, reference, ref_includes_query)``
    returns ``(distances, indices)``: float32 squared Euclidean distances and int64 reference
    indices, (len(query), k), nearest first, on the query's device. With
    ``ref_includes_query`` the reference contains the queries (row i of the query is row i of
    the reference); k+1 neighbours are searched and each query's own index dropped.

    Differences from PML: the default index is an exact flat L2 ``EmbeddingIndex`` (CUDA
    queries are searched on their GPU through torch, no FAISS GPU build needed); when fewer
    than k references exist the padding is index -1 with distance +inf (FAISS: +3.4e38);
    :meth:`train` trains an index that needs it (IVF) before adding (PML only adds);
    :meth:`save` writes an EmbeddingIndex file (see :meth:`metricssl.index.EmbeddingIndex.save`)
    and :meth:`load` reads those as well as FAISS files written by PML's ``FaissKNN.save``.

    Args:
        reset_before: build a fresh index at each call (then ``reference`` is what is searched).
        reset_after: drop the index after each call.
        index_init_fn: ``index_init_fn(dim)`` returning an ``EmbeddingIndex`` or a FAISS index
            (e.g. ``faiss.IndexFlatIP``, or ``lambda d: EmbeddingIndex(d, "hnsw")``); default:
            an exact L2 ``EmbeddingIndex``.
        gpus: GPU ids FAISS may use (a non-empty list); None: all visible ones.

    Example:
        >>> import torch
        >>> from metricssl.utils.inference import FaissKNN
        >>> knn = FaissKNN()
        >>> x = torch.randn(100, 8)
        >>> distances, indices = knn(x, 5, x, ref_includes_query=True)
        >>> indices.shape, bool((indices != torch.arange(100)[:, None]).all())
        (torch.Size([100, 5]), True)
    """

    def __init__(
        self,
        reset_before: bool = True,
        reset_after: bool = True,
        index_init_fn: Callable | None = None,
        gpus: Sequence[int] | None = None,
    ):
        _check_flag("reset_before", reset_before)
        _check_flag("reset_after", reset_after)
        if index_init_fn is not None and not callable(index_init_fn):
            raise TypeError(f"index_init_fn must be callable, got {type(index_init_fn).__name__}")
        if gpus is not None:
            if not isinstance(gpus, (list, tuple)):
                raise TypeError(f"gpus must be a list of GPU ids, got {type(gpus).__name__}")
            if len(gpus) < 1:
                raise ValueError("gpus must list at least one GPU id")
        self.reset()
        self.reset_before = reset_before
        self.reset_after = reset_after
        self.gpus = gpus
        self.index_init_fn = self._default_index if index_init_fn is None else index_init_fn

    def _default_index(self, dim: int):
        gpu_ids = None if self.gpus is None else list(self.gpus)
        return _embedding_index_class()(dim, kind="flat", metric="l2", gpu_ids=gpu_ids)

    def __call__(self, query, k: int, reference=None, ref_includes_query: bool = False):
        query, reference = _as_search_input(query), _as_search_input(reference)
        _check_2d("query", query)
        if reference is not None:
            _check_2d("reference", reference)
        check_number("k", k, low=1, integer=True)
        _check_flag("ref_includes_query", ref_includes_query)
        k = int(k) + int(ref_includes_query)
        c_f.LOGGER.info("running k-nn with k=%d", k)
        c_f.LOGGER.info("embedding dimensionality is %d", query.shape[1])
        if self.reset_before:
            self.index = self.index_init_fn(query.shape[1])
        if self.index is None:
            raise ValueError("the index is empty: call train() or add() first, or pass reference")
        if reference is not None and not self._is_trained():
            self._train(reference)
        distances, indices = try_gpu(
            self.index, query, reference, k, query.device.type == "cuda", self.gpus
        )
        distances = c_f.to_device(distances, device=query.device)
        indices = c_f.to_device(indices, device=query.device)
        if self.reset_after:
            self.reset()
        return return_results(distances, indices, ref_includes_query)

    def _is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def _train(self, embeddings) -> None:
        if _is_embedding_index(self.index):
            self.index.train(embeddings)
        else:
            from ..index.vectors import to_numpy_float32

            self.index.train(to_numpy_float32(embeddings))

    def train(self, embeddings) -> None:
        """Start a new index over ``embeddings`` (training it first if it needs training)."""
        embeddings = _as_search_input(embeddings)
        _check_2d("embeddings", embeddings)
        self.index = self.index_init_fn(embeddings.shape[1])
        if not self._is_trained():
            self._train(embeddings)
        self.add(embeddings)

    def add(self, embeddings) -> None:
        """Add ``embeddings`` to the current index; their indices follow the ones before."""
        if self.index is None:
            raise ValueError("no index to add to: call train() first")
        _add(self.index, _as_search_input(embeddings))

    def save(self, filename: str | os.PathLike) -> None:
        if self.index is None:
            raise ValueError("no index to save: call train() first")
        if _is_embedding_index(self.index):
            self.index.save(filename)
        else:
            import faiss

            faiss.write_index(convert_to_cpu_index(self.index), os.fspath(filename))

    def load(self, filename: str | os.PathLike) -> None:
        """Read an index written by :meth:`save`, or a FAISS index file (PML's format)."""
        try:
            self.index = _embedding_index_class().load(filename)
        except ValueError:
            import faiss

            if not os.path.isfile(filename):
                raise
            self.index = faiss.read_index(os.fspath(filename))

    def reset(self) -> None:
        self.index = None


def get_topk(distances: torch.Tensor, indices: torch.Tensor, k: int, get_largest: bool):
    """A ``BatchedDistance`` ``iter_fn`` writing each block's top-k into ``distances`` and
    ``indices`` (rows ``s:e``)."""

    def fn(mat, s, e):
        values, columns = torch.topk(mat, k, largest=get_largest, dim=1)
        distances[s:e] = values
        indices[s:e] = columns

    return fn


def _engine_metric(distance: BaseDistance, query: torch.Tensor, reference: torch.Tensor):
    """The k-NN engine's metric that ranks and scores exactly as ``distance`` does, or None.

    Only the built-in classes themselves qualify (a subclass may override ``compute_mat``),
    with p = 2, float32 inputs (the engine's arithmetic), no gradient to keep and no
    statistics to record: the engine never calls the distance object.
    """
    if distance.collect_stats or distance.p != 2:
        return None
    if any(t.dtype != torch.float32 or t.requires_grad for t in (query, reference)):
        return None
    kind = type(distance)
    if kind is LpDistance and distance.power in (1, 2):
        return "l2"
    if distance.power != 1:
        return None
    if kind is CosineSimilarity or (kind is DotProductSimilarity and distance.normalize_embeddings):
        return "cosine"
    return "ip" if kind is DotProductSimilarity else None


class CustomKNN:
    """Exact k-nearest neighbours under any metricssl distance, by chunks of query rows.

    A drop-in for PML's ``CustomKNN`` (usable as ``AccuracyCalculator(knn_func=...)``):
    ``knn(query, k, reference, ref_includes_query)`` returns ``(values, indices)`` of shape
    (len(query), k), the distance object's values (similarities largest first when
    ``distance.is_inverted``, distances smallest first otherwise) and int64 reference indices,
    on the query's device. ``reference=None`` searches the queries themselves, as PML does.
    With ``ref_includes_query`` (row i of the reference is query i) each query's own row is
    left out, as PML's "search k + 1 and drop the own row (else the last)" does.

    The neighbours are chosen by the exact k-NN engine's selection
    (:func:`metricssl.eval.knn.nearest`), so the ranking rule is the engine's: equal values
    are ordered by ascending reference index (PML's order among equal values is
    ``torch.topk``'s, which is unspecified). Where values do not tie, the neighbours are PML's.

    - ``LpDistance(p=2)`` with ``power`` 1 or 2, ``CosineSimilarity()`` and
      ``DotProductSimilarity()`` on float32 inputs are computed by the engine itself
      (:class:`metricssl.eval.knn.ReferenceSet`, squared L2 / cosine / inner product) and
      converted to the distance's values: square roots for ``power=1``, embeddings
      L2-normalised first when ``normalize_embeddings``.
    - Any other distance (other p or power, ``SNRDistance``, your own subclass, other dtypes,
      inputs that require grad, ``collect_stats``) computes its matrix chunk by chunk and the
      engine selects from it; the values are the matrix's own (its dtype, its gradient).
      Float64 matrices are ranked by their float32 rounding: values within one float32
      rounding of each other count as equal (ordered by index).

    Args:
        distance: a :class:`~metricssl.distances.BaseDistance`.
        batch_size: query rows per chunk (None: as many as the memory budget of
            :mod:`metricssl.core.chunking` allows). Results do not depend on it.

    Example:
        >>> import torch
        >>> from metricssl.distances import CosineSimilarity
        >>> from metricssl.utils.inference import CustomKNN
        >>> knn = CustomKNN(CosineSimilarity())
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> similarities, indices = knn(x, 2, x, ref_includes_query=True)
        >>> indices[0].tolist(), indices[1].tolist()  # row 0 ties with row 2 (cosine 1)
        ([2, 3], [3, 0])
    """

    def __init__(self, distance: BaseDistance, batch_size: int | None = None):
        if not isinstance(distance, BaseDistance):
            raise TypeError(f"distance must be a BaseDistance, got {type(distance).__name__}")
        check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
        self.distance = distance
        self.batch_size = batch_size

    def __call__(self, query, k: int, reference, ref_includes_query: bool = False):
        if reference is None:  # PML's distance(query, None) compares the queries with themselves
            reference = query
        _check_2d("query", query)
        _check_2d("reference", reference)
        check_same_device(query, reference, "query", "reference")
        check_same_width(query, reference, "query", "reference")
        _check_flag("ref_includes_query", ref_includes_query)
        n_ref = reference.shape[0]
        if ref_includes_query and n_ref < query.shape[0]:
            raise ValueError(
                f"ref_includes_query: reference row i must be query row i, but the reference "
                f"has {n_ref} rows for {query.shape[0]} queries"
            )
        check_number("k", k, low=1, high=n_ref - int(ref_includes_query), integer=True)
        check_finite(query, "query")
        check_finite(reference, "reference")
        k = int(k)
        if len(query) == 0:  # PML's answer: (0, k) tensors in the distance's dtype
            values = self.distance(query, reference)[:, :k]
            return values, torch.empty(values.shape, dtype=torch.int64, device=values.device)
        metric = _engine_metric(self.distance, query, reference)
        if metric is None:
            chunk_values = self._distance_chunks(query, reference, k)
            per_row = 2 * reference.element_size() * n_ref  # the distance's matrix + a temporary
        else:
            chunk_values = self._engine_chunks(query, reference, k, metric)
            per_row = 0
        per_row += search_bytes_per_row(n_ref, k)
        step = self.batch_size or rows_per_chunk(per_row)
        values, indices = [], []
        for rows in balanced_chunks(query.shape[0], step):
            self_columns = (
                torch.arange(rows.start, rows.stop, device=query.device)
                if ref_includes_query
                else None
            )
            chunk_v, chunk_i = chunk_values(rows, self_columns)
            values.append(chunk_v)
            indices.append(chunk_i)
        return torch.cat(values), torch.cat(indices)

    def _engine_chunks(self, query, reference, k: int, metric: str):
        """The engine computes the block; its values become the distance's values."""
        lp = metric == "l2"
        prepare = F.normalize if lp and self.distance.normalize_embeddings else (lambda x: x)
        ref = ReferenceSet(prepare(reference), metric)
        root = lp and self.distance.power == 1

        def chunk(rows: slice, self_columns):
            block = ref.distances(prepare(query[rows]))
            found = nearest(block, k, self_columns, nonnegative=lp, want_values=True)
            if lp:
                return (found.values.sqrt_() if root else found.values), found.columns
            return ref.similarities_from(found.values), found.columns

        return chunk

    def _distance_chunks(self, query, reference, k: int):
        """The distance computes the matrix; the engine selects from a float32 copy of it."""

        def chunk(rows: slice, self_columns):
            mat = self.distance(query[rows], reference)
            block = mat.detach().to(torch.float32, copy=True)
            if self.distance.is_inverted:  # the engine's blocks are "smaller is closer"
                block.neg_()
            columns = nearest(block, k, self_columns).columns
            return mat.gather(1, columns), columns

        return chunk


# ------------------------------------------------------------------------------- clustering


class FaissKMeans:
    """k-means clustering of embeddings: ``kmeans(x, nmb_clusters)`` -> cluster id per row.

    PML's ``FaissKMeans``: every keyword argument goes to ``faiss.Kmeans(d, nmb_clusters,
    **kwargs)`` (``niter``, ``nredo``, ``verbose``, ``seed``, ``gpu``, ``spherical``,
    ``max_points_per_centroid``, ... -- FAISS's defaults otherwise, so its random initial
    centroids drawn from ``seed`` = 1234 and its subsampling to 256 points per centroid), which
    trains on a float32 copy of ``x``; each row gets its nearest centroid. The same kwargs give
    PML's cluster ids, and so PML's NMI/AMI through ``AccuracyCalculator(kmeans_func=...)``.
    Returns int64 ids on ``x``'s device (:func:`metricssl.eval.clustering.faiss_kmeans`, which
    ``AccuracyCalculator`` runs with ``niter=20`` without a ``kmeans_func``, as PML's).

    Args:
        **kwargs: fields of ``faiss.ClusteringParameters``, or ``gpu``. An unknown name is
            refused here (TypeError naming it) rather than when clustering (PML: an
            AttributeError from FAISS).

    Example:
        >>> import torch
        >>> from metricssl.utils.inference import FaissKMeans
        >>> x = torch.cat([torch.randn(50, 4), torch.randn(50, 4) + 20])
        >>> ids = FaissKMeans(niter=20)(x, 2)
        >>> int(ids[:50].unique().numel()), bool(ids[0] != ids[-1])
        (1, True)
    """

    def __init__(self, **kwargs):
        _check_kmeans_kwargs(kwargs)
        self.kwargs = kwargs

    def __call__(self, x, nmb_clusters: int) -> torch.Tensor:
        from ..eval.clustering import faiss_kmeans

        x = _as_search_input(x)
        _check_2d("x", x)
        check_number("nmb_clusters", nmb_clusters, low=1, high=x.shape[0], integer=True)
        c_f.LOGGER.info(f"running k-means clustering with k={nmb_clusters}")
        c_f.LOGGER.info(f"embedding dimensionality is {x.shape[1]}")
        return faiss_kmeans(x, nmb_clusters, **self.kwargs)


def _check_kmeans_kwargs(kwargs) -> None:
    try:
        import faiss
    except ImportError:  # checked when clustering, which needs FAISS anyway
        return
    fields = faiss.ClusteringParameters()
    for name in kwargs:
        if name not in ("gpu", "progressive_dim_steps") and not hasattr(fields, name):
            raise TypeError(
                f"FaissKMeans got an unknown keyword argument {name!r}: not a field of "
                "faiss.ClusteringParameters (niter, nredo, verbose, seed, spherical, ...) or gpu"
            )


# ---------------------------------------------------------------------------- InferenceModel


class InferenceModel:
    """Embed inputs with a trained model, then match them or search a k-NN index of them.

    A drop-in for PML's ``InferenceModel``: ``get_embeddings(x)`` runs ``embedder(trunk(x))``
    in eval mode without gradient (L2-normalised by default); :meth:`train_knn` /
    :meth:`add_to_knn` index embeddings of a tensor, a list of tensors or a dataset (whose
    items are ``(input, label)``); :meth:`get_nearest_neighbors` searches that index;
    :meth:`get_matches` / :meth:`is_match` apply the :class:`MatchFinder`.

    Args:
        trunk: the model (any callable module).
        embedder: applied after the trunk (default: identity).
        match_finder: default ``MatchFinder(CosineSimilarity(), threshold=0.9)``.
        normalize_embeddings: L2-normalise the embeddings.
        knn_func: default ``FaissKNN(reset_before=False, reset_after=False)``.
        data_device: where inputs go (default: CUDA when available, else CPU).
        dtype: dtype inputs are cast to (default: unchanged).

    Example:
        >>> import torch
        >>> from metricssl.utils.inference import InferenceModel
        >>> model = InferenceModel(torch.nn.Linear(10, 4), data_device="cpu")
        >>> model.train_knn(torch.randn(200, 10))
        >>> distances, indices = model.get_nearest_neighbors(torch.randn(3, 10), k=5)
        >>> indices.shape
        torch.Size([3, 5])
    """

    def __init__(
        self,
        trunk: torch.nn.Module,
        embedder: torch.nn.Module | None = None,
        match_finder: MatchFinder | None = None,
        normalize_embeddings: bool = True,
        knn_func: Callable | None = None,
        data_device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if not callable(trunk):
            raise TypeError(f"trunk must be a model (callable), got {type(trunk).__name__}")
        if embedder is not None and not callable(embedder):
            raise TypeError(f"embedder must be a model (callable), got {type(embedder).__name__}")
        if match_finder is not None and not isinstance(match_finder, MatchFinder):
            raise TypeError(
                f"match_finder must be a MatchFinder, got {type(match_finder).__name__}"
            )
        _check_flag("normalize_embeddings", normalize_embeddings)
        if knn_func is not None and not callable(knn_func):
            raise TypeError(f"knn_func must be callable, got {type(knn_func).__name__}")
        if data_device is not None and not isinstance(data_device, (str, torch.device)):
            raise TypeError(f"data_device must be a str or torch.device, got {data_device!r}")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
        self.trunk = trunk
        self.embedder = torch.nn.Identity() if embedder is None else embedder
        self.match_finder = (
            MatchFinder(distance=CosineSimilarity(), threshold=0.9)
            if match_finder is None
            else match_finder
        )
        self.knn_func = (
            FaissKNN(reset_before=False, reset_after=False) if knn_func is None else knn_func
        )
        self.normalize_embeddings = normalize_embeddings
        self.data_device = (
            c_f.use_cuda_if_available() if data_device is None else torch.device(data_device)
        )
        self.dtype = dtype

    def get_embeddings_from_tensor_or_dataset(self, inputs, batch_size: int) -> torch.Tensor:
        """Embeddings of a tensor, a list of tensors or a dataset, ``batch_size`` at a time."""
        check_number("batch_size", batch_size, low=1, integer=True)
        inputs = self.process_if_list(inputs)
        embeddings = []
        if isinstance(inputs, (torch.Tensor, list)):
            for i in range(0, len(inputs), batch_size):
                embeddings.append(self.get_embeddings(inputs[i : i + batch_size]))
        elif isinstance(inputs, torch.utils.data.Dataset):
            for inp, _ in torch.utils.data.DataLoader(inputs, batch_size=batch_size):
                embeddings.append(self.get_embeddings(inp))
        else:
            raise TypeError(f"Indexing {type(inputs)} is not supported.")
        return torch.cat(embeddings)

    def train_knn(self, inputs, batch_size: int = 64) -> None:
        """Build the k-NN index from the embeddings of ``inputs``."""
        self.call_knn(self.knn_func.train, inputs, batch_size)

    def add_to_knn(self, inputs, batch_size: int = 64) -> None:
        """Add the embeddings of ``inputs`` to the k-NN index."""
        self.call_knn(self.knn_func.add, inputs, batch_size)

    def call_knn(self, func, inputs, batch_size: int) -> None:
        func(self.get_embeddings_from_tensor_or_dataset(inputs, batch_size))

    def get_nearest_neighbors(self, query, k: int):
        """``(distances, indices)`` of the ``k`` indexed embeddings nearest to each query."""
        return self.knn_func(self.get_embeddings(query), k)

    def get_embeddings(self, x) -> torch.Tensor:
        x = self.process_if_list(x)
        if isinstance(x, torch.Tensor):
            x = c_f.to_device(x, device=self.data_device, dtype=self.dtype)
        self.trunk.eval()
        self.embedder.eval()
        with torch.no_grad():
            x_emb = self.embedder(self.trunk(x))
        if self.normalize_embeddings:
            x_emb = torch.nn.functional.normalize(x_emb, p=2, dim=1)
        return x_emb

    def get_matches(self, query, ref=None, threshold=None, return_tuples=False):
        """Matching pairs between the queries and ``ref`` (the queries themselves when None):
        see :meth:`MatchFinder.get_matching_pairs`."""
        query_emb = self.get_embeddings(query)
        ref_emb = query_emb if ref is None else self.get_embeddings(ref)
        return self.match_finder.get_matching_pairs(query_emb, ref_emb, threshold, return_tuples)

    def is_match(self, x, y, threshold=None):
        """Whether ``x[i]`` and ``y[i]`` match: see :meth:`MatchFinder.is_match`."""
        return self.match_finder.is_match(self.get_embeddings(x), self.get_embeddings(y), threshold)

    def save_knn_func(self, filename) -> None:
        self.knn_func.save(filename)

    def load_knn_func(self, filename) -> None:
        self.knn_func.load(filename)

    def process_if_list(self, x):
        """A list of tensors becomes one stacked tensor; anything else is returned as is."""
        if isinstance(x, list) and all(isinstance(x_, torch.Tensor) for x_ in x):
            return torch.stack(x)
        return x
