"""A dataset over a CSV or Parquet manifest: one row per image file, optionally a label."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .image_files import ImageFiles

MANIFEST_SUFFIXES = (".csv", ".parquet")
_SHOWN_MISSING = 5


class ManifestDataset(ImageFiles):
    """The images listed in a manifest table, read from disk on access.

    The table has a ``path`` column (relative paths are relative to the manifest's folder)
    and optionally a ``label`` column: integers are used as they are; names (strings) become
    labels 0, 1, ... in sorted order (``classes``), as an image folder's subfolders do. Items
    are ``(image, label)`` with a label column, else ``image``. Every listed file must exist
    (checked when the dataset is built; nothing is decoded then).

    CSV is read with Python's csv module; Parquet needs pyarrow (the ``parquet`` extra).

    Args:
        path: the ``.csv`` or ``.parquet`` file.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (1 grey channel).
        transform: optional callable applied to each uint8 (C, H, W) tensor.

    Example:
        >>> from metricssl.data.manifest import ManifestDataset
        >>> ds = ManifestDataset("photos.csv")  # doctest: +SKIP
        >>> ds.classes, ds.targets[:3]  # doctest: +SKIP
        (['cat', 'dog'], tensor([0, 0, 1]))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "RGB",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = Path(path).expanduser()
        suffix = self.path.suffix.lower()
        if suffix not in MANIFEST_SUFFIXES:
            raise ValueError(f"path: a manifest is a .csv or .parquet file, got {self.path}")
        if not self.path.is_file():
            raise FileNotFoundError(f"path: manifest {str(self.path)!r} does not exist")
        columns = _read_parquet(self.path) if suffix == ".parquet" else _read_csv(self.path)
        if "path" not in columns:
            raise ValueError(
                f"path: manifest {self.path} has no 'path' column (columns: {sorted(columns)})"
            )
        files = [self._resolve(p, row) for row, p in enumerate(columns["path"])]
        if not files:
            raise ValueError(f"path: manifest {self.path} lists no images")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            shown = ", ".join(missing[:_SHOWN_MISSING])
            more = (
                f" and {len(missing) - _SHOWN_MISSING} more"
                if len(missing) > _SHOWN_MISSING
                else ""
            )
            raise FileNotFoundError(
                f"path: manifest {self.path} lists {len(missing)} missing file(s): {shown}{more}"
            )
        classes, labels = _labels(columns.get("label"), self.path)
        labels = labels or [-1] * len(files)
        super().__init__(list(zip(files, labels)), classes, mode, transform)

    def _resolve(self, value, row: int) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"path: manifest {self.path}, row {row + 1}: empty path {value!r}")
        file = Path(value).expanduser()
        return file if file.is_absolute() else self.path.parent / file


def _read_csv(path: Path) -> dict[str, list]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [name.strip() for name in reader.fieldnames or []]
        rows = [[row.get(key) for key in reader.fieldnames or []] for row in reader]
    return {name: [row[i] for row in rows] for i, name in enumerate(fields)}


def _read_parquet(path: Path) -> dict[str, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "reading a Parquet manifest needs the optional package pyarrow: "
            "pip install 'metricssl[parquet]' (or pyarrow), or write the manifest as CSV"
        ) from err
    return pq.read_table(path).to_pydict()


def _labels(values: list | None, path: Path) -> tuple[list[str], list[int]]:
    """(classes, labels): integer labels as they are (classes named by number), names in
    sorted order; no column gives no classes and labels -1."""
    if values is None:
        return [], []
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        raise ValueError(f"path: manifest {path} has rows without a label; fill every row")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values) or all(
        isinstance(v, str) and v.strip().lstrip("-").isdigit() for v in values
    ):
        labels = [int(v) for v in values]
        if min(labels) < 0:
            raise ValueError(f"path: manifest {path} has negative labels")
        return [str(i) for i in range(max(labels) + 1)], labels
    names = [str(v) for v in values]
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    return classes, [index[name] for name in names]
