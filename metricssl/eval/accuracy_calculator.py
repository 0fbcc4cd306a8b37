"""``AccuracyCalculator``: PML's retrieval and clustering metrics from one chunked k-NN search.

A drop-in for ``pytorch_metric_learning.utils.accuracy_calculator.AccuracyCalculator``: the same
constructor, ``get_accuracy`` signature, metric names and values, plus opt-in metrics of ours.
Where PML materialises a (queries x k) neighbour table (queries x references for ``k=None``),
here a single exact search (:mod:`metricssl.eval.knn`) walks memory-bounded query chunks and
every metric is reduced per chunk to one number per query.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch

from ..core import common as c_f
from ..core.chunking import row_chunks, rows_per_chunk
from ..core.validation import check_number
from . import retrieval_metrics as rm
from .clustering import clustering_scores, faiss_kmeans
from .inputs import as_embeddings, as_labels, label_codes, resolve_device
from .knn import (
    ColumnGroups,
    GroupSearch,
    ReferenceSet,
    Search,
    balanced_chunks,
    iter_neighbors,
)
from .knn_accuracy import knn_vote

EQUALITY = torch.eq

PML_METRICS = (
    "AMI",
    "NMI",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)
EXTRA_METRICS = ("ARI", "knn_accuracy_majority", "knn_accuracy_weighted", "recall_at_k")
ALL_METRICS = tuple(sorted(PML_METRICS + EXTRA_METRICS))

_RANKING = (
    "precision_at_1",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "r_precision",
    "mean_reciprocal_rank",
    "recall_at_k",
)
_CLUSTERING = ("NMI", "AMI", "ARI")
_KNN_CLASSIFICATION = ("knn_accuracy_weighted", "knn_accuracy_majority")
_CUSTOM_PREFIX = "calculate_"
# Rows whose norm is this close to 1 count as L2-normalised (float32 normalisation leaves
# errors near 1e-7): their L2 order is then their cosine order.
_UNIT_NORM_TOLERANCE = 1e-5


def _check_metric_names(argument: str, names, known) -> None:
    if not isinstance(names, (tuple, list)):
        raise TypeError(f"{argument} must be a tuple or list of metric names, got {names!r}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"{argument} has unknown metric name(s) {unknown}; choose from {sorted(known)}"
        )


class AccuracyCalculator:
    """Retrieval, k-NN classification and clustering metrics of embeddings.

    Metrics (PML's, computed by default, same names and values as PML 2.9):
    ``precision_at_1``, ``r_precision``, ``mean_average_precision_at_r`` (Musgrave, Belongie and
    Lim, "A Metric Learning Reality Check", ECCV 2020), ``mean_average_precision``,
    ``mean_reciprocal_rank``, ``NMI``, ``AMI``. Ours, computed only when named in ``include``:
    ``recall_at_k`` (one key ``recall_at_<k>`` per k), ``knn_accuracy_weighted`` and
    ``knn_accuracy_majority`` (k-NN classification of the queries; see
    :mod:`metricssl.eval.knn_accuracy`), ``ARI``.

    Retrieval ranks references by squared Euclidean distance, nearest first, equal distances by
    reference index: the order of PML's default ``FaissKNN``. The query itself is left out when
    ``ref_includes_query``. Queries whose label has no other reference are left out of the
    retrieval metrics, as in PML (all queries count for k-NN accuracy). k-NN accuracy ranks by
    cosine similarity (the self-supervised-learning protocol).

    Clustering metrics run PML's default k-means on the queries, with as many clusters as query
    labels (:func:`metricssl.eval.clustering.faiss_kmeans` with ``niter=20``: FAISS's random
    initial centroids, 256 points per centroid), so NMI/AMI are PML's;
    ``kmeans_func=KMeansPlusPlus()`` (:mod:`metricssl.eval.clustering`) clusters every point
    from a greedy k-means++ seeding instead.

    Args:
        include: metrics to compute (default: PML's seven). Unknown names raise ValueError.
        exclude: metrics to leave out.
        avg_of_avgs: average per class first, then over classes.
        return_per_class: return a list of per-class values (ascending label order) instead.
        k: neighbours searched, as PML: ``None`` ranks every reference, ``"max_bin_count"`` the
            size of the largest class (enough for R-precision and MAP@R), or an int. PML pads
            an int k larger than the reference set with index -1 and silently computes wrong
            values; here it is clipped to the reference set with a warning.
        label_comparison_fn: ``fn(query_labels, reference_labels) -> bool tensor`` deciding
            relevance (default: equality; multi-dimensional labels are equal when every entry
            is). Not supported with clustering or k-NN accuracy (NotImplementedError, as PML).
        device: where to compute (default: the query's device; PML moves to CUDA when present).
        knn_func: PML-style ``knn_func(query, k, reference, ref_includes_query) ->
            (distances, indices)`` used instead of the built-in search for retrieval metrics.
        kmeans_func: PML-style ``kmeans_func(embeddings, n_clusters) -> cluster ids``.
        recall_at_k: the k values of ``recall_at_k``.
        knn_k: neighbours voting in k-NN accuracy (clipped to the reference set).
        knn_temperature: temperature of the weighted vote's ``exp(similarity / T)``.
        seed: seed of the default k-means (None: FAISS's, 1234, as PML).
        progress: show progress bars (default: only for long searches).

    Subclasses may add metrics as in PML: a method ``calculate_<name>(self, **kwargs)``, listed
    in ``requires_knn()`` when it reads ``knn_labels`` (then the (queries x k) neighbour table
    is materialised for it, as PML does) or in ``requires_clustering()``.

    Example:
        >>> import torch
        >>> from metricssl.eval.accuracy_calculator import AccuracyCalculator
        >>> emb, labels = torch.randn(500, 16), torch.randint(0, 5, (500,))
        >>> calc = AccuracyCalculator(k="max_bin_count", exclude=("NMI", "AMI"))
        >>> sorted(calc.get_accuracy(emb, labels))[:2]
        ['mean_average_precision', 'mean_average_precision_at_r']
        >>> calc.get_accuracy(emb, labels, include=("recall_at_k",))["recall_at_1"] >= 0
        True
    """

    def __init__(
        self,
        include=(),
        exclude=(),
        avg_of_avgs: bool = False,
        return_per_class: bool = False,
        k: int | str | None = None,
        label_comparison_fn: Callable | None = None,
        device: torch.device | str | None = None,
        knn_func: Callable | None = None,
        kmeans_func: Callable | None = None,
        *,
        recall_at_k: tuple[int, ...] = (1, 2, 4, 8),
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        seed: int | None = None,
        progress: bool | None = None,
    ):
        custom = self._custom_metrics()
        known = set(ALL_METRICS) | set(custom)
        _check_metric_names("include", include, known)
        _check_metric_names("exclude", exclude, known)
        for name, flag in (("avg_of_avgs", avg_of_avgs), ("return_per_class", return_per_class)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if avg_of_avgs and return_per_class:
            raise ValueError("avg_of_avgs and return_per_class are mutually exclusive")
        if not (k is None or k == "max_bin_count"):
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
                raise ValueError(
                    f"k must be an integer greater than 0, or None, or 'max_bin_count', got {k!r}"
                )
        for name, fn in (
            ("label_comparison_fn", label_comparison_fn),
            ("knn_func", knn_func),
            ("kmeans_func", kmeans_func),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if device is not None and not isinstance(device, (str, torch.device)):
            raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
        if isinstance(recall_at_k, int) or not isinstance(recall_at_k, (tuple, list)):
            raise TypeError(f"recall_at_k must be a tuple of ints, got {recall_at_k!r}")
        if not recall_at_k:
            raise ValueError("recall_at_k must name at least one k")
        for value in recall_at_k:
            check_number("recall_at_k", value, low=1, integer=True)
        check_number("knn_k", knn_k, low=1, integer=True)
        check_number("knn_temperature", knn_temperature, low=0, low_inclusive=False)
        if seed is not None:
            check_number("seed", seed, low=0, high=2**31 - 1, integer=True)
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool or None, got {progress!r}")

        # PML: the constructor's include/exclude fix the metrics a call may compute; with no
        # include, that is every metric, and the default set is PML's seven plus subclass ones.
        universe = list(include) if include else sorted(known)
        self._universe = [m for m in universe if m not in exclude]
        default = list(include) if include else sorted(set(PML_METRICS) | set(custom))
        self._default = [m for m in default if m not in exclude]
        self.curr_metrics = list(self._default)

        self.avg_of_avgs = avg_of_avgs
        self.return_per_class = return_per_class
        self.k = k
        self.custom_label_comparison = label_comparison_fn not in (None, EQUALITY)
        self.label_comparison_fn = label_comparison_fn or EQUALITY
        if self.custom_label_comparison:
            self._check_categorical(self._default)
        self.device = None if device is None else torch.device(device)
        self.knn_func = knn_func
        self.kmeans_func = kmeans_func
        self.recall_at_k = tuple(sorted(set(recall_at_k)))
        self.knn_k = knn_k
        self.knn_temperature = float(knn_temperature)
        self.seed = seed
        self.progress = progress

    # -- PML's public helpers ------------------------------------------------------------------

    @classmethod
    def _custom_metrics(cls) -> list[str]:
        return [n[len(_CUSTOM_PREFIX) :] for n in dir(cls) if n.startswith(_CUSTOM_PREFIX)]

    def get_curr_metrics(self) -> list[str]:
        return list(self.curr_metrics)

    def get_function_dict(self, include=(), exclude=()) -> dict[str, Callable]:
        """PML's ``{metric name: function}`` for ``include`` minus ``exclude``.

        With no ``include``, the metrics the calculator computes by default (PML's set, and
        ``calculate_<name>`` methods of a subclass); names in PML's order (sorted). Each
        function takes PML's keyword arguments of one evaluation (``knn_labels``,
        ``query_labels``, ``not_lone_query_mask``, ``ref_includes_query``, ``label_counts``,
        ``cluster_labels``) and returns PML's value: a subclass's metric is its bound
        ``calculate_<name>``, a built-in one computes PML's formula from those arguments
        (:meth:`_get_accuracy` calls them all). ``get_accuracy`` does not go through them: it
        computes every metric from one chunked search. Unknown names raise ``ValueError``
        (PML drops them silently).

        Example:
            >>> from metricssl.eval import AccuracyCalculator
            >>> calc = AccuracyCalculator(exclude=("NMI", "AMI"))
            >>> list(calc.get_function_dict(exclude=("r_precision",)))
            ['mean_average_precision', 'mean_average_precision_at_r', 'mean_reciprocal_rank', 'precision_at_1']
        """
        functions = {}
        for name in sorted(self._select(include, exclude)):
            custom = getattr(self, _CUSTOM_PREFIX + name, None)
            functions[name] = (
                custom if custom is not None else functools.partial(_pml_metric, self, name)
            )
        return functions

    def _get_accuracy(self, function_dict, **kwargs) -> dict:
        """PML's: ``{name: function(**kwargs)}`` over a :meth:`get_function_dict`."""
        return {name: function(**kwargs) for name, function in function_dict.items()}

    def requires_clustering(self) -> list[str]:
        return list(_CLUSTERING)

    def requires_knn(self) -> list[str]:
        return list(_RANKING)

    def description(self) -> str:
        return "avg_of_avgs" if self.avg_of_avgs else ""

    def get_cluster_labels(self, query, query_labels, **kwargs):
        """Cluster ids of the queries: k-means with one cluster per distinct query label."""
        dim = 0 if query_labels.ndim == 2 else None
        n_clusters = int(torch.unique(query_labels, dim=dim).shape[0])
        if self.kmeans_func is not None:
            return self.kmeans_func(query, n_clusters)
        # PML's default: FaissKMeans(niter=20) (on the GPU when FAISS has one), which logs these.
        c_f.LOGGER.info(f"running k-means clustering with k={n_clusters}")
        c_f.LOGGER.info(f"embedding dimensionality is {query.shape[1]}")
        gpu = False
        if query.is_cuda:  # (imported here: the calculator itself imports without FAISS)
            from ..index.faiss_gpu import faiss_gpu_count

            gpu = faiss_gpu_count() > 0
        seed = {} if self.seed is None else {"seed": self.seed}
        return faiss_kmeans(query, n_clusters, niter=20, gpu=gpu, **seed)

    def _check_categorical(self, metrics) -> None:
        needs_classes = [m for m in metrics if m in _CLUSTERING + _KNN_CLASSIFICATION]
        if needs_classes:
            raise NotImplementedError(
                f"Unsupported: {needs_classes} with a custom label_comparison_fn "
                "(exclude them, as with PML's clustering metrics)"
            )

    def _select(self, include, exclude) -> list[str]:
        known = set(ALL_METRICS) | set(self._custom_metrics())
        _check_metric_names("include", include, known)
        _check_metric_names("exclude", exclude, known)
        chosen = [m for m in include if m in self._universe] if include else self._default
        chosen = [m for m in chosen if m not in exclude]
        if self.custom_label_comparison:
            self._check_categorical(chosen)
        return chosen

    # -- evaluation ----------------------------------------------------------------------------

    def get_accuracy(
        self,
        query,
        query_labels,
        reference=None,
        reference_labels=None,
        ref_includes_query: bool = False,
        include=(),
        exclude=(),
    ) -> dict:
        """Metrics of ``query`` retrieving from ``reference`` (itself when None).

        Args:
            query: (nq, d) embeddings, torch tensor (any device) or numpy array.
            query_labels: (nq,) labels, or (nq, label_dims).
            reference: (nr, d) embeddings to search; None searches ``query`` against itself
                (then ``ref_includes_query`` is True and ``reference_labels`` is ignored).
            reference_labels: (nr,) labels of ``reference``.
            ref_includes_query: the first nq references are the queries themselves (each
                query's own entry is excluded from its neighbours).
            include / exclude: metrics for this call (within the constructor's set).

        Returns:
            ``{metric: float}`` (lists per class with ``return_per_class``); NaN for retrieval
            metrics when no query label occurs among the references.
        """
        metrics = self._select(include, exclude)
        self.curr_metrics = metrics
        device = resolve_device(self.device, query)
        q = as_embeddings(query, "query", device)
        ql = as_labels(query_labels, q.shape[0], "query_labels", "query", device)
        same = reference is None
        if same:
            r, rl, ref_includes_query = q, ql, True
        else:
            r = as_embeddings(reference, "reference", device)
            rl = as_labels(reference_labels, r.shape[0], "reference_labels", "reference", device)
            if r.shape[1] != q.shape[1]:
                raise ValueError(
                    f"query has embedding size {q.shape[1]} but reference has {r.shape[1]}"
                )
            if ref_includes_query:
                self._check_ref_includes_query(q, ql, r, rl)

        run = _Run(self, metrics, q, ql, r, rl, bool(ref_includes_query), same)
        return run.compute()

    @staticmethod
    def _check_ref_includes_query(q, ql, r, rl) -> None:
        n = q.shape[0]
        ok = r.shape[0] >= n and ql.shape[1:] == rl.shape[1:] and bool((ql == rl[:n]).all())
        # PML's check (allclose), in row chunks to avoid full-size temporaries.
        chunks = row_chunks(n, 12 * q.shape[1], device=q.device) if ok else ()
        ok = ok and all(torch.allclose(q[rows], r[rows]) for rows in chunks)
        if not ok:
            raise ValueError(
                "ref_includes_query=True needs the first len(query) rows of reference (and of "
                "reference_labels) to equal query (and query_labels)"
            )


def _pml_metric(calc: AccuracyCalculator, name: str, **kwargs):
    """PML's value of a built-in metric from the k-NN labels of one evaluation."""
    # The PML-path helpers work on a (queries x k) table of neighbour labels, as PML's do.
    from . import knn_table

    if name in _CLUSTERING:
        return clustering_scores(kwargs["query_labels"], kwargs["cluster_labels"], (name,))[name]
    if name not in PML_METRICS:
        raise NotImplementedError(
            f"{name} has no function of the k-NN labels (it needs the distances or several k); "
            "get_accuracy computes it"
        )
    knn_labels, query_labels = knn_table.try_getting_not_lone_labels(
        kwargs["knn_labels"], kwargs["query_labels"], kwargs["not_lone_query_mask"]
    )
    label_counts = kwargs["label_counts"]
    if knn_labels is None:
        return knn_table.nan_accuracy(label_counts[0], calc.return_per_class)
    gt = query_labels[:, None]
    common = (calc.avg_of_avgs, calc.return_per_class, calc.label_comparison_fn)
    if name == "precision_at_1":
        return knn_table.precision_at_k(knn_labels, gt, 1, *common)
    if name == "mean_reciprocal_rank":
        return knn_table.mean_reciprocal_rank(knn_labels, gt, *common)
    counts = (kwargs["ref_includes_query"], label_counts)
    if name == "r_precision":
        return knn_table.r_precision(knn_labels, gt, *counts, *common)
    at_r = name == "mean_average_precision_at_r"
    return knn_table.mean_average_precision(knn_labels, gt, *counts, *common, at_r=at_r)


def _warn(message: str, stacklevel: int) -> None:
    """A Python warning (our callers' filters) and, as PML, a warning on PML's logger
    (``common_functions.LOGGER``, read now: ``set_logger_name`` may have replaced it)."""
    warnings.warn(message, stacklevel=stacklevel + 1)
    c_f.LOGGER.warning(message)


class _Run:
    """The state of one ``get_accuracy`` call."""

    def __init__(self, calc: AccuracyCalculator, metrics, q, ql, r, rl, ref_includes_query, same):
        self.calc, self.metrics = calc, metrics
        self.q, self.ql, self.r, self.rl = q, ql, r, rl
        self.ref_includes_query = ref_includes_query
        self.self_count = int(ref_includes_query)
        self.available = r.shape[0] - self.self_count
        self.custom = [m for m in metrics if m in calc._custom_metrics()]
        builtin = [m for m in metrics if m not in self.custom]
        self.ranking = [m for m in builtin if m in _RANKING]
        self.knn_classification = [m for m in builtin if m in _KNN_CLASSIFICATION]
        self.clustering = [m for m in builtin if m in _CLUSTERING]
        self.custom_knn = [m for m in self.custom if m in calc.requires_knn()]
        self.custom_clustering = [m for m in self.custom if m in calc.requires_clustering()]
        if calc.custom_label_comparison:
            self.q_codes = self.r_codes = None
        else:
            self.q_codes, self.r_codes, self.n_codes = label_codes(ql, rl, same)
            # Compact codes: the (rows x k) gathers of neighbour codes dominate label work.
            if self.n_codes < 2**31:
                self.q_codes = self.q_codes.to(torch.int32)
                self.r_codes = self.q_codes if same else self.r_codes.to(torch.int32)

    # -- labels: R, lone queries, k ------------------------------------------------------------

    def _unique_query_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted distinct query labels, and each query's index among them."""
        dim = 0 if self.ql.ndim == 2 else None
        return torch.unique(self.ql, sorted=True, return_inverse=True, dim=dim)

    def _label_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """References matching each distinct query label (PML's ``label_counts[1]``), and each
        query's index among the distinct query labels."""
        if not self.calc.custom_label_comparison:
            ref_counts = torch.bincount(self.r_codes, minlength=self.n_codes)
            present = torch.bincount(self.q_codes, minlength=self.n_codes) > 0
            inverse = (present.cumsum(0) - 1)[self.q_codes]
            return ref_counts[present], inverse
        unique, inverse = self._unique_query_labels()
        fn = self.calc.label_comparison_fn
        counts = torch.stack([fn(unique[i : i + 1], self.rl).sum() for i in range(len(unique))])
        return counts.to(torch.long), inverse

    def _prepare_ranking(self) -> None:
        counts, inverse = self._label_counts()
        self.match_counts = counts
        if not self.ref_includes_query:
            lone = counts == 0
        elif not self.calc.custom_label_comparison:
            lone = counts <= 1  # every label matches itself under equality
        else:
            unique, _ = self._unique_query_labels()
            matches_itself = self.calc.label_comparison_fn(unique, unique)
            lone = counts - matches_itself.to(torch.long) <= 0
        self.lone = lone
        self.not_lone = ~lone[inverse]
        self.num_relevant = counts[inverse] - self.self_count
        self.class_codes = inverse
        self.num_k = self._determine_k(int(counts.max()))
        if not bool(self.not_lone.any()):
            _warn("None of the query labels are in the reference set.", stacklevel=4)

    def _determine_k(self, max_bin_count: int) -> int:
        k = self.calc.k
        if k == "max_bin_count":
            return max_bin_count - self.self_count
        if k is None:
            return self.available
        if k < max_bin_count:
            at_r = sorted({"r_precision", "mean_average_precision_at_r"} & set(self.metrics))
            if at_r:
                _warn(
                    f"You are computing {at_r}, but k ({k}) is less than the max bin count "
                    f"({max_bin_count}), so their values will be incorrect; set "
                    "k='max_bin_count'. For MAP@k rather than MAP@R, use "
                    "'mean_average_precision'.",
                    stacklevel=5,
                )
        if k > self.available:
            _warn(
                f"k={k} exceeds the {self.available} references available to each query; "
                f"using k={self.available} (PML would pad with index -1 and return wrong values)",
                stacklevel=5,
            )
            return self.available
        return k

    def _search_k(self) -> int:
        needs = [1]
        if {"r_precision", "mean_average_precision_at_r"} & set(self.ranking):
            max_r = int(self.num_relevant[self.not_lone].max()) if self.not_lone.any() else 1
            needs.append(min(self.num_k, max(max_r, 1)))
        if {"mean_average_precision", "mean_reciprocal_rank"} & set(self.ranking):
            needs.append(self.num_k)
        if "recall_at_k" in self.ranking:
            needs.append(max(self.calc.recall_at_k))
        if self.custom_knn:
            needs.append(self.num_k)
        return max(1, min(max(needs), self.available))

    # -- per-chunk reductions ------------------------------------------------------------------

    def _relevance(self, rows: slice, columns: torch.Tensor) -> torch.Tensor:
        """Whether each listed neighbour (``columns``, one row per query in ``rows``) is
        relevant to its query; a custom comparison is called with PML's shapes."""
        if self.q_codes is not None:
            return self.r_codes[columns] == self.q_codes[rows][:, None]
        fn = self.calc.label_comparison_fn
        return fn(self.ql[rows][:, None], self.rl[columns]).to(torch.bool)

    def _rank_chunk(self, rows: slice, relevance: torch.Tensor | rm.RelevantRanks) -> None:
        """Per-query ranking metrics of the non-lone queries among ``rows``, from their
        neighbours' relevance (a bool table, nearest first) or their relevant ranks."""
        keep = self.not_lone[rows].nonzero().squeeze(1)
        if keep.numel() == 0:
            return
        query_rows = keep + rows.start
        if isinstance(relevance, rm.RelevantRanks):
            ranks = rm.RelevantRanks(relevance.ranks[keep], relevance.counts[keep])
        else:
            ranks = rm.RankedRelevance(relevance[keep])
        r = self.num_relevant[query_rows]
        k = self.num_k
        out = self.per_query
        for m in self.ranking:
            if m == "precision_at_1":
                out[m][query_rows] = rm.precision_at_1(ranks)
            elif m == "r_precision":
                out[m][query_rows] = rm.r_precision(ranks, r, k)
            elif m == "mean_average_precision_at_r":
                out[m][query_rows] = rm.mean_average_precision_at_r(ranks, r, k)
            elif m == "mean_average_precision":
                out[m][query_rows] = rm.mean_average_precision(ranks, r, k)
            elif m == "mean_reciprocal_rank":
                out[m][query_rows] = rm.mean_reciprocal_rank(ranks, k)
            else:
                for kk in self.calc.recall_at_k:
                    out[f"recall_at_{kk}"][query_rows] = rm.recall_at_k(ranks, kk)

    def _knn_chunk(self, rows: slice, columns: torch.Tensor, similarities: torch.Tensor) -> None:
        neighbor_codes = self.r_codes[columns]
        truth = self.q_codes[rows]
        for m in self.knn_classification:
            weighted = m == "knn_accuracy_weighted"
            predicted = knn_vote(
                neighbor_codes, similarities if weighted else None, self.calc.knn_temperature
            )
            self.per_query[m][rows] = (predicted == truth).to(torch.float64)

    # -- the pass over query chunks ------------------------------------------------------------

    def _allocate(self) -> None:
        n, dev = self.q.shape[0], self.q.device
        self.per_query = {}
        for m in self.ranking:
            if m == "recall_at_k":
                for kk in self.calc.recall_at_k:
                    self.per_query[f"recall_at_{kk}"] = torch.zeros(
                        n, dtype=torch.float64, device=dev
                    )
            else:
                dtype = torch.float32 if m == "mean_reciprocal_rank" else torch.float64
                self.per_query[m] = torch.zeros(n, dtype=dtype, device=dev)
        for m in self.knn_classification:
            self.per_query[m] = torch.zeros(n, dtype=torch.float64, device=dev)

    def _unit_norm(self) -> bool:
        def close(x):
            for rows in row_chunks(x.shape[0], 4 * x.shape[1], device=x.device):
                norms = torch.linalg.vector_norm(x[rows], dim=1)
                if not bool(((norms - 1).abs() <= _UNIT_NORM_TOLERANCE).all()):
                    return False
            return True

        return close(self.q) and (self.r is self.q or close(self.r))

    def _search(self) -> None:
        calc = self.calc
        rank_here = self.search_ranking and calc.knn_func is None
        k_rank = self._search_k() if rank_here else 0
        k_knn = min(calc.knn_k, self.available) if self.knn_classification else 0
        # L2 order equals cosine order for unit vectors: then one search serves both.
        share = bool(k_knn) and self._unit_norm()
        collect = bool(self.custom_knn) and rank_here
        # A full ranking on CPU with labels compared by equality: rank only where each query's
        # class falls (the metrics read nothing else), not every neighbour.
        by_group = (
            rank_here
            and self.q_codes is not None
            and not collect
            and self.q.device.type == "cpu"
            and k_rank + 1 >= self.r.shape[0]
        )
        searches = []
        if by_group:
            groups = ColumnGroups.from_codes(self.r_codes, self.n_codes)
            searches.append(GroupSearch(ReferenceSet(self.r, "l2"), groups, self.q_codes))
        elif rank_here or share:
            searches.append(
                Search(
                    ReferenceSet(self.r, "l2"),
                    max(k_rank, k_knn if share else 0),
                    want_values=share or collect,
                )
            )
        if k_knn and (by_group or not share):
            metric = "l2" if share else "cosine"
            searches.append(Search(ReferenceSet(self.r, metric), k_knn, want_values=True))
        if not searches:
            return
        extra = 48 * (0 if by_group else k_rank) + 48 * k_knn
        for rows, found in iter_neighbors(
            self.q, searches, self.ref_includes_query, extra, calc.progress
        ):
            first = found[0]
            if by_group:
                self._rank_chunk(rows, rm.RelevantRanks(*first))
            elif rank_here and self.ranking:
                self._rank_chunk(rows, self._relevance(rows, first.columns[:, :k_rank]))
            if collect:
                self.knn_indices[rows] = first.columns[:, : self.num_k]
                self.knn_distances[rows] = first.values[:, : self.num_k]
            if k_knn:
                # The last search lists the k-NN vote's neighbours (the first one when shared).
                voters = found[-1]
                cols = voters.columns[:, :k_knn]
                if share:
                    sims = 1 - voters.values[:, :k_knn] / 2  # unit vectors: |q-r|^2 = 2 - 2 cos
                else:
                    sims = searches[-1].reference.similarities_from(voters.values)
                self._knn_chunk(rows, cols, sims)

    def _rank_from_knn_func(self) -> None:
        """PML's path: the user's knn_func returns the whole (queries x k) table at once."""
        distances, indices = self.calc.knn_func(self.q, self.num_k, self.r, self.ref_includes_query)
        indices = torch.as_tensor(indices, device=self.q.device).long()
        self.knn_indices = indices
        self.knn_distances = torch.as_tensor(distances, device=self.q.device)
        if self.ranking:
            for rows in balanced_chunks(
                indices.shape[0], rows_per_chunk(48 * indices.shape[1], device=indices.device)
            ):
                self._rank_chunk(rows, self._relevance(rows, indices[rows]))

    # -- results --------------------------------------------------------------------------------

    def _nan(self):
        if self.calc.return_per_class:
            return [math.nan] * int(self.match_counts.shape[0])
        return math.nan

    def _nan_per_query_class(self):
        if self.calc.return_per_class:
            return [math.nan] * int(torch.unique(self.q_codes).shape[0])
        return math.nan

    def _ranking_results(self) -> dict:
        results = {}
        if not self.ranking:
            return results
        any_query = bool(self.not_lone.any())
        for name, values in self.per_query.items():
            if name in _KNN_CLASSIFICATION:
                continue
            if not any_query:
                results[name] = self._nan()
                continue
            results[name] = rm.average(
                values[self.not_lone],
                self.class_codes[self.not_lone],
                self.calc.avg_of_avgs,
                self.calc.return_per_class,
            )
        return results

    def _custom_kwargs(self) -> dict:
        kwargs = {
            "query": self.q,
            "reference": self.r,
            "query_labels": self.ql,
            "reference_labels": self.rl,
            "ref_includes_query": self.ref_includes_query,
            "label_comparison_fn": self.calc.label_comparison_fn,
        }
        if self.custom_knn:
            unique, _ = self._unique_query_labels()
            kwargs.update(
                label_counts=(unique, self.match_counts),
                knn_labels=self.rl[self.knn_indices],
                knn_distances=self.knn_distances,
                lone_query_labels=unique[self.lone],
                not_lone_query_mask=self.not_lone,
            )
        return kwargs

    def compute(self) -> dict:
        calc = self.calc
        # A neighbour search for ranking metrics is needed only if some query has a relevant
        # reference (PML returns NaN otherwise) or a subclass metric reads the neighbours.
        self.search_ranking = False
        if self.ranking or self.custom_knn:
            self._prepare_ranking()
            self.search_ranking = self.available > 0 and bool(
                self.custom_knn or self.not_lone.any()
            )
            if self.custom_knn:
                n, dev = self.q.shape[0], self.q.device
                self.knn_indices = torch.zeros(n, self.num_k, dtype=torch.long, device=dev)
                self.knn_distances = torch.zeros(n, self.num_k, device=dev)
        self._allocate()
        self._search()
        if calc.knn_func is not None and self.search_ranking:
            self._rank_from_knn_func()
        results = self._ranking_results()
        for m in self.knn_classification:
            if self.available == 0:  # nothing to vote
                results[m] = self._nan_per_query_class()
                continue
            results[m] = rm.average(
                self.per_query[m], self.q_codes, calc.avg_of_avgs, calc.return_per_class
            )
        cluster_labels = None
        if self.clustering or self.custom_clustering:
            cluster_labels = calc.get_cluster_labels(query=self.q, query_labels=self.ql)
        if self.clustering:
            results.update(clustering_scores(self.q_codes, cluster_labels, tuple(self.clustering)))
        if self.custom:
            kwargs = self._custom_kwargs()
            if cluster_labels is not None:
                kwargs["cluster_labels"] = cluster_labels
            for m in self.custom:
                results[m] = getattr(calc, _CUSTOM_PREFIX + m)(**kwargs)
        return {name: results[name] for name in _output_order(self.metrics, calc.recall_at_k)}


def _output_order(metrics, recall_ks) -> list[str]:
    names = []
    for m in sorted(metrics):
        if m == "recall_at_k":
            names.extend(f"recall_at_{k}" for k in recall_ks)
        else:
            names.append(m)
    return names
