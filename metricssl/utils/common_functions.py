"""PML's import path ``pytorch_metric_learning.utils.common_functions``.

The globals (``NUMPY_RANDOM``, ``COLLECT_STATS``, ``LOGGER``, ``LOGGER_NAME``) and the tensor
helpers the package calls live in :mod:`metricssl.core.common`. They are re-exported here,
and the globals are forwarded: ``common_functions.NUMPY_RANDOM = rng`` (as PML users write it)
sets the one value every module of the package reads, and reading it here reads that value.
The other helpers below are PML's (dataloaders, labels, saving models, ...), with its names,
arguments and results unless noted.

Example:
    >>> import numpy as np
    >>> from metricssl.core import common
    >>> from metricssl.utils import common_functions as c_f
    >>> c_f.COLLECT_STATS = True
    >>> common.COLLECT_STATS
    True
    >>> c_f.COLLECT_STATS = False
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys
import types

import numpy as np
import torch

from ..core import common as _common
from ..core.atomic import atomic_write
from ..core.common import (
    TorchInitWrapper,
    accumulation_dtype,
    concatenate_indices_tuples,
    is_list_or_tuple,
    neg_inf,
    numpy_to_torch,
    pos_inf,
    safe_random_choice,
    set_logger_name,
    small_val,
    to_device,
    to_dtype,
    to_numpy,
    torch_all_from_dim_to_end,
    torch_arange_from_size,
    torch_standard_scaler,
)
from ..core.records import (
    add_to_recordable_attributes,
    list_of_recordable_attributes_list_names,
    reset_stats,
)
from ..core.validation import ArgumentError

# Module attributes that live in core.common: reading or assigning them here reads or assigns
# the owner's value, so a PML user's ``c_f.NUMPY_RANDOM = ...`` reaches every module.
_FORWARDED = ("NUMPY_RANDOM", "COLLECT_STATS", "LOGGER", "LOGGER_NAME")


def _forwarded(name: str) -> property:
    def get(module):
        return getattr(_common, name)

    def set_(module, value):
        setattr(_common, name, value)

    # Properties (data descriptors), not __getattr__/__setattr__: tools that save and restore
    # module attributes (pytest's monkeypatch) then write back through the property too.
    return property(get, set_, doc=f"metricssl.core.common.{name}")


_ForwardingModule = type(
    "_ForwardingModule", (types.ModuleType,), {name: _forwarded(name) for name in _FORWARDED}
)
sys.modules[__name__].__class__ = _ForwardingModule


def shift_indices_tuple(indices_tuple, batch_size: int):
    """Shift the positive/negative indices of a tuple by ``batch_size`` (PML semantics)."""
    if len(indices_tuple) == 3:
        return (indices_tuple[0],) + tuple(
            x + batch_size if len(x) > 0 else x for x in indices_tuple[1:]
        )
    if len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
        return (
            a1,
            p + batch_size if len(p) > 0 else p,
            a2,
            n + batch_size if len(n) > 0 else n,
        )
    return indices_tuple


def use_cuda_if_available() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def try_next_on_generator(gen, iterable):
    """``(gen, next(gen))``, restarting ``gen`` from ``iterable`` when it is exhausted."""
    try:
        return gen, next(gen)
    except StopIteration:
        gen = iter(iterable)
        return gen, next(gen)


def set_requires_grad(model: torch.nn.Module, requires_grad: bool) -> None:
    for param in model.parameters():
        param.requires_grad = requires_grad


def unslice_by_n(input_tensors):
    """Interleave the rows of n (rows, cols) tensors: output row ``i * n + j`` is row i of
    tensor j. The output keeps the inputs' dtype (PML's is always float32)."""
    n = len(input_tensors)
    rows, cols = input_tensors[0].size()
    first = input_tensors[0]
    output = torch.zeros((rows * n, cols), device=first.device, dtype=first.dtype)
    for i, t in enumerate(input_tensors):
        output[i::n] = t
    return output


def set_layers_to_eval(layer_name: str):
    """A function for ``model.apply`` that puts every layer whose class name contains
    ``layer_name`` (e.g. ``"BatchNorm"``) in eval mode."""

    def set_to_eval(m):
        if layer_name in type(m).__name__:
            m.eval()

    return set_to_eval


def get_train_dataloader(dataset, batch_size, sampler, num_workers, collate_fn):
    """PML's training loader: a ``BatchSampler`` drives the batches, else ``batch_size`` with
    ``drop_last`` (shuffled when there is no sampler)."""
    if isinstance(sampler, torch.utils.data.BatchSampler):
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=False,
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=int(batch_size),
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=collate_fn,
        shuffle=sampler is None,
        pin_memory=False,
    )


def get_eval_dataloader(dataset, batch_size, num_workers, collate_fn):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=int(batch_size),
        drop_last=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        shuffle=False,
        pin_memory=False,
    )


# -- labels


def get_hierarchy_label(batch_labels, hierarchy_level):
    """The labels of one level (an int or a list of levels) of (n, levels) labels; ``"all"``
    or 1D labels are returned as they are."""
    if hierarchy_level == "all":
        return batch_labels
    top = max(hierarchy_level) if is_list_or_tuple(hierarchy_level) else hierarchy_level
    if top > 0 and not (batch_labels.ndim == 2 and batch_labels.shape[1] > top):
        raise ArgumentError(
            f"hierarchy_level {hierarchy_level} needs labels of shape (n, > {top}), "
            f"got {tuple(batch_labels.shape)}"
        )
    if batch_labels.ndim == 2:
        return batch_labels[:, hierarchy_level]
    return batch_labels


def map_labels(label_map, labels):
    """``label_map(labels_of_level_h, h)`` applied to each level, as an int numpy array; a
    list of per-level label tensors is stacked as columns first."""
    if is_list_or_tuple(labels):
        labels = np.stack([to_numpy(sub) for sub in labels], axis=1)
    else:
        labels = to_numpy(labels)
    if labels.ndim == 2:
        new_labels = np.zeros(labels.shape, dtype=int)
        for h in range(labels.shape[1]):
            new_labels[:, h] = label_map(labels[:, h], h)
        return new_labels
    return label_map(labels, 0)


def process_label(labels, hierarchy_level, label_map):
    labels = get_hierarchy_label(map_labels(label_map, labels), hierarchy_level)
    return numpy_to_torch(labels)


def get_labels_to_indices(labels):
    """``{label: int numpy array of the positions holding it}`` (a defaultdict, as PML)."""
    if torch.is_tensor(labels):
        labels = labels.cpu().numpy()
    positions = collections.defaultdict(list)
    for i, label in enumerate(labels):
        positions[label].append(i)
    for label, where in positions.items():
        positions[label] = np.array(where, dtype=int)
    return positions


def make_label_to_rank_dict(label_set):
    """``{label: its rank among label_set}`` (0-based); the labels must be distinct."""
    if len(set(label_set)) != len(label_set):
        raise ArgumentError("label set must not have duplicates")
    order = np.argsort(np.asarray(label_set), kind="stable")
    ranks = np.empty(len(label_set), dtype=int)
    ranks[order] = np.arange(len(label_set))
    return {label: rank for label, rank in zip(label_set, ranks)}


def get_label_map(labels):
    """``{level: {label: rank}}`` for 1D labels (level 0) or each column of 2D labels."""
    labels = np.array(labels)
    if labels.ndim == 2:
        return {h: make_label_to_rank_dict(list(set(labels[:, h]))) for h in range(labels.shape[1])}
    return {0: make_label_to_rank_dict(list(set(labels)))}


class LabelMapper:
    """Maps labels to 0..C-1 (their rank among the dataset's labels) when
    ``set_min_label_to_zero``; otherwise returns them unchanged.

    Args:
        set_min_label_to_zero: remap labels to their rank.
        dataset_labels: every label of the dataset (needed when remapping).
    """

    def __init__(self, set_min_label_to_zero: bool = False, dataset_labels=None):
        if not isinstance(set_min_label_to_zero, bool):
            raise TypeError(f"set_min_label_to_zero must be a bool, got {set_min_label_to_zero!r}")
        if set_min_label_to_zero and dataset_labels is None:
            raise ArgumentError("set_min_label_to_zero=True needs dataset_labels")
        self.set_min_label_to_zero = set_min_label_to_zero
        if dataset_labels is not None:
            self.label_map = get_label_map(dataset_labels)

    def map(self, labels, hierarchy_level):
        if not self.set_min_label_to_zero:
            return labels
        return np.array([self.label_map[hierarchy_level][x] for x in labels], dtype=int)


def check_shapes(embeddings, labels) -> None:
    if labels is not None and embeddings.shape[0] != labels.shape[0]:
        raise ArgumentError("Number of embeddings must equal number of labels")
    if labels is not None and labels.ndim != 1:
        raise ArgumentError("labels must be a 1D tensor of shape (batch_size,)")


def set_ref_emb(embeddings, labels, ref_emb, ref_labels):
    """``(ref_emb, ref_labels)``, defaulting to the embeddings and labels themselves."""
    if ref_emb is not None:
        if ref_labels is not None:
            ref_labels = to_device(ref_labels, ref_emb)
    else:
        ref_emb, ref_labels = embeddings, labels
    check_shapes(ref_emb, ref_labels)
    return ref_emb, ref_labels


def labels_not_supported(labels, ref_labels) -> None:
    if labels is not None or ref_labels is not None:
        raise ArgumentError("labels and ref_labels are not supported for this loss function")


def ref_not_supported(embeddings, labels, ref_emb, ref_labels) -> None:
    if ref_emb is not embeddings or ref_labels is not labels:
        raise ArgumentError("ref_emb is not supported for this loss function")


def indices_tuple_not_supported(indices_tuple) -> None:
    if indices_tuple is not None:
        raise ArgumentError("indices_tuple is not supported for this loss function")


def labels_required(labels) -> None:
    if labels is None:
        raise ArgumentError("labels are required for this loss function")


def labels_or_indices_tuple_required(labels, indices_tuple) -> None:
    if labels is None and indices_tuple is None:
        raise ArgumentError("labels and indices_tuple cannot both be None")


def assert_distance_type(obj, distance_type=None, **kwargs) -> None:
    """Raise ``AssertionError`` unless ``obj.distance`` is a ``distance_type`` (a class or a
    tuple of classes) and has each attribute value given in ``kwargs``."""
    obj_name = type(obj).__name__
    if distance_type is not None:
        if is_list_or_tuple(distance_type):
            wanted = "one of " + ", ".join(x.__name__ for x in distance_type)
            distance_type = tuple(distance_type)
        else:
            wanted = distance_type.__name__
        if not isinstance(obj.distance, distance_type):
            raise AssertionError(f"{obj_name} requires the distance metric to be {wanted}")
    for name, value in kwargs.items():
        if getattr(obj.distance, name) != value:
            raise AssertionError(f"{obj_name} requires distance.{name} to be {value}")


# -- saving and loading models


def modelpath_creator(folder, basename, identifier, extension=".pth") -> str:
    if identifier is None:
        return os.path.join(folder, basename + extension)
    return os.path.join(folder, f"{basename}_{identifier}{extension}")


def save_model(model: torch.nn.Module, filepath) -> None:
    """Save the state dict (of the wrapped module for DataParallel / DDP), atomically."""
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        model = model.module
    with atomic_write(filepath) as f:
        torch.save(model.state_dict(), f)


def load_model(model_def: torch.nn.Module, model_filename, device) -> None:
    """Load a state dict saved by :func:`save_model` (or from a DataParallel model, whose keys
    start with ``module.``). Unlike PML, the file is read with ``weights_only=True``: loading
    never runs pickled code."""
    state_dict = torch.load(model_filename, map_location=device, weights_only=True)
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = collections.OrderedDict(
            (k[len("module.") :], v) for k, v in state_dict.items()
        )
    model_def.load_state_dict(state_dict)


def operate_on_dict_of_models(
    input_dict,
    suffix,
    folder,
    operation,
    logging_string="",
    log_if_successful=False,
    assert_success=False,
):
    """``operation(model, path)`` for each named model; an ``IOError`` is logged (and raised
    again with ``assert_success``)."""
    for name, model in input_dict.items():
        model_path = modelpath_creator(folder, name, suffix)
        try:
            operation(model, model_path)
            if log_if_successful:
                _common.LOGGER.info("%s %s", logging_string, model_path)
        except OSError:
            _common.LOGGER.warning("Could not %s %s", logging_string, model_path)
            if assert_success:
                raise


def save_dict_of_models(input_dict, suffix, folder, **kwargs):
    operate_on_dict_of_models(input_dict, suffix, folder, save_model, "SAVE", **kwargs)


def load_dict_of_models(input_dict, suffix, folder, device, **kwargs):
    def operation(model, model_path):
        load_model(model, model_path, device)

    operate_on_dict_of_models(input_dict, suffix, folder, operation, "LOAD", **kwargs)


def delete_dict_of_models(input_dict, suffix, folder, **kwargs):
    def operation(model, model_path):
        if os.path.exists(model_path):
            os.remove(model_path)

    operate_on_dict_of_models(input_dict, suffix, folder, operation, "DELETE", **kwargs)


def regex_wrapper(x):
    if isinstance(x, list):
        return [re.compile(z) for z in x]
    return re.compile(x)


def regex_replace(search, replace, contents):
    return re.sub(search, replace, contents)


def latest_version(folder, string_to_glob="trunk_*.pth", best=False):
    """``(epoch, suffix)`` of the newest ``<name>_<epoch>.pth`` (``best<epoch>`` when ``best``)
    in ``folder``; ``(0, None)`` when there is none."""
    items = glob.glob(os.path.join(folder, string_to_glob))
    model_regex = regex_wrapper(r"best[0-9]+\.pth$" if best else r"[0-9]+\.pth$")
    epoch_regex = regex_wrapper(r"[0-9]+\.pth$")
    versions = [
        int(epoch_regex.findall(x)[-1].split(".")[0]) for x in items if model_regex.search(x)
    ]
    if not versions:
        return 0, None
    resume_epoch = max(versions)
    return resume_epoch, (f"best{resume_epoch}" if best else resume_epoch)


# -- small tensor and list helpers


def return_input(x):
    return x


class EmbeddingDataset(torch.utils.data.Dataset):
    """A dataset of ``(embedding, label)`` pairs.

    Args:
        embeddings: (n, d) tensor or array.
        labels: n labels.
    """

    def __init__(self, embeddings, labels):
        if len(embeddings) != len(labels):
            raise ArgumentError(
                f"embeddings has {len(embeddings)} rows but labels has {len(labels)} entries"
            )
        self.embeddings = embeddings
        self.labels = labels

    def __len__(self):
        return len(self.embeddings)

    def __getitem__(self, idx):
        return self.embeddings[idx], self.labels[idx]


def sqlite_obj_to_dict(sqlite_obj):
    """Rows of a sqlite3 query (``sqlite3.Row``) as ``{column: [values]}``."""
    return {k: [row[k] for row in sqlite_obj] for k in sqlite_obj[0].keys()}


def exclude(it, targets):
    return [x for x in it if x not in targets]


def append_map(it, suf):
    return [x + suf for x in it]


# PML's public functions and classes at this path (the globals are read through the module).
__all__ = [
    "accumulation_dtype",
    "add_to_recordable_attributes",
    "append_map",
    "assert_distance_type",
    "check_shapes",
    "concatenate_indices_tuples",
    "delete_dict_of_models",
    "EmbeddingDataset",
    "exclude",
    "get_eval_dataloader",
    "get_hierarchy_label",
    "get_label_map",
    "get_labels_to_indices",
    "get_train_dataloader",
    "indices_tuple_not_supported",
    "is_list_or_tuple",
    "LabelMapper",
    "labels_not_supported",
    "labels_or_indices_tuple_required",
    "labels_required",
    "latest_version",
    "list_of_recordable_attributes_list_names",
    "load_dict_of_models",
    "load_model",
    "make_label_to_rank_dict",
    "map_labels",
    "modelpath_creator",
    "neg_inf",
    "numpy_to_torch",
    "operate_on_dict_of_models",
    "pos_inf",
    "process_label",
    "ref_not_supported",
    "regex_replace",
    "regex_wrapper",
    "reset_stats",
    "return_input",
    "safe_random_choice",
    "save_dict_of_models",
    "save_model",
    "set_layers_to_eval",
    "set_logger_name",
    "set_ref_emb",
    "set_requires_grad",
    "shift_indices_tuple",
    "small_val",
    "sqlite_obj_to_dict",
    "to_device",
    "to_dtype",
    "to_numpy",
    "torch_all_from_dim_to_end",
    "torch_arange_from_size",
    "torch_standard_scaler",
    "TorchInitWrapper",
    "try_next_on_generator",
    "unslice_by_n",
    "use_cuda_if_available",
]
