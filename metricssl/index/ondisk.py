"""IVF indexes whose inverted lists live on disk: built within a memory budget, searched
with the lists memory-mapped.

The build follows FAISS's own recipe for indexes bigger than RAM (``demos/demo_ondisk_ivf.py``):

1. **train** the coarse quantizer (and the PQ codebooks) on a sample of the vectors and write
   the empty trained index (``trained.faiss``);
2. **add** the vectors batch by batch to copies of the trained index; each copy holds at most
   what the memory budget allows and is written to ``parts/`` before the next one starts;
3. **merge** the parts' inverted lists into one ``lists.ivfdata`` file with FAISS's
   ``OnDiskInvertedLists`` (:func:`faiss.contrib.ondisk.merge_ondisk`, which memory-maps the
   parts), and write ``index.faiss`` (quantizer, codebooks, and the lists' offsets) next to it.

Peak memory is set by the budget and the training sample, not by the number of vectors. The
add step is what several processes or machines share (:func:`add_part` with ``rank`` and
``world_size``): every part uses the same trained quantizer, so the merge of all ranks' parts
equals the one-process build.

Files in ``out_dir``: ``index.faiss``, ``lists.ivfdata`` (the bulk) and ``ondisk.json`` (what
was built, the SHA-256 of ``index.faiss`` and the size of ``lists.ivfdata``, checked by
:func:`open_ondisk`). The folder can be moved as a whole: the lists file is looked up next
to the index file.

Example:
    >>> from metricssl.index.ondisk import build_ondisk, open_ondisk
    >>> build_ondisk("embeddings/", "index/", kind="ivf_pq", nlist=1024)  # doctest: +SKIP
    >>> index = open_ondisk("index/", nprobe=32)  # doctest: +SKIP
    >>> distances, ids = index.search(queries, k=10)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from ..core import distributed
from ..core.atomic import atomic_write
from ..core.validation import check_choice, check_number
from . import index_kinds
from ._faiss import faiss
from .embedding_index import EmbeddingIndex
from .vectors import as_id_array, check_values, check_vectors, l2_normalize

ONDISK_KINDS = ("ivf_flat", "ivf_pq")
INDEX_FILE = "index.faiss"
LISTS_FILE = "lists.ivfdata"
META_FILE = "ondisk.json"
TRAINED_FILE = "trained.faiss"
PARTS_DIR = "parts"
FORMAT = "metricssl-ondisk-ivf"
VERSION = 1
# k-means gains little from more than ~100 points per centroid; FAISS warns below 39.
_TRAIN_POINTS_PER_CENTROID = 100
# A part's lists grow by doubling (std::vector), so its codes may take twice their size; the
# add batch (float32 input, its L2/cosine copy, FAISS's residuals) takes the other share.
_PART_SHARE = 0.25
_BATCH_SHARE = 0.25
_MAX_BATCH_ROWS = 65536


class OnDiskSettings:
    """What an on-disk index is: factory, metric, dim (and the kind it was named by).

    Example:
        >>> OnDiskSettings(32, kind="ivf_pq", nlist=64, m=8).factory
        'IVF64,PQ8x8'
    """

    def __init__(
        self,
        dim: int,
        kind: str | None = "ivf_pq",
        metric: str = "l2",
        *,
        factory: str | None = None,
        nlist: int = 1024,
        m: int | None = None,
        nbits: int = 8,
        nprobe: int = 16,
    ):
        check_number("dim", dim, low=1, integer=True)
        check_choice("metric", metric, index_kinds.METRICS)
        check_number("nlist", nlist, low=1, integer=True)
        check_number("m", m, low=1, integer=True, allow_none=True)
        check_number("nbits", nbits, low=1, high=16, integer=True)
        check_number("nprobe", nprobe, low=1, integer=True)
        if factory is not None:
            if not isinstance(factory, str) or not factory.strip():
                raise ValueError(f"factory must be a non-empty FAISS factory string: {factory!r}")
            kind = "factory"
        else:
            check_choice("kind", kind, ONDISK_KINDS)
            m = index_kinds.default_pq_m(dim) if m is None else m
            if kind == "ivf_pq" and dim % m:
                raise ValueError(f"m={m} must divide dim={dim}")
            factory = index_kinds.factory_string(kind, nlist, m, nbits, hnsw_m=32)
        self.dim, self.kind, self.metric, self.factory = int(dim), kind, metric, factory
        self.nprobe = int(nprobe)
        index = self.empty_index()  # refuses a factory that is not an IVF index
        self.nlist = int(faiss.extract_index_ivf(index).nlist)
        pq = getattr(faiss.downcast_index(faiss.extract_index_ivf(index)), "pq", None)
        self.min_train = max(self.nlist, 2**pq.nbits if pq is not None else 1)

    def empty_index(self) -> faiss.Index:
        index = index_kinds.build(self.dim, self.factory, self.metric, polysemous_training=False)
        if faiss.try_extract_index_ivf(index) is None:
            raise ValueError(
                f"factory={self.factory!r}: an on-disk index needs an IVF index "
                "(e.g. 'IVF1024,PQ16x8' or 'IVF1024,Flat')"
            )
        return index

    @classmethod
    def from_json(cls, saved: dict) -> OnDiskSettings:
        """The settings :meth:`to_json` wrote."""
        if saved["kind"] == "factory":
            return cls(
                saved["dim"],
                None,
                saved["metric"],
                factory=saved["factory"],
                nprobe=saved["nprobe"],
            )
        settings = cls(
            saved["dim"],
            saved["kind"],
            saved["metric"],
            nprobe=saved["nprobe"],
            **_named_settings(saved["factory"]),
        )
        if settings.factory != saved["factory"]:
            raise ValueError(f"factory {saved['factory']!r} is not a {saved['kind']!r} index")
        return settings

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "factory": self.factory,
            "nprobe": self.nprobe,
        }


# ---------------------------------------------------------------------------------- build


def build_ondisk(
    source,
    out_dir: str | os.PathLike,
    kind: str | None = "ivf_pq",
    metric: str = "l2",
    *,
    factory: str | None = None,
    nlist: int = 1024,
    m: int | None = None,
    nbits: int = 8,
    nprobe: int = 16,
    train_size: int | None = None,
    memory_budget_mb: int = 512,
    seed: int = 0,
) -> dict:
    """Build an IVF index over a shard folder with its inverted lists on disk.

    Args:
        source: a shard folder (``manifest.json``, see :mod:`metricssl.index.shards`) or a
            :class:`~metricssl.index.shards.ShardManifest`. Its global ids become the
            index's ids.
        out_dir: the folder to write (created; an earlier build there is replaced).
        kind, metric, factory, nlist, m, nbits, nprobe: as for
            :class:`~metricssl.index.EmbeddingIndex`; ``kind`` is ``"ivf_pq"`` or
            ``"ivf_flat"``, or ``factory`` any FAISS IVF factory string.
        train_size: vectors sampled for training; None: ``100 * max(nlist, 2**nbits)`` (at
            most all of them).
        memory_budget_mb: RAM for the add step (one part plus one add batch).
        seed: of the training sample.

    Under ``torchrun`` (a process group already initialised, or started here from torchrun's
    environment), every rank calls it with the same arguments and a folder they all see: rank 0 trains, every rank adds its
    share of the shard files (:func:`add_part`), rank 0 merges; the result equals the
    one-process build.

    Returns:
        The contents of ``ondisk.json`` (factory, ntotal, parts, file sizes, ...).

    Example:
        >>> build_ondisk("shards/", "index/", nlist=256, memory_budget_mb=256)  # doctest: +SKIP
    """
    manifest = _manifest(source)
    settings = OnDiskSettings(
        manifest.dim, kind, metric, factory=factory, nlist=nlist, m=m, nbits=nbits, nprobe=nprobe
    )
    check_number("memory_budget_mb", memory_budget_mb, low=1, integer=True)
    # Under torchrun without a process group yet (the command line): start one for the
    # barriers, and close it at the end.
    started = distributed.init_from_environment(torch.device("cpu"))
    try:
        rank, world = distributed.rank(), distributed.world_size()
        if rank == 0:
            train_ondisk(manifest, out_dir, settings, train_size=train_size, seed=seed)
        _barrier()  # every rank adds with rank 0's trained quantizer
        add_part(manifest, out_dir, rank=rank, world_size=world, memory_budget_mb=memory_budget_mb)
        _barrier()  # every part is on disk
        if rank == 0:
            merge_parts(out_dir)
        _barrier()
    finally:
        if started:
            torch.distributed.destroy_process_group()
    return json.loads((Path(out_dir) / META_FILE).read_text())


def train_ondisk(
    source,
    out_dir: str | os.PathLike,
    settings: OnDiskSettings,
    *,
    train_size: int | None = None,
    seed: int = 0,
) -> None:
    """Step 1: train on a sample of ``source`` and write ``out_dir/trained.faiss``.

    Clears what an earlier build left in ``out_dir`` (parts, index, lists).
    """
    manifest = _manifest(source)
    if manifest.dim != settings.dim:
        raise ValueError(f"the shards have dim={manifest.dim} but settings.dim={settings.dim}")
    count = int(manifest.count)
    if train_size is None:
        train_size = min(count, _TRAIN_POINTS_PER_CENTROID * settings.min_train)
    check_number("train_size", train_size, low=1, integer=True)
    train_size = min(int(train_size), count)
    if train_size < settings.min_train:
        raise ValueError(
            f"train_size: training {settings.factory!r} needs at least {settings.min_train} "
            f"vectors, got {train_size} (the shards hold {count}); lower nlist or nbits"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (INDEX_FILE, LISTS_FILE, META_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    index = settings.empty_index()
    _, sample = manifest.sample(train_size, seed)
    sample = _prepared(sample, settings)
    index.train(sample)
    del sample
    _write_faiss(index, out / TRAINED_FILE)
    _write_json(out / (TRAINED_FILE + ".json"), settings.to_json())


def add_part(
    source,
    out_dir: str | os.PathLike,
    *,
    rank: int = 0,
    world_size: int = 1,
    memory_budget_mb: int = 512,
) -> list[Path]:
    """Step 2: add this rank's share of ``source`` to parts written under ``out_dir/parts``.

    The shard files are dealt to the ranks in turn (shard ``j`` to rank ``j % world_size``),
    so every rank reads only its own shards, memory-mapped, and the ranks together add each
    vector once. Each part is a copy of the trained index holding at most what
    ``memory_budget_mb`` allows; it is written (atomically) and freed before the next one
    starts. Parts this rank left from an earlier call are replaced.

    Returns the part files this rank wrote.
    """
    check_number("rank", rank, low=0, integer=True)
    check_number("world_size", world_size, low=1, integer=True)
    if rank >= world_size:
        raise ValueError(f"rank={rank} must be < world_size={world_size}")
    check_number("memory_budget_mb", memory_budget_mb, low=1, integer=True)
    manifest = _manifest(source)
    mine = manifest.shards[rank::world_size]
    manifest = dataclasses.replace(manifest, shards=mine, count=sum(s.count for s in mine))
    out = Path(out_dir)
    trained, settings = _read_trained(out)
    budget = memory_budget_mb * 2**20 - _fixed_bytes(trained)
    code_size = faiss.extract_index_ivf(trained).code_size
    batch_rows = int(min(_MAX_BATCH_ROWS, _BATCH_SHARE * budget // (12 * settings.dim)))
    part_rows = int(_PART_SHARE * budget // (code_size + 8))
    if batch_rows < 1 or part_rows < batch_rows:
        raise ValueError(
            f"memory_budget_mb={memory_budget_mb} is too small for {settings.factory!r} "
            f"(its quantizer and codebooks alone take {_fixed_bytes(trained) / 2**20:.1f} MiB)"
        )
    del trained  # each part reads its own copy: one trained state in memory at a time
    (out / PARTS_DIR).mkdir(exist_ok=True)
    for stale in (out / PARTS_DIR).glob(f"part-{rank:05d}-*.faiss"):
        stale.unlink()
    written: list[Path] = []
    part = None
    for ids, vectors in manifest.iter_batches(batch_rows):
        if part is not None and part.ntotal + len(ids) > part_rows:
            written.append(_write_part(part, out, rank, len(written)))
            part = None
        if part is None:
            part = faiss.read_index(str(out / TRAINED_FILE))
        check_vectors(vectors, settings.dim, "shard vectors")
        check_values(vectors, "shard vectors", bounded_norms=settings.metric != "cosine")
        part.add_with_ids(_prepared(vectors, settings), as_id_array(ids, "shard ids"))
    if part is not None and part.ntotal:
        written.append(_write_part(part, out, rank, len(written)))
    return written


def merge_parts(out_dir: str | os.PathLike) -> dict:
    """Step 3: merge every part under ``out_dir/parts`` into ``lists.ivfdata`` on disk, write
    ``index.faiss`` and ``ondisk.json``, and remove the parts and the trained index.

    Ids must be distinct across parts (they are the shards' global ids). Returns the
    contents of ``ondisk.json``.
    """
    out = Path(out_dir)
    trained, settings = _read_trained(out)
    parts = sorted((out / PARTS_DIR).glob("part-*.faiss")) if (out / PARTS_DIR).is_dir() else []
    if not parts:
        raise ValueError(f"{out / PARTS_DIR}: no parts to merge (run add_part first)")
    from faiss.contrib.ondisk import merge_ondisk  # after ._faiss: its install hint first

    lists = out / LISTS_FILE
    lists.unlink(missing_ok=True)
    # merge_ondisk memory-maps each part and appends its lists, list by list, to the file.
    with _quiet_c_stdout():
        merge_ondisk(trained, [str(p) for p in parts], str(lists))
    ntotal = int(trained.ntotal)
    _write_faiss(trained, out / INDEX_FILE)
    del trained
    max_id = max(_max_id(p) for p in parts)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **settings.to_json(),
        "ntotal": ntotal,
        "next_id": max_id + 1,
        "parts": len(parts),
        "index_sha256": _sha256(out / INDEX_FILE),
        "lists_bytes": lists.stat().st_size,
        "faiss_version": faiss.__version__,
    }
    _write_json(out / META_FILE, meta)
    shutil.rmtree(out / PARTS_DIR)
    for name in (TRAINED_FILE, TRAINED_FILE + ".json"):
        (out / name).unlink()
    return meta


# ---------------------------------------------------------------------------------- open


def open_ondisk(
    out_dir: str | os.PathLike,
    *,
    nprobe: int | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> OnDiskIndex:
    """Open a built on-disk index for searching, its inverted lists memory-mapped read-only.

    Returns an :class:`OnDiskIndex`: an :class:`~metricssl.index.EmbeddingIndex` on the CPU
    (numpy or torch queries, ``search(queries, k)``, ``nprobe``) that refuses changes.

    Raises:
        FileNotFoundError: ``ondisk.json``, ``index.faiss`` or ``lists.ivfdata`` is missing.
        ValueError: a file is not what ``ondisk.json`` recorded (changed or truncated).
    """
    out = Path(out_dir)
    meta_path = out / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{out}: no {META_FILE}; not a built on-disk index folder")
    try:
        meta = json.loads(meta_path.read_text())
        if meta["format"] != FORMAT or meta["version"] != VERSION:
            raise ValueError(f"format {meta['format']!r} version {meta['version']!r}")
        settings = OnDiskSettings.from_json(meta)
        expected = (meta["index_sha256"], int(meta["lists_bytes"]), int(meta["ntotal"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{meta_path}: not a valid on-disk index description: {err}") from None
    index_path, lists = out / INDEX_FILE, out / LISTS_FILE
    for path in (index_path, lists):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: an on-disk index needs {INDEX_FILE} and {LISTS_FILE} "
                "together in one folder"
            )
    if _sha256(index_path) != expected[0]:
        raise ValueError(f"{index_path}: its SHA-256 differs from {META_FILE}'s (changed?)")
    if lists.stat().st_size != expected[1]:
        raise ValueError(
            f"{lists}: {lists.stat().st_size} bytes, {META_FILE} says {expected[1]} (truncated?)"
        )
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    with _quiet_c_stdout():
        index = faiss.read_index(str(index_path), flags)
    if index.ntotal != expected[2] or index.d != settings.dim:
        raise ValueError(f"{index_path}: ntotal/dim differ from {META_FILE}")
    shell = OnDiskIndex(
        settings.dim,
        kind=None if settings.kind == "factory" else settings.kind,
        metric=settings.metric,
        factory=settings.factory if settings.kind == "factory" else None,
        nprobe=nprobe if nprobe is not None else settings.nprobe,
        device="cpu",
        chunk_size=chunk_size,
        progress=progress,
        **(_named_settings(settings.factory) if settings.kind != "factory" else {}),
    )
    # The loaded FAISS index replaces the shell's empty one (same factory, checked above).
    shell._set_faiss_index(index, next_id=int(meta["next_id"]))
    return shell


class OnDiskIndex(EmbeddingIndex):
    """An :class:`~metricssl.index.EmbeddingIndex` opened by :func:`open_ondisk`: search it
    (numpy or torch queries, ``nprobe``); its lists are a read-only memory-mapped file, so
    :meth:`add`, :meth:`remove`, :meth:`train` and :meth:`save` raise ``ValueError`` (FAISS
    would abort the process on a write). Rebuild with :func:`build_ondisk` to change it."""

    def train(self, vectors) -> None:
        raise self._read_only("train()")

    def add(self, vectors, ids=None):
        raise self._read_only("add()")

    def remove(self, ids) -> int:
        raise self._read_only("remove()")

    def save(self, path) -> None:
        raise self._read_only("save() (copy the folder instead)")

    @staticmethod
    def _read_only(action: str) -> ValueError:
        return ValueError(
            f"{action}: an on-disk index is opened read-only (its lists are a memory-mapped "
            "file); rebuild it with build_ondisk"
        )


# ---------------------------------------------------------------------------------- shards


def search_shards(indexes: Iterable[EmbeddingIndex], queries, k: int):
    """Search several indexes (one per shard of the data) and merge their top-``k``.

    Each index answers its own top ``k``; :func:`merge_top_k` keeps the ``k`` best of all of
    them. With exact indexes the result is the exact search over the union. Ids must be
    distinct across the indexes (global ids).

    Returns (distances, ids) like :meth:`EmbeddingIndex.search` (numpy or torch as the
    queries), ``min(k, total vectors)`` columns.

    Example:
        >>> a, b = EmbeddingIndex(2), EmbeddingIndex(2)
        >>> _ = a.add(np.array([[0.0, 0.0]], np.float32), ids=[7])
        >>> _ = b.add(np.array([[1.0, 0.0]], np.float32), ids=[3])
        >>> search_shards([a, b], np.array([[0.9, 0.0]], np.float32), k=2)[1].tolist()
        [[3, 7]]
    """
    indexes = list(indexes)
    if not indexes:
        raise ValueError("indexes must hold at least one index")
    metrics = {index.metric for index in indexes}
    if len(metrics) != 1:
        raise ValueError(f"indexes must share one metric, got {sorted(metrics)}")
    answers = [index.search(queries, k) for index in indexes]
    distances, ids = merge_top_k(answers, k, metrics.pop())
    if torch.is_tensor(answers[0][0]):
        device = answers[0][0].device
        return torch.from_numpy(distances).to(device), torch.from_numpy(ids).to(device)
    return distances, ids


def merge_top_k(answers: Iterable[tuple], k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of several (distances, ids) answers to the same queries, e.g. the
    answers of several machines, with the exact search's ranking rule: nearest first
    (smallest ``"l2"`` distance, largest ``"ip"``/``"cosine"`` score), exact ties by
    ascending id, missing entries (id -1) last. Returns numpy arrays of
    ``min(k, total columns)`` columns.

    Example:
        >>> d, i = merge_top_k([([[1.0, 4.0]], [[5, 2]]), ([[1.0]], [[3]])], 2, "l2")
        >>> i.tolist()
        [[3, 5]]
    """
    check_choice("metric", metric, index_kinds.METRICS)
    answers = [(_numpy(d), _numpy(i)) for d, i in answers]
    if not answers:
        raise ValueError("answers must hold at least one (distances, ids) pair")
    distances = np.concatenate([d for d, _ in answers], axis=1).astype(np.float32, copy=False)
    ids = np.concatenate([i for _, i in answers], axis=1).astype(np.int64, copy=False)
    if distances.shape != ids.shape:
        raise ValueError(f"distances {distances.shape} and ids {ids.shape} differ in shape")
    key = distances if metric == "l2" else -distances
    # lexsort: the last key is the primary one.
    order = np.lexsort((ids, key, ids < 0), axis=1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1)


# ---------------------------------------------------------------------------------- internals


def _manifest(source):
    if isinstance(source, (str, os.PathLike)):
        from .shards import ShardManifest

        return ShardManifest.read(source)
    return source


@contextlib.contextmanager
def _quiet_c_stdout():
    """Silence FAISS's C-level progress lines ("resizing ...", "updating ondisk filename"),
    which would otherwise land on stdout between a command's own output (e.g. its JSON)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _barrier() -> None:
    if distributed.is_distributed():
        torch.distributed.barrier()


def _prepared(vectors, settings: OnDiskSettings) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    return l2_normalize(x) if settings.metric == "cosine" else x


def _fixed_bytes(index: faiss.Index) -> int:
    """The trained state every part carries: the coarse centroids and any codebooks."""
    ivf = faiss.extract_index_ivf(index)
    size = ivf.nlist * ivf.d * 4
    pq = getattr(faiss.downcast_index(ivf), "pq", None)
    if pq is not None:
        size += pq.M * pq.ksub * pq.dsub * 4
        size += ivf.nlist * pq.M * pq.ksub * 4  # FAISS's precomputed L2 tables for IVF-PQ
    return size


def _read_trained(out: Path) -> tuple[faiss.Index, OnDiskSettings]:
    path = out / TRAINED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run train_ondisk first")
    settings = OnDiskSettings.from_json(json.loads((out / (TRAINED_FILE + ".json")).read_text()))
    return faiss.read_index(str(path)), settings


def _named_settings(factory: str) -> dict:
    """nlist, m and nbits back from a named kind's factory string (``IVF64,PQ8x8``)."""
    ivf, _, rest = factory.partition(",")
    settings = {"nlist": int(ivf[3:])} if ivf[3:].isdigit() else {}
    if rest.startswith("PQ"):
        m, _, nbits = rest[2:].partition("x")
        if m.isdigit() and nbits.isdigit():
            settings.update(m=int(m), nbits=int(nbits))
    return settings


def _write_part(part: faiss.Index, out: Path, rank: int, number: int) -> Path:
    path = out / PARTS_DIR / f"part-{rank:05d}-{number:05d}.faiss"
    _write_faiss(part, path)
    return path


def _write_faiss(index: faiss.Index, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def _write_json(path: Path, value: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(value, f, indent=1)


def _max_id(part: Path) -> int:
    index = faiss.read_index(str(part), faiss.IO_FLAG_MMAP)
    ids = index_kinds.stored_ids(index)
    return int(ids.max()) if ids.size else -1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
