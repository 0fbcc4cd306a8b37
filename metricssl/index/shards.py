"""Embeddings stored as shards: a folder of ``.npy`` files and a ``manifest.json`` that lists
them, written by sharded embedding (one or several processes) and read, memory-mapped, by
index building. Nothing here loads a whole shard set into memory.

The format (version 1)::

    OUT/
      manifest.json
      part-00000-00000.npy          float32 or float16 (N_i, dim) embeddings
      part-00000-00000.ids.npy      int64 (N_i,) global ids (the item's index in the dataset)
      part-00000-00000.labels.npy   int64 (N_i,) labels, only when labels are known
      part-00001-00000.npy          ... one ``part-RANK-CHUNK`` per rank and chunk of rows

``manifest.json``::

    {"format": "metricssl-shards", "version": 1, "dim": 128, "dtype": "float32",
     "count": 60000, "encoder_sha256": "ab12..." or null,
     "shards": [{"path": "part-00000-00000.npy", "ids": "part-00000-00000.ids.npy",
                 "labels": "part-00000-00000.labels.npy" or null, "count": 4096,
                 "sha256": "<hex digest of the embeddings file>"}, ...]}

Every file is written atomically (:mod:`metricssl.core.atomic`), the embeddings file of a part
last: a part whose embeddings file exists is complete.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_write
from ..core.digest import file_digest
from ..core.validation import check_bool, check_number

FORMAT = "metricssl-shards"
VERSION = 1
MANIFEST_NAME = "manifest.json"
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
_ID_DTYPE = np.dtype("<i8")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def part_stem(rank: int, chunk: int) -> str:
    """The name shared by the files of one part: ``part-RANK-CHUNK`` (five digits each).

    Example:
        >>> part_stem(1, 12)
        'part-00001-00012'
    """
    return f"part-{rank:05d}-{chunk:05d}"


@dataclass(frozen=True)
class Shard:
    """One part of a shard set: file names relative to the folder, its row count and the
    SHA-256 of its embeddings file."""

    path: str
    ids: str
    labels: str | None
    count: int
    sha256: str

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "ids": self.ids,
            "labels": self.labels,
            "count": self.count,
            "sha256": self.sha256,
        }


def write_shard(
    folder: str | os.PathLike,
    stem: str,
    embeddings: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray | None = None,
) -> Shard:
    """Write one part, ``STEM.npy`` (embeddings, float32 or float16 as given), ``STEM.ids.npy``
    and, with labels, ``STEM.labels.npy``, each atomically and the embeddings last, so that a
    part whose embeddings file exists is complete.

    Example:
        >>> import tempfile, numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> shard = write_shard(folder, part_stem(0, 0), np.zeros((3, 4), "f4"), np.arange(3))
        >>> shard.path, shard.ids, shard.count
        ('part-00000-00000.npy', 'part-00000-00000.ids.npy', 3)
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.dtype not in DTYPES.values():
        raise ValueError(
            "embeddings must be a 2D float32 or float16 array, got "
            f"{embeddings.dtype} with shape {embeddings.shape}"
        )
    ids = _int64_rows(ids, len(embeddings), "ids")
    folder = Path(folder)
    names = {"ids": f"{stem}.ids.npy", "path": f"{stem}.npy"}
    with atomic_write(folder / names["ids"]) as f:
        np.save(f, ids)
    labels_name = None
    if labels is not None:
        labels_name = f"{stem}.labels.npy"
        with atomic_write(folder / labels_name) as f:
            np.save(f, _int64_rows(labels, len(embeddings), "labels"))
    with atomic_write(folder / names["path"]) as f:
        np.save(f, np.ascontiguousarray(embeddings))
    sha = file_digest(folder / names["path"])
    return Shard(names["path"], names["ids"], labels_name, len(embeddings), sha)


def _int64_rows(values, rows: int, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (rows,) or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(
            f"{name} must be an integer array of shape ({rows},), got {values.dtype} "
            f"with shape {values.shape}"
        )
    return values.astype(_ID_DTYPE, copy=False)


@dataclass(frozen=True)
class ShardManifest:
    """A shard set: its folder, the embeddings' ``dim`` and storage ``dtype``, the total
    ``count`` of rows, the encoder's checksum and the parts, in order.

    :meth:`read` checks the manifest and every file it names before anything is used;
    :meth:`iter_batches` and :meth:`sample` read the parts memory-mapped.

    Example:
        >>> import tempfile, numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> shard = write_shard(folder, part_stem(0, 0), np.eye(3, dtype="f4"), [7, 8, 9])
        >>> ShardManifest(folder, 3, "float32", 3, None, (shard,)).write()
        >>> manifest = ShardManifest.read(folder)
        >>> [(ids.tolist(), x.shape) for ids, x in manifest.iter_batches(2)]
        [([7, 8], (2, 3)), ([9], (1, 3))]
    """

    folder: Path
    dim: int
    dtype: str
    count: int
    encoder_sha256: str | None
    shards: tuple[Shard, ...]

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "shards", tuple(self.shards))

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def labelled(self) -> bool:
        """True when every part has labels (a shard set has labels for all rows or none)."""
        return bool(self.shards) and self.shards[0].labels is not None

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            "dtype": self.dtype,
            "count": self.count,
            "encoder_sha256": self.encoder_sha256,
            "shards": [shard.to_json() for shard in self.shards],
        }

    def write(self) -> None:
        """Write ``manifest.json`` atomically (after every part is on disk)."""
        _check_fields(self.to_json(), str(self.path))
        with atomic_write(self.path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1)
            f.write("\n")

    @classmethod
    def read(
        cls, folder: str | os.PathLike, verify: bool = False, unique_ids: bool = False
    ) -> ShardManifest:
        """Read and check a shard set: its manifest's format, version and fields, and each
        part's files: present, their ``.npy`` headers' shape and dtype equal to the
        manifest's, and their sizes equal to what the headers imply (a truncated file is
        caught without reading it).

        Args:
            folder: the folder holding ``manifest.json`` (or the manifest's own path).
            verify: also compare each embeddings file's SHA-256 with the manifest's (reads
                every byte).
            unique_ids: also check that no id appears twice across the parts (holds every
                id in memory, 8 bytes each).

        Raises:
            FileNotFoundError: no manifest, or a part's file is missing.
            ValueError: a manifest that is not a version-1 metricssl shard manifest, a file
                whose header or size disagrees with it, a checksum mismatch, duplicate ids.
        """
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a str or os.PathLike, got {type(folder).__name__}")
        check_bool("verify", verify)
        check_bool("unique_ids", unique_ids)
        folder = Path(folder)
        if folder.name == MANIFEST_NAME and folder.is_file():
            folder = folder.parent
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no shard manifest: {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a JSON shard manifest ({err})") from None
        _check_fields(data, str(path))
        shards = tuple(Shard(**entry) for entry in data["shards"])
        manifest = cls(
            folder, data["dim"], data["dtype"], data["count"], data["encoder_sha256"], shards
        )
        storage = DTYPES[manifest.dtype]
        for shard in shards:
            check_npy(folder / shard.path, (shard.count, manifest.dim), storage)
            check_npy(folder / shard.ids, (shard.count,), _ID_DTYPE)
            if shard.labels is not None:
                check_npy(folder / shard.labels, (shard.count,), _ID_DTYPE)
            if verify and file_digest(folder / shard.path) != shard.sha256:
                raise ValueError(
                    f"{folder / shard.path}: its SHA-256 differs from the manifest's "
                    "(the file changed after it was written)"
                )
        if unique_ids:
            all_ids = np.concatenate(
                [np.load(folder / s.ids, mmap_mode="r") for s in shards] or [np.empty(0, "i8")]
            )
            unique, counts = np.unique(all_ids, return_counts=True)
            if len(unique) != len(all_ids):
                repeated = unique[counts > 1][:5].tolist()
                raise ValueError(f"{path}: ids appear in more than one row, e.g. {repeated}")
        return manifest

    def iter_batches(self, rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, embeddings)`` of every row in manifest order, at most ``rows`` rows at a
        time: int64 (B,) ids and float32 (B, dim) embeddings, read from the memory-mapped
        parts (a batch never spans two parts), so memory stays at one batch."""
        check_number("rows", rows, low=1, integer=True)
        for shard in self.shards:
            if shard.count == 0:
                continue
            vectors, ids = self._open(shard)
            for start in range(0, shard.count, rows):
                stop = min(start + rows, shard.count)
                yield np.array(ids[start:stop]), vectors[start:stop].astype(np.float32)

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, embeddings)`` of ``min(n, count)`` rows drawn without replacement, the same
        rows for the same ``seed``, in manifest order: the training sample of an index.
        Only the drawn rows are read."""
        check_number("n", n, low=1, integer=True)
        check_number("seed", seed, low=0, integer=True)
        n = min(n, self.count)
        rows = np.sort(np.random.default_rng(seed).choice(self.count, size=n, replace=False))
        ends = np.cumsum([shard.count for shard in self.shards])
        which = np.searchsorted(ends, rows, side="right")
        ids = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, self.dim), dtype=np.float32)
        for part in np.unique(which):
            selected = which == part
            local = rows[selected] - (ends[part] - self.shards[part].count)
            part_vectors, part_ids = self._open(self.shards[part])
            ids[selected] = part_ids[local]
            vectors[selected] = part_vectors[local]
        return ids, vectors

    def _open(self, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.load(self.folder / shard.path, mmap_mode="r")
        ids = np.load(self.folder / shard.ids, mmap_mode="r")
        return vectors, ids


def _check_fields(data, path: str) -> None:
    """The manifest's JSON fields: types, ranges, and counts that add up."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT!r} manifest")
    if data.get("version") != VERSION:
        raise ValueError(
            f"{path}: shard format version {data.get('version')!r}, this metricssl reads "
            f"version {VERSION}"
        )

    def bad(field: str, expected: str) -> ValueError:
        return ValueError(f"{path}: {field} must be {expected}")

    for field in ("dim", "count"):
        value = data.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < (field == "dim"):
            raise bad(field, "a positive integer" if field == "dim" else "an integer >= 0")
    if data.get("dtype") not in DTYPES:
        raise bad("dtype", f"one of {sorted(DTYPES)}")
    sha = data.get("encoder_sha256")
    if sha is not None and not isinstance(sha, str):
        raise bad("encoder_sha256", "a string or null")
    shards = data.get("shards")
    if not isinstance(shards, list):
        raise bad("shards", "a list")
    keys = {"path", "ids", "labels", "count", "sha256"}
    seen: set[str] = set()
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict) or set(entry) != keys:
            raise bad(f"shards[{i}]", f"an object with the keys {sorted(keys)}")
        for field in ("path", "ids", "labels"):
            name = entry[field]
            if name is None and field == "labels":
                continue
            # Plain names inside the folder: a manifest never reaches files elsewhere.
            if not isinstance(name, str) or not name.endswith(".npy") or name != Path(name).name:
                raise bad(f"shards[{i}].{field}", "a .npy file name inside the folder")
            if name in seen:
                raise bad(f"shards[{i}].{field}", f"a file no other entry names ({name!r})")
            seen.add(name)
        count = entry["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise bad(f"shards[{i}].count", "an integer >= 0")
        if not isinstance(entry["sha256"], str) or not _HEX64.fullmatch(entry["sha256"]):
            raise bad(f"shards[{i}].sha256", "64 lowercase hex digits")
    if len({entry["labels"] is None for entry in shards}) > 1:
        raise ValueError(f"{path}: some shards have labels and others do not")
    total = sum(entry["count"] for entry in shards)
    if total != data["count"]:
        raise ValueError(f"{path}: count is {data['count']} but the shards hold {total} rows")


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data_offset)`` of a ``.npy`` file, from its header.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a ``.npy`` file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard file missing: {str(path)!r}")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            return shape, dtype, fortran, f.tell()
    except ValueError as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from None


def check_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """``path`` is a ``.npy`` file of exactly ``shape`` and ``dtype`` (C order), and as long
    as its header says: read from the header and the file's size, not its data.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a ``.npy`` file, another shape or dtype, or truncated.
    """
    path = Path(path)
    found_shape, found_dtype, fortran, data_start = npy_header(path)
    if found_shape != shape or found_dtype != dtype or fortran:
        raise ValueError(
            f"{path}: holds {found_dtype} {found_shape}"
            f"{' (Fortran order)' if fortran else ''}, expected {dtype} {shape}"
        )
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise ValueError(f"{path}: the file is {state} ({size} bytes, expected {expected})")
