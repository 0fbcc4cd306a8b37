"""ImageData: the one form in which training, embedding and evaluation read images."""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.validation import check_number
from .items import PrepareItem, label_value

_LABEL_BATCH = 1024


class ImageData:
    """Images in memory (``images``), behind a map-style Dataset (``dataset``) or in a stream
    of batches (``stream``: a DataLoader), with optional labels.

    ``batches(indices, batch_size, device)`` yields uint8 (or float) (B, C, H, W) image
    batches and label batches (or None) on ``device`` (default: where they are).

    * In-memory images are gathered by indexing (no per-item Python work).
    * A Dataset goes through one DataLoader with ``num_workers`` processes, kept for every
      later call, so the workers start once, not once per epoch. Items are turned into images
      by ``prepare`` (:class:`~metricssl.data.items.PrepareItem`: PIL, HWC numpy or CHW
      tensors; ``mode``; ``image_size``) inside the workers. They are read with Python's,
      NumPy's and torch's CPU random generators seeded from the batch's indices (and restored
      afterwards), so a Dataset with random transforms gives the same batch whatever
      ``num_workers`` is, which worker reads it, or whether the run was resumed.
    * A stream has no random access: each call takes the stream's next batches, one per
      ``batch_size`` of ``indices`` (whatever their values), starting the stream again when
      it ends; ``len()`` is ``steps`` x the stream's batch size. One pass of ``steps`` batches
      is a training epoch.

    Towards a CUDA device batches are gathered into pinned memory and copied without blocking
    the host.

    Labels: given (``labels``), known from the source without reading an image (folders,
    manifests, a ``targets``/``labels`` attribute), or, for a Dataset whose items carry
    labels and nothing else tells them (``lazy_labels``), read on first use of ``labels``
    (every item once, in the workers); ``labels_known`` says whether that read is done or
    needs no reading. Batches carry their items' labels in any case.

    Example:
        >>> import torch
        >>> from metricssl.data.image_data import ImageData
        >>> data = ImageData(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.arange(10) % 2)
        >>> [labels.tolist() for _, labels in data.batches(torch.tensor([3, 0, 5]), 2)]
        [[1, 0], [1]]
    """

    def __init__(
        self,
        images: torch.Tensor | None,
        labels: torch.Tensor | None,
        dataset: Dataset | None = None,
        num_workers: int = 0,
        *,
        prepare: PrepareItem | None = None,
        lazy_labels: bool = False,
        stream: Iterable | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        if sum(x is not None for x in (images, dataset, stream)) != 1:
            raise ValueError("ImageData needs exactly one of images, dataset and stream")
        check_number("num_workers", num_workers, low=0, integer=True)
        if stream is not None:
            # A stream's length is steps x batch_size: both must be known.
            check_number("steps", steps, low=1, integer=True)
            check_number("batch_size", batch_size, low=1, integer=True)
        self.images = images
        self.dataset = dataset
        self.num_workers = num_workers
        self.prepare = prepare or PrepareItem()
        self.stream = stream
        self.steps = steps
        self.batch_size = batch_size
        self._labels = labels
        self._lazy_labels = lazy_labels and labels is None
        self._input_shape: tuple[int, ...] | None = None
        self._loader: DataLoader | None = None
        self._loader_busy = False
        self._stream_iter: Iterator | None = None
        self._pending: list = []  # stream batches read ahead (the first, for its shape)
        self._stream_labelled = False
        # The ImageData whose iterator a stream view reads (None: this one). Never a reference
        # to itself: an ImageData in a cycle is freed by the cycle collector, which closes the
        # DataLoader's queues before its workers are told to stop, so each worker is waited
        # for 5 s and then killed.
        self._source: ImageData | None = None

    # -- what the data is -------------------------------------------------------------------

    def __len__(self) -> int:
        if self.images is not None:
            return len(self.images)
        if self.dataset is not None:
            return len(self.dataset)
        return self.steps * self.batch_size

    @property
    def random_access(self) -> bool:
        """Whether images are read by position (False for a stream)."""
        return self.stream is None

    @property
    def labels(self) -> torch.Tensor | None:
        """int64 (N,) labels, or None; a Dataset's lazy labels are read here on first use."""
        if self._lazy_labels:
            self._labels = self._read_labels()
            self._lazy_labels = False
        return self._labels

    @labels.setter
    def labels(self, value: torch.Tensor | None) -> None:
        self._labels, self._lazy_labels = value, False

    @property
    def labels_known(self) -> bool:
        """True unless reading ``labels`` would read every item of the Dataset."""
        return not self._lazy_labels

    @property
    def labelled(self) -> bool:
        """Whether the images have labels (known without reading them all)."""
        if self.stream is not None:
            self._peek()
            return self._owner._stream_labelled
        return self._lazy_labels or self._labels is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the images (one item, or one stream batch, is read the first time)."""
        if self._input_shape is None:
            if self.images is not None:
                first = self._prepared(self.images[:1])[0]
            elif self.dataset is not None:
                first = self.prepare(self.dataset[0])[0]
            else:
                first = self._peek()[0][0]
            self._input_shape = tuple(first.shape)
        return self._input_shape

    def subset(self, indices: torch.Tensor) -> ImageData:
        """The images at ``indices`` (of a stream: the next ``len(indices)`` of its images)."""
        if self.stream is not None:
            steps = max(1, math.ceil(len(indices) / self.batch_size))
            view = ImageData(
                None, None, stream=self.stream, steps=steps, batch_size=self.batch_size
            )
            # A view reads from the same iterator: a stream cannot be read twice at once.
            view._source = self._owner
            return view
        labels = None if self._labels is None else self._labels[indices]
        if self.images is not None:
            return ImageData(self.images[indices], labels, prepare=self.prepare)
        subset = torch.utils.data.Subset(self.dataset, indices.tolist())
        return ImageData(
            None,
            labels,
            subset,
            self.num_workers,
            prepare=self.prepare,
            lazy_labels=self._lazy_labels,
        )

    # -- reading ----------------------------------------------------------------------------

    def batches(
        self,
        indices: torch.Tensor,
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        device = None if device is None else torch.device(device)
        pin = device is not None and device.type == "cuda"
        chunks = torch.split(indices, batch_size)
        if self.stream is not None:
            for _ in chunks:
                images, labels = self._next_stream_batch()
                yield _moved(self._same_shape(images), device), _moved(labels, device)
            return
        if self.images is not None:
            for idx in chunks:
                images = self._prepared(_gather(self.images, idx, pin))
                labels = None if self._labels is None else _gather(self._labels, idx, pin)
                yield _moved(images, device), _moved(labels, device)
            return
        batch_list = [_SeededBatch(c.tolist()) for c in chunks]
        # One DataLoader serves every pass; a pass that starts while another is still being
        # read (nested use) gets a loader of its own, as resetting the shared one would cut
        # the other short.
        nested = self._loader_busy
        loader = self._make_loader(pin) if nested else self._shared_loader(pin)
        loader.batch_sampler.batches = batch_list
        if not nested:
            self._loader_busy = True
        try:
            for (images, item_labels), idx in zip(loader, chunks):
                labels = item_labels if self._labels is None else _gather(self._labels, idx, pin)
                yield _moved(self._same_shape(images), device), _moved(labels, device)
        finally:
            if not nested:
                self._loader_busy = False

    def _prepared(self, images: torch.Tensor) -> torch.Tensor:
        return self.prepare.images(images) if self.prepare.changes_images else images

    def _same_shape(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"a batch of images has shape (C, H, W) = {tuple(images.shape[1:])}, the first "
                f"image {self.input_shape}; pass image_size to resize every image to one size"
            )
        return images

    def _read_labels(self) -> torch.Tensor | None:
        if self.stream is not None:
            return None
        found = [
            labels
            for _, labels in self.batches(torch.arange(len(self)), _LABEL_BATCH)
            if labels is not None
        ]
        return torch.cat(found) if found else None

    def _shared_loader(self, pin: bool) -> DataLoader:
        if self._loader is None or self._loader.pin_memory != pin:
            self._loader = self._make_loader(pin)
        return self._loader

    def _make_loader(self, pin: bool) -> DataLoader:
        return DataLoader(
            _SeededItems(self.dataset),
            batch_sampler=_PassBatches(),
            num_workers=self.num_workers,
            collate_fn=Collate(self.prepare),
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
            # Its own generator: every pass draws the workers' base seed from it, which would
            # otherwise advance torch's global generator (and the model's random numbers).
            generator=torch.Generator().manual_seed(0),
        )

    # -- streams ----------------------------------------------------------------------------

    @property
    def _owner(self) -> ImageData:
        return self if self._source is None else self._source

    def _peek(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        owner = self._owner
        if not owner._pending:
            owner._pending.append(owner._pull())
        return owner._pending[0]

    def _next_stream_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        owner = self._owner
        return owner._pending.pop(0) if owner._pending else owner._pull()

    def _pull(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        for fresh in (False, True):
            if self._stream_iter is None or fresh:
                self._stream_iter = iter(self.stream)
            try:
                batch = next(self._stream_iter)
            except StopIteration:
                continue
            images, labels = stream_batch(batch)
            self._stream_labelled = labels is not None
            return images, labels
        raise ValueError("dataset: the stream (IterableDataset or DataLoader) yields no batches")


def stream_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(images (B, C, H, W), labels (B,) or None)`` of a batch as a DataLoader yields it:
    images alone, ``(images, labels, ...)`` or a dict with ``image``/``label`` keys."""
    from .items import IMAGE_KEYS, LABEL_KEYS

    labels = None
    if isinstance(batch, (tuple, list)):
        images, labels = batch[0], batch[1] if len(batch) > 1 else None
    elif isinstance(batch, Mapping):
        key = next((k for k in IMAGE_KEYS if k in batch), None)
        if key is None:
            raise ValueError(f"dataset: a batch dict has keys {sorted(batch)}, no image key")
        images = batch[key]
        labels = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    else:
        images = batch
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not torch.is_tensor(images) or images.ndim != 4:
        raise ValueError(
            f"dataset: a DataLoader's batches must hold (B, C, H, W) image tensors, got "
            f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}"
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 (0..255) or floating point, got {images.dtype}")
    if labels is not None:
        labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
    return images, labels


class Collate:
    """Items -> ``(images (B, C, H, W), labels (B,) int64 or None)``, each item prepared by
    ``prepare`` (decoding, channels, size). A DataLoader runs it in its workers."""

    def __init__(self, prepare: PrepareItem):
        self.prepare = prepare

    def __call__(self, items) -> tuple[torch.Tensor, torch.Tensor | None]:
        prepared = [self.prepare(item) for item in items]
        images = [image for image, _ in prepared]
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) != 1:
            raise ValueError(
                f"images in one batch differ in shape (C, H, W) ({sorted(shapes)}); pass "
                f"image_size to resize every image to one size (or give the dataset a "
                f"transform that does)"
            )
        labels = [label for _, label in prepared]
        if any(label is None for label in labels):
            return torch.stack(images), None
        return torch.stack(images), torch.tensor([label_value(x) for x in labels])


def _gather(source: torch.Tensor, idx: torch.Tensor, pin: bool) -> torch.Tensor:
    """``source[idx]``, written straight into pinned memory when ``pin``: a copy from there
    to the GPU runs without blocking the host (pinned blocks come from torch's caching host
    allocator, which reuses one only after its copy has finished)."""
    if not pin:
        return source[idx]
    out = torch.empty((len(idx), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
    return torch.index_select(source, 0, idx, out=out)


def _moved(x: torch.Tensor | None, device: torch.device | None) -> torch.Tensor | None:
    return x if x is None or device is None else x.to(device, non_blocking=True)


class _SeededBatch(list):
    """A batch of dataset indices and the seed its items are read with."""

    def __init__(self, indices: list[int]):
        super().__init__(indices)
        digest = hashlib.blake2b(struct.pack(f"<{len(indices)}q", *indices), digest_size=8)
        self.seed = int.from_bytes(digest.digest(), "little") >> 1  # below 2**63


class _PassBatches(Sampler):
    """The batches of the current pass, set before each pass: the DataLoader and its
    persistent workers stay, the order changes."""

    def __init__(self):
        self.batches: list[_SeededBatch] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _SeededItems(Dataset):
    """The items of ``dataset``, a batch at a time, with the random generators a transform
    may draw from seeded by the batch (and restored afterwards, which matters when the
    DataLoader reads in the main process)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def __getitems__(self, batch: _SeededBatch) -> list:
        states = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
        random.seed(batch.seed)
        np.random.seed(batch.seed % 2**32)
        torch.default_generator.manual_seed(batch.seed)
        try:
            return [self.dataset[i] for i in batch]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.default_generator.set_state(states[2])
