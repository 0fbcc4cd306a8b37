"""EmbeddingIndex: one class for exact and approximate similarity search over FAISS."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.chunking import rows_per_chunk
from ..core.validation import check_choice, check_number
from ..eval.knn import knn
from . import index_kinds
from ._faiss import faiss
from .faiss_gpu import GPU_MAX_K, GpuCopy, faiss_gpu_count
from .index_file import read_index_file, write_index_file
from .vectors import (
    MAX_ID,
    Array,
    as_id_array,
    check_finite,
    check_k,
    check_values,
    check_vectors,
    l2_normalize,
    like_input,
    row_slices,
    to_numpy_float32,
    to_torch_float32,
)

_DEVICES = ("auto", "cpu", "cuda")
_BACKENDS = ("auto", "faiss", "torch")
_MAX_CHUNK_ROWS = 65536
# FAISS's k-means uses at most 256 points per centroid; sampling before the float32 copy
# keeps training memory bounded without changing what FAISS would have used.
_TRAIN_POINTS_PER_CENTROID = 256


class EmbeddingIndex:
    """A FAISS index over embeddings: add, search, remove, save and load, with user ids.

    Kinds (``kind``): ``"flat"`` (exact), ``"ivf_flat"`` (inverted lists), ``"hnsw"``
    (graph), ``"ivf_pq"`` (inverted lists + product quantization), or any FAISS factory
    string via ``factory=`` (e.g. ``"IVF64,PQ8"``, ``"OPQ16,IVF256,PQ16"``). IVF kinds (and
    factory indexes with ``is_trained`` False) need :meth:`train` before :meth:`add`.

    Metrics (``metric``): ``"l2"`` — distances are *squared* Euclidean distances, smallest
    first, as FAISS returns them; ``"ip"`` — inner products, largest first; ``"cosine"`` —
    vectors and queries are L2-normalised on the way in and scored by inner product (cosine
    similarity, largest first). Stored vectors are the normalised ones.

    Inputs may be torch tensors (any float dtype, any device) or numpy arrays; :meth:`search`
    answers in kind: numpy in, numpy out; torch in, torch out on the query's device. Distances
    are float32 and ids int64. A search returns ``min(k, len(index))`` columns: asking for
    more neighbours than the index holds returns all of them, never k columns of padding.
    Where an approximate kind finds fewer candidates than that (an IVF probe of too few
    lists, a small HNSW ``ef_search``), the missing entries are id -1 and distance +inf
    (``"l2"``) or -inf (``"ip"``/``"cosine"``) — FAISS itself pads with ±FLT_MAX;
    infinities cannot be mistaken for a real distance.

    Where searches run:

    - exact search (``kind="flat"``) goes through the package's one k-NN engine,
      :func:`metricssl.eval.knn.knn` (the one every retrieval metric uses), on the device of
      torch queries (CUDA tensors stay on their GPU) and on the CPU for numpy queries (on the
      first of ``gpu_ids`` when a FAISS GPU build and CUDA are present). Ranking: nearest
      first, exact ties by storage position — the order vectors were added, so by ascending
      id for automatic ids — for every metric. The engine keeps a float32 copy of the vectors
      on each GPU it searches from until the next change (on the CPU it reads FAISS's own
      array). ``backend="faiss"`` searches FAISS's ``IndexFlat`` instead: same neighbours and
      distances (up to float rounding), and for ``"l2"`` the same order of exact ties; for
      ``"ip"``/``"cosine"`` FAISS orders exact ties by *descending* position.
    - approximate kinds, and ``backend="faiss"``: with a FAISS GPU build and a CUDA device
      (``device="auto"`` or ``"cuda"``), FAISS searches a GPU copy of the index (sharded or
      replicated across ``gpu_ids``), rebuilt at the first search after a change. HNSW has no
      FAISS GPU version and stays on CPU, as does any search with ``k > 2048`` (FAISS GPU's
      limit). Otherwise FAISS searches on the CPU.

    Values: NaN/Inf vectors and queries are refused (``ValueError``). For ``"l2"`` and
    ``"ip"``, so are vectors whose squared norm exceeds half the float32 range (about
    1.7e38, i.e. entries near 1e19 and above): their distances overflow float32, and FAISS
    would silently rank them wrong. ``"cosine"`` normalises in float64 and takes any finite
    vector.

    Large inputs are added and searched ``chunk_size`` rows at a time, so no full float32
    copy of the input is made; a tqdm bar shows progress when there is more than one chunk.

    Args:
        dim: vector dimension.
        kind: one of ``"flat"``, ``"ivf_flat"``, ``"hnsw"``, ``"ivf_pq"``; default
            ``"flat"``. Leave it out when ``factory`` is given.
        metric: ``"l2"``, ``"ip"`` or ``"cosine"``.
        factory: a FAISS ``index_factory`` string, instead of ``kind``.
        nlist: inverted lists of the IVF kinds (the training set needs at least this many
            vectors; FAISS suggests 30-256 per list).
        nprobe: lists visited per query by IVF indexes (also for factory strings).
        m: sub-quantizers of ``"ivf_pq"`` (must divide ``dim``); None picks the largest
            divisor of ``dim`` that is at most ``min(64, dim // 4)``.
        nbits: bits per sub-quantizer code for ``"ivf_pq"`` (1-16; training needs at least
            ``2**nbits`` vectors).
        hnsw_m: graph neighbours per node for ``"hnsw"``.
        ef_construction: HNSW build-time search depth.
        ef_search: HNSW query-time search depth (also for factory strings).
        device: ``"auto"`` (a FAISS GPU when the build and a CUDA device exist, else CPU),
            ``"cpu"``, or ``"cuda"`` (requires a FAISS GPU build).
        gpu_ids: GPUs for FAISS; None means all visible ones.
        shard: with several GPUs, split the vectors across them (True) or put a full copy on
            each (False).
        backend: exact-search path: ``"auto"`` or ``"torch"`` (the k-NN engine, the same
            thing; ``"torch"`` needs ``kind="flat"``), or ``"faiss"`` (FAISS's flat index).
        chunk_size: rows per FAISS call when adding and searching; None picks
            ``min(65536, rows of dim float32 in the memory budget)``.
        progress: show a tqdm bar: None (when there is more than one chunk and stderr is a
            terminal), True or False.

    Example:
        >>> import torch
        >>> from metricssl.index.embedding_index import EmbeddingIndex
        >>> index = EmbeddingIndex(64, kind="flat", metric="cosine")
        >>> ids = index.add(torch.randn(1000, 64))
        >>> distances, neighbours = index.search(torch.randn(5, 64), k=10)
        >>> neighbours.shape
        torch.Size([5, 10])
        >>> index.save("vectors.index")  # doctest: +SKIP
        >>> index = EmbeddingIndex.load("vectors.index")  # doctest: +SKIP
    """

    def __init__(
        self,
        dim: int,
        kind: str | None = None,
        metric: str = "l2",
        *,
        factory: str | None = None,
        nlist: int = 100,
        nprobe: int = 8,
        m: int | None = None,
        nbits: int = 8,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
        device: str = "auto",
        gpu_ids: Sequence[int] | None = None,
        shard: bool = True,
        backend: str = "auto",
        chunk_size: int | None = None,
        progress: bool | None = None,
    ):
        check_number("dim", dim, low=1, integer=True)
        if factory is not None:
            if kind is not None:
                raise ValueError(f"pass either kind or factory, not both (kind={kind!r})")
            if not isinstance(factory, str) or not factory.strip():
                raise ValueError(f"factory must be a non-empty FAISS factory string: {factory!r}")
            kind = "factory"
        elif kind is None:
            kind = "flat"
        else:
            check_choice("kind", kind, index_kinds.KINDS)
        check_choice("metric", metric, index_kinds.METRICS)
        check_number("nlist", nlist, low=1, integer=True)
        check_number("nprobe", nprobe, low=1, integer=True)
        check_number("m", m, low=1, integer=True, allow_none=True)
        check_number("nbits", nbits, low=1, high=16, integer=True)
        check_number("hnsw_m", hnsw_m, low=2, integer=True)
        check_number("ef_construction", ef_construction, low=1, integer=True)
        check_number("ef_search", ef_search, low=1, integer=True)
        check_choice("device", device, _DEVICES)
        if not isinstance(shard, bool):
            raise TypeError(f"shard must be a bool, got {shard!r}")
        check_choice("backend", backend, _BACKENDS)
        check_number("chunk_size", chunk_size, low=1, integer=True, allow_none=True)
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be None, True or False, got {progress!r}")
        if m is None:
            m = index_kinds.default_pq_m(dim)
        if kind == "ivf_pq" and dim % m:
            raise ValueError(f"m={m} must divide dim={dim} (each sub-quantizer gets dim/m dims)")
        if backend == "torch" and kind != "flat":
            raise ValueError(f"backend='torch' is exact search and needs kind='flat', got {kind!r}")

        self._dim = int(dim)
        self._kind = kind
        self._metric = metric
        self._nlist, self._m, self._nbits = int(nlist), int(m), int(nbits)
        self._hnsw_m, self._ef_construction = int(hnsw_m), int(ef_construction)
        self._nprobe, self._ef_search = int(nprobe), int(ef_search)
        if kind != "factory":
            factory = index_kinds.factory_string(kind, self._nlist, self._m, self._nbits, hnsw_m)
        self._factory = factory
        self._device = device
        self._gpu_ids = self._resolve_gpus(device, gpu_ids, kind)
        self._shard = shard
        self._backend = backend
        self._chunk_rows = int(chunk_size or min(_MAX_CHUNK_ROWS, rows_per_chunk(4 * self._dim)))
        self._progress = progress
        self._set_faiss_index(
            index_kinds.build(
                self._dim,
                factory,
                metric,
                ef_construction=self._ef_construction if kind == "hnsw" else None,
                polysemous_training=kind != "ivf_pq",
            ),
            next_id=0,
        )

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        """``"flat"``, ``"ivf_flat"``, ``"hnsw"``, ``"ivf_pq"`` or ``"factory"``."""
        return self._kind

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def factory(self) -> str:
        """The FAISS factory string the index was built from."""
        return self._factory

    @property
    def ntotal(self) -> int:
        """Number of stored vectors."""
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def faiss_index(self) -> faiss.Index:
        """The CPU FAISS index (the source of truth; GPU copies are made from it).

        For reading and tuning. Adding or removing through it directly would leave this
        object's search copies stale: use :meth:`add` and :meth:`remove`.
        """
        return self._index

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        check_number("nprobe", value, low=1, integer=True)
        self._nprobe = int(value)

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        check_number("ef_search", value, low=1, integer=True)
        self._ef_search = int(value)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self._dim}, kind={self._kind!r}, "
            f"metric={self._metric!r}, factory={self._factory!r}, ntotal={self.ntotal}, "
            f"is_trained={self.is_trained})"
        )

    # ------------------------------------------------------------------ building

    def train(self, vectors: Array) -> None:
        """Train the index (IVF centroids, PQ codebooks) on representative ``vectors``.

        Kinds without training (``"flat"``, ``"hnsw"``) accept the call and do nothing.
        Training must come before :meth:`add`. At most 256 vectors per centroid are used
        (FAISS's own k-means limit), sampled with a fixed seed before any copy is made.
        """
        check_vectors(vectors, self._dim, "vectors")
        if self.ntotal:
            raise ValueError(
                f"train() must come before add(): the index already holds {self.ntotal} "
                "vectors, which new centroids would invalidate"
            )
        n = vectors.shape[0]
        needed = self._min_training_points()
        if n < needed:
            raise ValueError(
                f"training the {self._kind} index {self._factory!r} needs at least {needed} "
                f"vectors, got {n} (lower nlist or nbits, or train on more vectors)"
            )
        check_finite(vectors, self._chunk_rows, "vectors", self._bounded_norms)
        if self._index.is_trained and self._kind in ("flat", "hnsw"):
            return
        cap = self._max_training_points()
        if cap is not None and n > cap:
            rows = np.sort(np.random.default_rng(0).choice(n, cap, replace=False))
            if torch.is_tensor(vectors):
                vectors = vectors[torch.from_numpy(rows).to(vectors.device)]
            else:
                vectors = vectors[rows]
        x = self._to_faiss(vectors)
        try:
            self._train_faiss(x)
        except RuntimeError as err:
            raise ValueError(f"FAISS could not train {self._factory!r}: {err}") from None
        self._changed()

    def add(self, vectors: Array, ids=None) -> Array:
        """Add ``vectors`` (n, dim) under ``ids`` and return the ids, like ``vectors``.

        Args:
            vectors: torch tensor (any float dtype and device) or numpy array.
            ids: n distinct integers in ``[0, 2**63 - 1]`` not yet in the index (tensor,
                array or sequence; -1 is FAISS's "no result"). None assigns consecutive ids
                after the largest id ever added (``ValueError`` once they would pass
                ``2**63 - 1``).

        Returns:
            The int64 ids of the added vectors (a numpy array, or a tensor on the vectors'
            device).

        Raises:
            ValueError: untrained index, wrong shape, NaN/Inf (or, for ``"l2"``/``"ip"``,
                overflowing squared norms), bad or duplicate ids. Nothing is added when an
                error is raised.
        """
        check_vectors(vectors, self._dim, "vectors")
        self._require_trained("add()")
        n = vectors.shape[0]
        if ids is None:
            if n and self._next_id + n - 1 > MAX_ID:
                raise ValueError(
                    f"ids: automatic ids {self._next_id}..{self._next_id + n - 1} pass the "
                    f"largest int64 id 2**63 - 1; pass ids= explicitly (unused ids below it)"
                )
            id_array = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            id_array = self._check_new_ids(ids, n)
        check_finite(vectors, self._chunk_rows, "vectors", self._bounded_norms)
        for rows in self._chunks(n, "add"):
            self._index.add_with_ids(self._to_faiss(vectors[rows]), id_array[rows])
        if n:
            self._next_id = max(self._next_id, int(id_array.max()) + 1)
            self._changed()
        return like_input(id_array, vectors)

    def remove(self, ids) -> int:
        """Remove the vectors with these ids; ids not in the index are ignored.

        Returns the number of vectors removed. FAISS cannot delete from an HNSW graph, so
        for HNSW the graph is rebuilt from the remaining (stored) vectors: exact, but it
        costs as much as adding them again and briefly needs memory for two graphs.
        """
        id_array = as_id_array(ids)
        if id_array.size == 0 or self.ntotal == 0:
            return 0
        if index_kinds.hnsw_of(self._index) is not None:
            removed = self._rebuild_without(id_array)
        else:
            try:
                removed = int(self._index.remove_ids(id_array))
            except RuntimeError as err:
                raise ValueError(
                    f"FAISS index {self._factory!r} does not support remove(): {err}"
                ) from None
        if removed:
            self._changed()
        return removed

    # ------------------------------------------------------------------ searching

    def search(self, queries: Array, k: int) -> tuple[Array, Array]:
        """The ``k`` nearest stored vectors of each query.

        Args:
            queries: (nq, dim) torch tensor (any float dtype and device) or numpy array.
            k: neighbours per query, an int >= 1. The result has ``min(k, len(index))``
                columns: a larger k returns every stored vector, without allocating k
                columns. Approximate kinds that find fewer candidates fill the rest of a row
                with id -1 and distance +inf (``"l2"``) or -inf (``"ip"``/``"cosine"``).

        Returns:
            (distances float32 (nq, min(k, ntotal)), ids int64 (nq, min(k, ntotal))), nearest
            first, as numpy arrays for numpy queries or as tensors on the queries' device for
            torch queries. ``"l2"`` distances are squared Euclidean distances (as FAISS
            returns them); ``"ip"``/``"cosine"`` scores are similarities, largest first.

        Raises:
            ValueError: k not a positive int (bool and float included), wrong shape, NaN/Inf
                queries (or, for ``"l2"``/``"ip"``, overflowing squared norms), untrained
                index.

        Example:
            >>> index = EmbeddingIndex(4)
            >>> _ = index.add(np.eye(4, dtype=np.float32))
            >>> distances, ids = index.search(np.eye(4, dtype=np.float32)[:1], k=10)
            >>> ids.tolist()  # only 4 vectors: 4 columns
            [[0, 1, 2, 3]]
        """
        k = check_k(k)
        check_vectors(queries, self._dim, "queries")
        self._require_trained("search()")
        k = min(k, self.ntotal)
        if k == 0 or queries.shape[0] == 0:
            # Nothing to search, but bad queries are still an error (as they are otherwise).
            check_finite(queries, self._chunk_rows, "queries", self._bounded_norms)
            empty = np.empty((queries.shape[0], k))
            return (
                like_input(empty.astype(np.float32), queries),
                like_input(empty.astype(np.int64), queries),
            )
        if self._uses_engine():
            distances, ids = self._search_engine(queries, k)
            if torch.is_tensor(queries):
                return distances.to(queries.device), ids.to(queries.device)
            return distances.cpu().numpy(), ids.cpu().numpy()
        distances, ids = self._search_faiss(queries, k)
        return like_input(distances, queries), like_input(ids, queries)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` atomically (see :mod:`metricssl.index.index_file`)."""
        header = {
            "kind": self._kind,
            "metric": self._metric,
            "dim": self._dim,
            "factory": self._factory,
            "nlist": self._nlist,
            "m": self._m,
            "nbits": self._nbits,
            "hnsw_m": self._hnsw_m,
            "ef_construction": self._ef_construction,
            "nprobe": self._nprobe,
            "ef_search": self._ef_search,
            "next_id": self._next_id,
            "ntotal": self.ntotal,
            "faiss_version": faiss.__version__,
        }
        write_index_file(path, header, self._index)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: str = "auto",
        gpu_ids: Sequence[int] | None = None,
        shard: bool = True,
        backend: str = "auto",
        chunk_size: int | None = None,
        progress: bool | None = None,
    ) -> EmbeddingIndex:
        """Read an index written by :meth:`save`. Where it runs is chosen anew (same
        arguments as the constructor); everything else comes from the file.

        Raises ``ValueError`` for a file that is not a metricssl index, is truncated or
        corrupted, or whose header disagrees with its FAISS payload. No pickle is involved.
        """
        header, index = read_index_file(path)
        try:
            kind, metric, dim = header["kind"], header["metric"], header["dim"]
            settings = {
                name: header[name]
                for name in ("nlist", "m", "nbits", "hnsw_m", "ef_construction")
                + ("nprobe", "ef_search")
            }
            factory, next_id, ntotal = header["factory"], header["next_id"], header["ntotal"]
        except KeyError as err:
            raise ValueError(f"{path}: the index header lacks the field {err}") from None
        is_factory = kind == "factory"
        try:
            self = cls(
                dim,
                kind=None if is_factory else kind,
                metric=metric,
                factory=factory if is_factory else None,
                device=device,
                gpu_ids=gpu_ids,
                shard=shard,
                backend=backend,
                chunk_size=chunk_size,
                progress=progress,
                **settings,
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: the index header is invalid: {err}") from None
        problem = _payload_problem(index, self, factory, ntotal, next_id)
        if problem:
            raise ValueError(f"{path}: the index header disagrees with its payload: {problem}")
        self._set_faiss_index(index, next_id=next_id)
        return self

    # ------------------------------------------------------------------ internals

    def _set_faiss_index(self, index: faiss.Index, next_id: int) -> None:
        self._index = index
        self._next_id = int(next_id)
        self._search_parameters = index_kinds.supported_search_parameters(index)
        self._gpu: GpuCopy | None = None
        self._gpu_failed = False
        self._torch_database: dict[torch.device, tuple] = {}

    def _changed(self) -> None:
        # Copies made for searching (FAISS GPU, engine mirrors) are stale after any change.
        self._gpu = None
        self._torch_database.clear()

    @property
    def _bounded_norms(self) -> bool:
        # Cosine vectors are normalised (in float64) before any distance is computed.
        return self._metric != "cosine"

    @staticmethod
    def _resolve_gpus(device: str, gpu_ids, kind: str) -> list[int]:
        available = faiss_gpu_count()
        if gpu_ids is not None:
            if isinstance(gpu_ids, (str, bytes)) or not isinstance(gpu_ids, Sequence):
                raise TypeError(f"gpu_ids must be a sequence of GPU numbers, got {gpu_ids!r}")
            gpu_ids = list(gpu_ids)
            if not gpu_ids or any(
                isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in gpu_ids
            ):
                raise ValueError(f"gpu_ids must be a non-empty list of GPU numbers, got {gpu_ids}")
            if available and max(gpu_ids) >= available:
                raise ValueError(f"gpu_ids must be in [0, {available}), got {gpu_ids}")
        if device == "cpu":
            return []
        if device == "cuda":
            if available == 0:
                raise ValueError(
                    "device='cuda' needs a FAISS GPU build and a CUDA device; this FAISS has "
                    "none. (Exact search of CUDA tensors already runs on the GPU through "
                    "torch with device='auto'.)"
                )
            if kind == "hnsw":
                raise ValueError("device='cuda': FAISS has no GPU HNSW; use device='cpu'")
        if available == 0 or kind == "hnsw":
            return []
        if gpu_ids is None:
            return list(range(available))
        return gpu_ids

    def _require_trained(self, action: str) -> None:
        if not self._index.is_trained:
            raise ValueError(
                f"the {self._kind} index {self._factory!r} is not trained: call "
                f"train(vectors) before {action}"
            )

    def _min_training_points(self) -> int:
        if self._kind == "ivf_flat":
            return self._nlist
        if self._kind == "ivf_pq":
            return max(self._nlist, 2**self._nbits)
        return 1

    def _max_training_points(self) -> int | None:
        if self._kind == "ivf_flat":
            return _TRAIN_POINTS_PER_CENTROID * self._nlist
        if self._kind == "ivf_pq":
            return _TRAIN_POINTS_PER_CENTROID * max(self._nlist, 2**self._nbits)
        return None

    def _train_faiss(self, x: np.ndarray) -> None:
        ivf = faiss.try_extract_index_ivf(self._index)
        if not self._gpu_ids or ivf is None:
            self._index.train(x)
            return
        # FAISS's recipe for GPU training: run the k-means assignment on a GPU flat index
        # and keep the index itself on the CPU.
        try:
            resources = faiss.StandardGpuResources()
            clustering = faiss.index_cpu_to_gpu(
                resources, self._gpu_ids[0], faiss.IndexFlat(ivf.d, ivf.metric_type)
            )
        except RuntimeError as err:
            warnings.warn(f"training on the CPU: {err}", RuntimeWarning, stacklevel=3)
            self._index.train(x)
            return
        ivf.clustering_index = clustering
        try:
            self._index.train(x)
        finally:
            ivf.clustering_index = None
            del clustering, resources  # the GPU index must go before its resources

    def _check_new_ids(self, ids, n: int) -> np.ndarray:
        id_array = as_id_array(ids)
        if id_array.shape[0] != n:
            raise ValueError(f"ids has length {id_array.shape[0]} but vectors has {n} rows")
        if np.unique(id_array).size != n:
            raise ValueError("ids must be distinct")
        if self.ntotal and id_array.size:
            taken = np.isin(id_array, index_kinds.stored_ids(self._index))
            if taken.any():
                raise ValueError(
                    f"ids already in the index: {id_array[taken][:10].tolist()} (remove them first)"
                )
        return id_array

    def _chunks(self, n: int, what: str) -> Iterator[slice]:
        n_chunks = -(-n // self._chunk_rows)
        if self._progress is not None:
            disable = not self._progress
        else:
            disable = True if n_chunks <= 1 else None  # None: tqdm shows it on terminals only
        with tqdm(total=n, desc=f"EmbeddingIndex.{what}", unit="vec", disable=disable) as bar:
            for rows in row_slices(n, self._chunk_rows):
                yield rows
                bar.update(rows.stop - rows.start)

    def _to_faiss(self, chunk: Array) -> np.ndarray:
        x = to_numpy_float32(chunk)
        return l2_normalize(x) if self._metric == "cosine" else x

    def _uses_engine(self) -> bool:
        return self._kind == "flat" and self._backend != "faiss"

    def _pad_distance(self) -> float:
        return float("inf") if self._metric == "l2" else float("-inf")

    def _search_faiss(self, queries: Array, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's answer; ``1 <= k <= ntotal`` (the caller applies the k rule)."""
        nq = queries.shape[0]
        distances = np.empty((nq, k), dtype=np.float32)
        ids = np.empty((nq, k), dtype=np.int64)
        index = self._faiss_search_target(k)
        for rows in self._chunks(nq, "search"):
            chunk = queries[rows]
            check_values(chunk, "queries", self._bounded_norms)
            index.search(self._to_faiss(chunk), k, D=distances[rows], I=ids[rows])
        # FAISS pads with +-FLT_MAX; use infinities (see the class docstring).
        distances[ids < 0] = self._pad_distance()
        return distances, ids

    def _faiss_search_target(self, k: int):
        """The FAISS index to search (GPU copy or CPU), search parameters applied."""
        if self._gpu_ids and k <= GPU_MAX_K and not self._gpu_failed:
            if self._gpu is None:
                try:
                    self._gpu = GpuCopy(self._index, self._gpu_ids, self._shard)
                except RuntimeError as err:
                    if self._device == "cuda":
                        raise RuntimeError(f"could not copy the index to the GPU: {err}") from err
                    warnings.warn(
                        f"FAISS could not put {self._factory!r} on the GPU ({err}); "
                        "searching on the CPU",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    self._gpu_failed = True
            if self._gpu is not None:
                for name in self._search_parameters:
                    self._gpu.set_parameter(name, self._search_parameter(name))
                return self._gpu.index
        space = faiss.ParameterSpace()
        for name in self._search_parameters:
            space.set_index_parameter(self._index, name, self._search_parameter(name))
        return self._index

    def _search_parameter(self, name: str) -> int:
        return self._nprobe if name == "nprobe" else self._ef_search

    def _engine_device(self, queries: Array) -> torch.device:
        if torch.is_tensor(queries) and queries.device.type != "cpu":
            return queries.device
        if self._gpu_ids and torch.cuda.is_available():
            # The GPU this index was given to FAISS for: search CPU queries there too.
            return torch.device("cuda", self._gpu_ids[0])
        return torch.device("cpu")

    def _search_engine(self, queries: Array, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The flat kind's exact search through :func:`metricssl.eval.knn.knn`, query chunk by
        query chunk (each chunk converted once); ``1 <= k <= ntotal``."""
        device = self._engine_device(queries)
        database, stored = self._torch_mirror(device)
        nq = queries.shape[0]
        distances = torch.empty((nq, k), dtype=torch.float32, device=device)
        ids = torch.empty((nq, k), dtype=torch.int64, device=device)
        # Cosine: the stored vectors are normalised, so the queries' inner products are it.
        metric = "l2" if self._metric == "l2" else "ip"
        for rows in self._chunks(nq, "search"):
            chunk = to_torch_float32(queries[rows], device)
            check_values(chunk, "queries", self._bounded_norms)
            if self._metric == "cosine":
                chunk = l2_normalize(chunk)
            d, positions = knn(chunk, database, k, metric, exclude_self=False, progress=False)
            distances[rows] = d
            ids[rows] = stored[positions]
        return distances, ids

    def _torch_mirror(self, device: torch.device):
        """(vectors, ids) of the flat index as tensors on ``device``.

        On the CPU these are views of FAISS's own arrays (no copy); they, and copies on other
        devices, are dropped at every change of the index.
        """
        if device not in self._torch_database:
            id_map = faiss.downcast_index(self._index)
            flat = faiss.downcast_index(id_map.index)
            n, d = flat.ntotal, self._dim
            if n:
                vectors = torch.from_numpy(faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d))
                stored = torch.from_numpy(faiss.rev_swig_ptr(id_map.id_map.data(), n))
            else:
                vectors = torch.empty((0, d), dtype=torch.float32)
                stored = torch.empty(0, dtype=torch.int64)
            self._torch_database[device] = (vectors.to(device), stored.to(device))
        return self._torch_database[device]

    def _rebuild_without(self, id_array: np.ndarray) -> int:
        id_map = faiss.downcast_index(self._index)
        old = faiss.downcast_index(id_map.index)
        stored = faiss.rev_swig_ptr(id_map.id_map.data(), id_map.ntotal)
        keep = ~np.isin(stored, id_array)
        removed = int(keep.size - keep.sum())
        if removed == 0:
            return 0
        # A clone keeps any trained state (e.g. a PQ codebook); reset() empties it.
        fresh = faiss.clone_index(old)
        fresh.reset()
        rebuilt = faiss.IndexIDMap2(fresh)
        for rows in self._chunks(keep.size, "remove"):
            mask = keep[rows]
            if mask.any():
                # np.asarray: faiss.contrib.torch_utils (imported by PML, among others) makes
                # reconstruct_n return a torch tensor, which add_with_ids then refuses.
                vectors = np.asarray(old.reconstruct_n(rows.start, rows.stop - rows.start))[mask]
                rebuilt.add_with_ids(vectors, stored[rows][mask].copy())
        self._index = rebuilt
        return removed


def _payload_problem(index: faiss.Index, shell: EmbeddingIndex, factory, ntotal, next_id):
    """Why a loaded FAISS ``index`` does not fit its header (None when it does)."""
    if factory != shell.factory:
        return f"factory {factory!r} does not match kind {shell.kind!r} ({shell.factory!r})"
    if index.d != shell.dim:
        return f"dim {shell.dim} in the header, {index.d} in the index"
    if index.ntotal != ntotal:
        return f"ntotal {ntotal} in the header, {index.ntotal} in the index"
    if index.metric_type != index_kinds.FAISS_METRIC[shell.metric]:
        return f"metric {shell.metric!r} in the header, FAISS metric {index.metric_type}"
    if not isinstance(next_id, int) or isinstance(next_id, bool) or not 0 <= next_id <= MAX_ID + 1:
        return f"next_id must be an int in [0, 2**63], got {next_id!r}"
    if not index_kinds.stores_ids(index):
        return "the index cannot hold ids"
    if shell.kind == "flat":
        outer = faiss.downcast_index(index)
        if not isinstance(outer, faiss.IndexIDMap2) or not isinstance(
            faiss.downcast_index(outer.index), faiss.IndexFlat
        ):
            return "kind 'flat' needs an IndexIDMap2 over an IndexFlat"
    return None
