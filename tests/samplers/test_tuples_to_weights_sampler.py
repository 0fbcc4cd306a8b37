"""TuplesToWeightsSampler: PML's weights and indices with the same seeds, invariants, errors."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.miners import MultiSimilarityMiner as PMLMultiSimilarityMiner
from pytorch_metric_learning.miners import TripletMarginMiner as PMLTripletMarginMiner
from pytorch_metric_learning.samplers import TuplesToWeightsSampler as PMLSampler

from metricssl.miners.multi_similarity_miner import MultiSimilarityMiner
from metricssl.miners.triplet_margin_miner import TripletMarginMiner
from metricssl.samplers.tuples_to_weights_sampler import TuplesToWeightsSampler


def dataset(n=45, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(n, 6, generator=g), torch.arange(n) % 5)


def model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))


MINERS = {
    "ms": (lambda: MultiSimilarityMiner(0.2), lambda: PMLMultiSimilarityMiner(0.2)),
    "triplet": (lambda: TripletMarginMiner(0.1), lambda: PMLTripletMarginMiner(0.1)),
}


def run_epoch(sampler, seed):
    np.random.seed(seed)
    torch.manual_seed(seed)
    return list(sampler)


@pytest.mark.parametrize("miner", list(MINERS))
@pytest.mark.parametrize("subset_size", [None, 20, 60])
@pytest.mark.parametrize("normalize", [True, False])
def test_identical_to_pml_with_the_same_seeds(miner, subset_size, normalize):
    data, net = dataset(), model()
    ours_miner, pml_miner = MINERS[miner]
    kwargs = dict(
        subset_size=subset_size,
        batch_size=16,
        dataloader_num_workers=0,
        data_device="cpu",
        normalize_embeddings=normalize,
    )
    ours = TuplesToWeightsSampler(net, ours_miner(), data, **kwargs)
    theirs = PMLSampler(net, pml_miner(), data, **kwargs)
    for seed in [0, 1]:
        assert run_epoch(ours, seed) == run_epoch(theirs, seed)
        torch.testing.assert_close(ours.weights, theirs.weights)
    assert len(ours) == len(theirs)


def test_pml_tester_arguments_are_accepted_with_pml_weights():
    data, net = dataset(n=60), model()
    kwargs = dict(
        subset_size=40,
        batch_size=16,
        dataloader_num_workers=0,
        data_device="cpu",
        pca=3,  # changes the embeddings: standardised, projected, then normalised
        use_trunk_output=True,  # the evaluation-only ones change nothing here
        label_hierarchy_level=0,
        end_of_testing_hook=print,
    )
    ours = TuplesToWeightsSampler(net, TripletMarginMiner(0.1), data, **kwargs)
    theirs = PMLSampler(net, PMLTripletMarginMiner(0.1), data, **kwargs)
    assert run_epoch(ours, 3) == run_epoch(theirs, 3)
    torch.testing.assert_close(ours.weights, theirs.weights)
    no_pca = TuplesToWeightsSampler(net, TripletMarginMiner(0.1), data, **{**kwargs, "pca": 0})
    run_epoch(no_pca, 3)
    assert not torch.equal(no_pca.weights, ours.weights)


def test_weights_follow_the_mined_tuples():
    data, net = dataset(), model()
    miner = TripletMarginMiner(0.1)
    sampler = TuplesToWeightsSampler(net, miner, data, subset_size=25, dataloader_num_workers=0)
    np.random.seed(3)
    indices = list(sampler)
    w = sampler.weights
    assert len(indices) == len(sampler) == 25
    assert all(isinstance(i, int) and 0 <= i < len(data) for i in indices)
    assert w.shape == (len(data),) and w.max() == 1 and w.min() == 0
    assert (w > 0).sum() <= 25  # only the subset can be drawn
    assert all(w[i] > 0 for i in indices)
    # Recompute: the subset drawn first, then weights = tuple counts / max count.
    np.random.seed(3)
    subset = np.random.choice(len(data), size=25, replace=False)
    x = torch.nn.functional.normalize(net(data.tensors[0][subset]))
    counts = torch.bincount(torch.cat(miner(x, data.tensors[1][subset])), minlength=25)
    expected = torch.zeros(len(data))
    expected[subset] = counts.float() / counts.max()
    torch.testing.assert_close(w, expected)


def test_nothing_mined_gives_uniform_weights_over_the_subset():
    def mine_nothing(embeddings, labels):
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty, empty

    data, net = dataset(), model()
    common = dict(subset_size=30, dataloader_num_workers=0, data_device="cpu")
    ours = TuplesToWeightsSampler(net, mine_nothing, data, **common)
    theirs = PMLSampler(net, mine_nothing, data, **common)
    assert run_epoch(ours, 2) == run_epoch(theirs, 2)
    assert sorted(ours.weights.unique().tolist()) == [0.0, 1.0]
    assert int(ours.weights.sum()) == 30


def test_model_mode_is_restored_and_no_grad_is_kept():
    data, net = dataset(), model()
    net.train()
    sampler = TuplesToWeightsSampler(net, MultiSimilarityMiner(), data, dataloader_num_workers=0)
    list(sampler)
    assert net.training
    net.eval()
    list(sampler)
    assert not net.training
    assert all(p.grad is None for p in net.parameters())


def test_custom_getter_dtype_and_label_column():
    # Items are dicts; labels come as (B, 1) columns; the model runs in float64.
    x, y = dataset().tensors
    items = [{"x": x[i], "y": y[i : i + 1]} for i in range(len(y))]
    net = model().double()
    sampler = TuplesToWeightsSampler(
        net,
        MultiSimilarityMiner(),
        items,
        batch_size=7,
        dataloader_num_workers=0,
        dtype=torch.float64,
        data_and_label_getter=lambda batch: (batch["x"], batch["y"]),
    )
    embeddings, labels = sampler.compute_embeddings(items)
    assert embeddings.dtype == torch.float64 and labels.tolist() == y.tolist()
    assert len(list(sampler)) == len(items)


def test_several_label_levels_are_refused():
    x = torch.randn(10, 6)
    data = torch.utils.data.TensorDataset(x, torch.zeros(10, 2, dtype=torch.long))
    sampler = TuplesToWeightsSampler(
        model(), MultiSimilarityMiner(), data, dataloader_num_workers=0
    )
    with pytest.raises(ValueError, match="one label per item"):
        list(sampler)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(model="net"), TypeError, "model"),
        (dict(miner=None), TypeError, "miner"),
        (dict(dataset=5), TypeError, "dataset"),
        (dict(dataset=[]), ValueError, "dataset"),
        (dict(subset_size=0), ValueError, "subset_size"),
        (dict(subset_size=2.5), TypeError, "subset_size"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(dataloader_num_workers=-1), ValueError, "dataloader_num_workers"),
        (dict(dtype="float32"), TypeError, "dtype"),
        (dict(data_and_label_getter=3), TypeError, "data_and_label_getter"),
        (dict(pca=-1), ValueError, "pca"),
        (dict(pca=2.5), TypeError, "pca"),
        (dict(normalise_embeddings=True), TypeError, "normalise_embeddings"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = dict(model=model(), miner=MultiSimilarityMiner(), dataset=dataset())
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        TuplesToWeightsSampler(**args)
