"""TuplesToWeightsSampler: sample the items a miner finds hard, more often."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler, Subset, WeightedRandomSampler

from ..core import common as c_f
from ..core.loss_and_miner_utils import convert_to_weights
from ..core.validation import check_number
from ..eval.pca import run_pca


class TuplesToWeightsSampler(Sampler[int]):
    """Each epoch: embed the dataset (or a random subset), mine it, and sample by hardness.

    An item's weight is how many mined pairs or triplets it belongs to, divided by the
    largest such count (every item of the subset weighs 1 when the miner finds nothing;
    items outside the subset weigh 0). The epoch then draws ``len(sampler)`` indices with
    replacement in proportion to the weights (``torch.utils.data.WeightedRandomSampler``).
    PML's sampler, with the same arguments and draws: the subset comes from
    ``metricssl.utils.common_functions.NUMPY_RANDOM``, the weighted draw from torch's
    global generator, so with both seeded the indices are PML's.

    The embeddings are computed as PML's ``BaseTester.get_all_embeddings`` does: the model
    in eval mode under ``no_grad``, batches of ``batch_size`` in dataset order, inputs moved
    to ``data_device`` (and cast to ``dtype``), the outputs L2-normalised when
    ``normalize_embeddings``. The dataset yields ``(input, label)`` pairs (or whatever
    ``data_and_label_getter`` turns a batch into) with one integer label per item.

    PML forwards ``**tester_kwargs`` to a ``BaseTester``. The arguments that change the
    embeddings are explicit here (below); PML's evaluation-only tester arguments
    (``use_trunk_output``, ``label_hierarchy_level``, ``end_of_testing_hook``,
    ``dataset_labels``, ``set_min_label_to_zero``, ``accuracy_calculator``, ``visualizer``,
    ``visualizer_hook``) are accepted and, as in PML's sampler, have no effect; any other
    keyword is a ``TypeError``.

    Deviations from PML: the model's train/eval mode is restored afterwards (PML leaves it
    in eval mode, so training after the first epoch's draw silently runs in eval mode).
    Bad arguments raise ``ValueError``/``TypeError`` naming the argument.

    Example:
        >>> import torch
        >>> from metricssl.miners import MultiSimilarityMiner
        >>> from metricssl.samplers.tuples_to_weights_sampler import TuplesToWeightsSampler
        >>> data = torch.utils.data.TensorDataset(torch.randn(64, 10), torch.arange(64) % 4)
        >>> model = torch.nn.Linear(10, 8)
        >>> sampler = TuplesToWeightsSampler(
        ...     model, MultiSimilarityMiner(), data, subset_size=32, dataloader_num_workers=0
        ... )
        >>> loader = torch.utils.data.DataLoader(data, batch_size=16, sampler=sampler)
        >>> len(sampler)
        32

    Args:
        model: the ``torch.nn.Module`` that embeds a batch of inputs.
        miner: a miner (any callable ``miner(embeddings, labels)`` returning an indices
            tuple).
        dataset: a map-style dataset of ``(input, label)`` items.
        subset_size: embed and mine only this many random items (drawn without replacement
            when the dataset is large enough); None for the whole dataset. Also the
            number of indices per epoch (the dataset's length when None).
        normalize_embeddings: L2-normalise the embeddings before mining.
        pca: project the standardised embeddings onto this many principal components
            before normalising (FAISS PCA, as PML's tester); None or 0 for none.
        batch_size: batch size for computing the embeddings.
        dataloader_num_workers: DataLoader workers for computing the embeddings.
        data_device: where the inputs and embeddings go; CUDA when available by default.
        dtype: cast the inputs to this dtype (None: leave them).
        data_and_label_getter: turns a DataLoader batch into ``(inputs, labels)``.
    """

    def __init__(
        self,
        model,
        miner,
        dataset,
        subset_size: int | None = None,
        normalize_embeddings: bool = True,
        batch_size: int = 32,
        dataloader_num_workers: int = 2,
        data_device=None,
        dtype: torch.dtype | None = None,
        data_and_label_getter=None,
        pca: int | None = None,
        **evaluation_kwargs,
    ):
        unknown = sorted(set(evaluation_kwargs) - _EVALUATION_ONLY)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {unknown}; PML's "
                f"tester arguments are {sorted(_EVALUATION_ONLY | _EMBEDDING_ARGS)}"
            )
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(miner):
            raise TypeError(f"miner must be callable (a miner), got {type(miner).__name__}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"dataset must be a map-style dataset (__len__ and __getitem__), "
                f"got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("dataset is empty")
        check_number("subset_size", subset_size, low=1, integer=True, allow_none=True)
        check_number("batch_size", batch_size, low=1, integer=True)
        pca = pca or None  # PML: int(pca) if pca else None
        check_number("pca", pca, low=1, integer=True, allow_none=True)
        check_number("dataloader_num_workers", dataloader_num_workers, low=0, integer=True)
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype or None, got {dtype!r}")
        if data_and_label_getter is not None and not callable(data_and_label_getter):
            raise TypeError("data_and_label_getter must be callable or None")
        self.model = model
        self.miner = miner
        self.dataset = dataset
        self.subset_size = subset_size
        self.normalize_embeddings = bool(normalize_embeddings)
        self.batch_size = int(batch_size)
        self.dataloader_num_workers = int(dataloader_num_workers)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if data_device is None else data_device
        )
        self.dtype = dtype
        self.data_and_label_getter = data_and_label_getter or _as_is
        self.pca = pca
        self.weights = None

    def __len__(self) -> int:
        return self.subset_size if self.subset_size else len(self.dataset)

    def __iter__(self):
        c_f.LOGGER.info("Computing embeddings in %s", type(self).__name__)
        n = len(self.dataset)
        if self.subset_size:
            # PML's safe_random_choice over arange(n): without replacement when possible.
            indices = torch.from_numpy(
                c_f.NUMPY_RANDOM.choice(n, size=self.subset_size, replace=n < self.subset_size)
            ).to(self.device)
            data = Subset(self.dataset, indices.tolist())
        else:
            indices = torch.arange(n, device=self.device)
            data = self.dataset
        embeddings, labels = self.compute_embeddings(data)
        tuples = self.miner(embeddings, labels)
        self.weights = torch.zeros(n, device=self.device)
        self.weights[indices] = convert_to_weights(tuples, labels, dtype=torch.float32)
        return iter(WeightedRandomSampler(self.weights, len(self), replacement=True))

    def compute_embeddings(self, data):
        """(embeddings, labels) of every item of ``data``, in order, on ``self.device``."""
        loader = DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=False,
            num_workers=self.dataloader_num_workers,
        )
        was_training = self.model.training
        self.model.eval()
        all_embeddings, all_labels = [], []
        try:
            with torch.no_grad():
                for batch in loader:
                    inputs, labels = self.data_and_label_getter(batch)
                    inputs = c_f.to_device(inputs, device=self.device, dtype=self.dtype)
                    all_embeddings.append(self.model(inputs))
                    all_labels.append(self._as_label_column(labels))
        finally:
            self.model.train(was_training)
        embeddings = torch.cat(all_embeddings)
        if self.pca:
            embeddings = run_pca(c_f.torch_standard_scaler(embeddings), self.pca)
        if self.normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings)
        return embeddings, torch.cat(all_labels)

    def _as_label_column(self, labels):
        labels = torch.as_tensor(c_f.numpy_to_torch(labels))
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise ValueError(
                f"{type(self).__name__} needs one label per item; a batch of labels has shape "
                f"{tuple(labels.shape)}"
            )
        return labels.to(self.device)


# PML's BaseTester arguments that only its evaluation reads (not get_all_embeddings).
_EVALUATION_ONLY = frozenset(
    {
        "use_trunk_output",
        "label_hierarchy_level",
        "end_of_testing_hook",
        "dataset_labels",
        "set_min_label_to_zero",
        "accuracy_calculator",
        "visualizer",
        "visualizer_hook",
    }
)
_EMBEDDING_ARGS = frozenset(
    {
        "normalize_embeddings",
        "batch_size",
        "dataloader_num_workers",
        "pca",
        "data_device",
        "dtype",
        "data_and_label_getter",
    }
)


def _as_is(batch):
    return batch
