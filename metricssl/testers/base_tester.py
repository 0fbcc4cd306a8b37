"""``BaseTester``: embeds the splits of a dataset and scores them (PML's tester interface)."""

from __future__ import annotations

from collections import defaultdict

import torch
import tqdm

from ..core.validation import ArgumentError
from ..eval.accuracy_calculator import AccuracyCalculator
from ..utils import common_functions as c_f
from ..utils import inference


class BaseTester:
    """Computes the embeddings of each split of ``dataset_dict`` and their accuracies.

    The accuracies come from :class:`metricssl.eval.AccuracyCalculator` (the one evaluation
    engine); subclasses decide which embeddings are queries and references
    (:meth:`do_knn_and_accuracies`). Constructor arguments, defaults, the keys of the returned
    accuracies (``"<metric>_level<L>"``, ``"AVERAGE_<metric>"``, ``"epoch"``) and the hook
    ``end_of_testing_hook(tester)`` are PML's.

    Args:
        normalize_embeddings: L2-normalise the embeddings before scoring.
        use_trunk_output: score the trunk's output instead of the embedder's.
        batch_size: rows per batch of the evaluation loader.
        dataloader_num_workers: workers of the evaluation loader.
        pca: project standardised embeddings on this many principal components first.
        data_device: where inputs are moved and embeddings kept (default: CUDA if available).
        dtype: dtype the inputs are cast to (None: unchanged).
        data_and_label_getter: ``f(batch) -> (data, labels)`` (default: the batch itself).
        label_hierarchy_level: the label column(s) to score: an int, a list of ints or "all".
        end_of_testing_hook: called with the tester when a test ends (default: log the
            accuracies).
        dataset_labels, set_min_label_to_zero: map labels to 0..C-1 (PML's ``LabelMapper``).
        accuracy_calculator: default ``AccuracyCalculator()``.
        visualizer: an object with ``fit_transform(numpy embeddings)`` (UMAP, t-SNE, ...).
        visualizer_hook: ``f(visualizer, reduced, labels, split_name, keyname, epoch)``.
    """

    def __init__(
        self,
        normalize_embeddings=True,
        use_trunk_output=False,
        batch_size=32,
        dataloader_num_workers=2,
        pca=None,
        data_device=None,
        dtype=None,
        data_and_label_getter=None,
        label_hierarchy_level=0,
        end_of_testing_hook=None,
        dataset_labels=None,
        set_min_label_to_zero=False,
        accuracy_calculator=None,
        visualizer=None,
        visualizer_hook=None,
    ):
        _check_hierarchy_level(label_hierarchy_level)
        for name, fn in (
            ("data_and_label_getter", data_and_label_getter),
            ("end_of_testing_hook", end_of_testing_hook),
            ("visualizer_hook", visualizer_hook),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if accuracy_calculator is not None and not hasattr(accuracy_calculator, "get_accuracy"):
            raise TypeError(
                "accuracy_calculator must be an AccuracyCalculator, "
                f"got {type(accuracy_calculator).__name__}"
            )
        self.normalize_embeddings = normalize_embeddings
        self.pca = int(pca) if pca else None
        self.use_trunk_output = use_trunk_output
        self.batch_size = int(batch_size)
        self.data_device = c_f.use_cuda_if_available() if data_device is None else data_device
        self.dtype = dtype
        self.dataloader_num_workers = dataloader_num_workers
        self.data_and_label_getter = data_and_label_getter or c_f.return_input
        self.label_hierarchy_level = label_hierarchy_level
        self.end_of_testing_hook = end_of_testing_hook
        self.dataset_labels = dataset_labels
        self.set_min_label_to_zero = set_min_label_to_zero
        self.accuracy_calculator = accuracy_calculator
        self.visualizer = visualizer
        self.original_visualizer_hook = visualizer_hook
        self.initialize_label_mapper()
        self.initialize_accuracy_calculator()
        self.reference_split_names = {}

    # -- setup -------------------------------------------------------------------------------

    def initialize_label_mapper(self):
        self.label_mapper = c_f.LabelMapper(self.set_min_label_to_zero, self.dataset_labels).map

    def initialize_accuracy_calculator(self):
        if self.accuracy_calculator is None:
            self.accuracy_calculator = AccuracyCalculator()

    def visualizer_hook(self, *args, **kwargs):
        if self.original_visualizer_hook is not None:
            self.original_visualizer_hook(*args, **kwargs)

    # -- embeddings --------------------------------------------------------------------------

    def maybe_normalize(self, embeddings):
        if self.pca:
            embeddings = inference.run_pca(c_f.torch_standard_scaler(embeddings), self.pca)
        if self.normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings)
        return embeddings

    def compute_all_embeddings(self, dataloader, trunk_model, embedder_model):
        """``(embeddings, labels)`` of the whole loader; labels as (n, levels) columns."""
        embeddings, labels = None, None
        start = 0
        with torch.no_grad():
            for batch in tqdm.tqdm(dataloader):
                data, label = self.data_and_label_getter(batch)
                label = c_f.process_label(label, "all", self.label_mapper)
                q = self.get_embeddings_for_eval(trunk_model, embedder_model, data)
                if label.dim() == 1:
                    label = label.unsqueeze(1)
                if embeddings is None:
                    # Filled batch by batch: one (n, d) buffer on data_device, as PML.
                    n = len(dataloader.dataset)
                    labels = torch.zeros(
                        n, label.size(1), device=self.data_device, dtype=label.dtype
                    )
                    embeddings = torch.zeros(n, q.size(1), device=self.data_device, dtype=q.dtype)
                end = start + q.size(0)
                embeddings[start:end] = q
                labels[start:end] = label
                start = end
        return embeddings, labels

    def get_all_embeddings(
        self,
        dataset,
        trunk_model,
        embedder_model=None,
        collate_fn=None,
        eval=True,
        return_as_numpy=False,
    ):
        """Embeddings and (n, levels) labels of ``dataset``, normalised as configured.

        Example:
            >>> import torch
            >>> from metricssl.testers import GlobalEmbeddingSpaceTester
            >>> data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.arange(10) % 2)
            >>> tester = GlobalEmbeddingSpaceTester(dataloader_num_workers=0, data_device="cpu")
            >>> emb, labels = tester.get_all_embeddings(data, torch.nn.Linear(4, 3))
            >>> tuple(emb.shape), tuple(labels.shape)
            ((10, 3), (10, 1))
        """
        _check_not_empty(dataset)
        if embedder_model is None:
            embedder_model = torch.nn.Identity()
        if eval:
            trunk_model.eval()
            embedder_model.eval()
        dataloader = c_f.get_eval_dataloader(
            dataset, self.batch_size, self.dataloader_num_workers, collate_fn
        )
        embeddings, labels = self.compute_all_embeddings(dataloader, trunk_model, embedder_model)
        embeddings = self.maybe_normalize(embeddings)
        if return_as_numpy:
            return embeddings.cpu().numpy(), labels.cpu().numpy()
        return embeddings, labels

    def get_embeddings_for_eval(self, trunk_model, embedder_model, input_imgs):
        input_imgs = c_f.to_device(input_imgs, device=self.data_device, dtype=self.dtype)
        trunk_output = trunk_model(input_imgs)
        if self.use_trunk_output:
            return trunk_output
        return embedder_model(trunk_output)

    def maybe_visualize(self, embeddings_and_labels, epoch):
        if not self.visualizer:
            return
        name = type(self.visualizer).__name__
        for split_name, (embeddings, labels) in embeddings_and_labels.items():
            c_f.LOGGER.info(f"Running {name} on the {split_name} set")
            reduced = self.visualizer.fit_transform(embeddings.cpu().numpy())
            c_f.LOGGER.info(f"Finished {name}")
            for level in self.label_levels_to_evaluate(labels):
                keyname = self.accuracies_keyname(name, label_hierarchy_level=level)
                self.visualizer_hook(
                    self.visualizer,
                    reduced,
                    labels[:, level].cpu().numpy(),
                    split_name,
                    keyname,
                    epoch,
                )

    # -- names -------------------------------------------------------------------------------

    def description_suffixes(self, base_name):
        """``base_name`` with the tester's settings appended (PML's record-group names)."""
        if self.pca:
            base_name += f"_pca{self.pca}"
        if self.normalize_embeddings:
            base_name += "_normalized"
        if self.use_trunk_output:
            base_name += "_trunk"
        base_name += "_" + type(self).__name__
        base_name += "_level_" + self.label_hierarchy_level_to_str(self.label_hierarchy_level)
        descriptor = self.accuracy_calculator.description()
        if descriptor != "":
            base_name += "_" + descriptor
        return base_name

    def label_hierarchy_level_to_str(self, label_hierarchy_level):
        if c_f.is_list_or_tuple(label_hierarchy_level):
            return "_".join(str(x) for x in label_hierarchy_level)
        return str(label_hierarchy_level)

    def accuracies_keyname(self, metric, label_hierarchy_level=0, average=False):
        if average:
            return f"AVERAGE_{metric}"
        several = label_hierarchy_level == "all" or c_f.is_list_or_tuple(label_hierarchy_level)
        if several and len(self.label_levels) == 1:
            label_hierarchy_level = self.label_levels[0]
        return f"{metric}_level{self.label_hierarchy_level_to_str(label_hierarchy_level)}"

    # -- splits ------------------------------------------------------------------------------

    def maybe_combine_splits(self, embeddings_and_labels, splits):
        embeddings = torch.cat([embeddings_and_labels[s][0] for s in splits], dim=0)
        labels = torch.cat([embeddings_and_labels[s][1] for s in splits], dim=0)
        return embeddings, labels

    def set_reference_and_query(
        self, embeddings_and_labels, query_split_name, reference_split_names
    ):
        query_embeddings, query_labels = embeddings_and_labels[query_split_name]
        reference_embeddings, reference_labels = self.maybe_combine_splits(
            embeddings_and_labels, reference_split_names
        )
        return query_embeddings, query_labels, reference_embeddings, reference_labels

    def label_levels_to_evaluate(self, query_labels):
        available = query_labels.shape[1]
        level = self.label_hierarchy_level
        if level == "all":
            return range(available)
        levels = list(level) if c_f.is_list_or_tuple(level) else [level]
        if max(levels) >= available:
            raise ArgumentError(
                f"label_hierarchy_level {level!r} is out of range: the labels have "
                f"{available} level(s)"
            )
        return level if c_f.is_list_or_tuple(level) else levels

    def calculate_average_accuracies(self, accuracies, metrics, label_levels):
        for m in metrics:
            total = sum(
                accuracies[self.accuracies_keyname(m, label_hierarchy_level=L)]
                for L in label_levels
            )
            accuracies[self.accuracies_keyname(m, average=True)] = total / len(label_levels)

    def get_splits_to_compute_embeddings(self, dataset_dict, splits_to_eval):
        """``(splits_to_eval, splits to embed)``; a query split that is also a reference is
        moved to the front of its references (the calculator expects the query first)."""
        if splits_to_eval is None:
            splits_to_eval = [(k, [k]) for k in dataset_dict]
        query_splits = [query for query, _ in splits_to_eval]
        if len(query_splits) != len(set(query_splits)):
            raise ArgumentError(
                "Unsupported: Evaluating a query split more than once (splits_to_eval "
                f"{splits_to_eval!r})"
            )
        to_embed = set()
        for i, (query, references) in enumerate(splits_to_eval):
            to_embed.update(references + [query])
            if query in references:
                # PML edits the caller's list in place; kept, as callers may read it back.
                references.remove(query)
                splits_to_eval[i] = (query, [query] + references)
        return splits_to_eval, list(to_embed)

    def get_all_embeddings_for_all_splits(
        self, dataset_dict, trunk_model, embedder_model, splits_to_compute_embeddings, collate_fn
    ):
        embeddings_and_labels = {}
        for split_name in splits_to_compute_embeddings:
            c_f.LOGGER.info(f"Getting embeddings for the {split_name} split")
            embeddings_and_labels[split_name] = self.get_all_embeddings(
                dataset_dict[split_name], trunk_model, embedder_model, collate_fn
            )
        return embeddings_and_labels

    def do_knn_and_accuracies(
        self, accuracies, embeddings_and_labels, query_split_name, reference_split_names
    ):
        """Fill ``accuracies`` for one query split (subclasses)."""
        raise NotImplementedError

    def ref_includes_query(self, query_split_name, reference_split_names):
        return query_split_name in reference_split_names

    def _score(self, query, query_labels, reference, reference_labels, includes_query):
        return self.accuracy_calculator.get_accuracy(
            query, query_labels, reference, reference_labels, includes_query
        )

    # -- entry point -------------------------------------------------------------------------

    def test(
        self,
        dataset_dict,
        epoch,
        trunk_model,
        embedder_model=None,
        splits_to_eval=None,
        collate_fn=None,
    ):
        """Embed the splits and score them: ``{split: {"epoch": epoch, key: accuracy}}``.

        ``splits_to_eval`` is a list of ``(query split, [reference splits])`` (default: each
        split against itself).
        """
        if not isinstance(dataset_dict, dict):
            raise TypeError(
                f"dataset_dict must be a dict of split name -> dataset, got "
                f"{type(dataset_dict).__name__}"
            )
        c_f.LOGGER.info(f"Evaluating epoch {epoch}")
        if embedder_model is None:
            embedder_model = torch.nn.Identity()
        trunk_model.eval()
        embedder_model.eval()
        splits_to_eval, to_embed = self.get_splits_to_compute_embeddings(
            dataset_dict, splits_to_eval
        )
        missing = [s for s in to_embed if s not in dataset_dict]
        if missing:
            raise ArgumentError(f"splits_to_eval names splits not in dataset_dict: {missing}")
        self.embeddings_and_labels = self.get_all_embeddings_for_all_splits(
            dataset_dict, trunk_model, embedder_model, to_embed, collate_fn
        )
        self.maybe_visualize(self.embeddings_and_labels, epoch)
        self.all_accuracies = defaultdict(dict)
        for query_split, reference_splits in splits_to_eval:
            c_f.LOGGER.info(
                f"Computing accuracy for the {query_split} split w.r.t {reference_splits}"
            )
            self.all_accuracies[query_split]["epoch"] = epoch
            self.reference_split_names[query_split] = reference_splits
            self.do_knn_and_accuracies(
                self.all_accuracies[query_split],
                self.embeddings_and_labels,
                query_split,
                reference_splits,
            )
        if self.end_of_testing_hook:
            self.end_of_testing_hook(self)
        else:
            c_f.LOGGER.info(self.all_accuracies)
        del self.embeddings_and_labels
        return self.all_accuracies


def _check_not_empty(dataset) -> None:
    # PML fails on an empty split with an unbound-variable error deep in the embedding loop.
    if len(dataset) == 0:
        raise ValueError("dataset is empty: a split to embed needs at least one item")


def _check_hierarchy_level(level) -> None:
    ok = level == "all" or (isinstance(level, int) and not isinstance(level, bool))
    if c_f.is_list_or_tuple(level):
        ok = len(level) > 0 and all(isinstance(x, int) and not isinstance(x, bool) for x in level)
    if not ok:
        raise TypeError(
            f"label_hierarchy_level must be an int, a list of ints or 'all', got {level!r}"
        )
